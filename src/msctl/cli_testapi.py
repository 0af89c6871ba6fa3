"""`msctl test-api`: the seed's checks (or a load test) through the lab's public URL."""

from __future__ import annotations

import click

from . import report
from .cli_common import (
    EXIT_FAILED,
    UserError,
    _lab,
    global_options,
    handle_errors,
    output_option,
    set_option,
)


@click.command("test-api")
@global_options
@set_option
@output_option
@click.option("--url", help="Base URL to test (default: the lab's public URL on the target).")
@click.option("--load", is_flag=True, help="Run a load test instead of the checks.")
@click.option(
    "--requests",
    "requests_",
    type=click.IntRange(1, 1_000_000),
    default=1000,
    show_default=True,
    help="Load mode: total requests.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="Load mode: requests in flight at once.",
)
@click.option(
    "--path",
    "load_path",
    default="/api/products",
    show_default=True,
    help="Load mode: the path to GET.",
)
@click.pass_context
@handle_errors
def test_api(ctx, overrides, output, url, load, requests_, concurrency, load_path):
    """Prove the lab works end to end through its public URL.

    Runs the seed's checks and more (site, register, login, sessions, users, products,
    orders, notifications, CORS); exits 1 if any check fails. With --load, runs the seed's
    `ab -n 1000 -c 10` load test and reports requests/s and latency percentiles.

    \b
    Examples:
      msctl test-api
      msctl test-api --load --requests 1000 --concurrency 10
      msctl test-api --url https://d111111abcdef8.cloudfront.net --output json
    """
    import asyncio

    from . import apitest, loadtest

    if not load_path.startswith("/"):
        raise UserError(f"--path must start with '/', got {load_path!r}")
    lab = _lab(overrides)
    base = (url or lab.public_url()).rstrip("/")
    console = report.make_console()
    if load:
        with report.LoadProgress(console, requests_, enabled=output == "table") as progress:
            result = asyncio.run(
                loadtest.run_load(
                    base + load_path, requests_, concurrency, on_progress=progress.advance
                )
            )
        summary = result.summary()
        if output == "json":
            report.print_json(console, summary)
        else:
            report.print_load(console, summary)
        if summary["failed"]:
            ctx.exit(EXIT_FAILED)
        return
    checks = asyncio.run(apitest.run_scenario(base, admin=lab.admin_login()))
    if output == "json":
        report.print_json(
            console,
            {"url": base, "ok": all(c.ok for c in checks), "checks": [vars(c) for c in checks]},
        )
    else:
        report.print_checks(console, base, checks)
    if not all(c.ok for c in checks):
        ctx.exit(EXIT_FAILED)
