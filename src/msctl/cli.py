"""msctl's command line: parse, call the engine, render, set the exit code. Nothing else."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from . import report
from .config import ConfigError, LabConfig, load_config
from .engine import runner
from .engine.graph import GraphError
from .session import Session, SessionError
from .state import StateError
from .steps import all_steps

EXIT_FAILED = 1
EXIT_USAGE = 2
STEP_NAMES = ", ".join(all_steps())


class UserError(click.ClickException):
    """A bad config, bad usage or an unusable environment: one `Error:` line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        report.error(report.make_console(stderr=True), self.message)


class RunFailed(UserError):
    exit_code = EXIT_FAILED


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            raise UserError(str(exc)) from None
        except (GraphError, SessionError) as exc:
            raise UserError(str(exc)) from None
        except StateError as exc:
            raise RunFailed(str(exc)) from None

    return wrapper


def config_options(fn):
    """The options every lab command shares."""
    decorators = [
        click.option(
            "-c",
            "--config",
            "config_path",
            type=click.Path(path_type=Path),
            default=Path("config/lab.yaml"),
            show_default=True,
            help="Lab config file.",
        ),
        click.option(
            "--target",
            type=click.Choice(["local", "aws"]),
            default="local",
            show_default=True,
            help="local: the moto emulator msctl runs on loopback; aws: real AWS "
            "(AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL honoured).",
        ),
        click.option(
            "--state-dir",
            type=click.Path(path_type=Path),
            default=Path(".msctl"),
            show_default=True,
            help="Where state, locks and the emulator live.",
        ),
        click.option(
            "--set",
            "overrides",
            multiple=True,
            metavar="KEY=VALUE",
            help="Override a config value, e.g. --set rds.instance_class=db.t3.small "
            "(repeatable; validated like the file).",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def only_option(fn):
    return click.option(
        "--only",
        metavar="STEP[,STEP]",
        help=f"Only these steps, plus what they require (for down: plus what depends on "
        f"them). Steps: {STEP_NAMES}.",
    )(fn)


def output_option(fn):
    return click.option(
        "--output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="Output format.",
    )(fn)


def parallel_option(fn):
    return click.option(
        "--parallel",
        type=click.IntRange(1, 32),
        default=8,
        show_default=True,
        help="How many independent steps run at once (1: serial).",
    )(fn)


def yes_option(fn):
    return click.option(
        "--yes", "-y", is_flag=True, help="Don't ask for confirmation (for scripts)."
    )(fn)


def _only(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_steps()]
    if unknown:
        raise UserError(f"--only: unknown step {unknown[0]!r} (steps: {STEP_NAMES})")
    return names


def _load(config_path: Path, overrides: tuple[str, ...]) -> LabConfig:
    return load_config(config_path, list(overrides))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Show more detail (tracebacks of failures).")
@click.version_option(package_name="msctl")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """Build, prove and tear down the Day 21 AWS microservices lab.

    \b
    Quick start (no AWS account needed, runs on a local emulator):
      msctl up          build the lab
      msctl status      show what exists
      msctl down        remove all of it
    """
    ctx.obj = {"verbose": verbose}


# ---------------------------------------------------------------- up / plan / down


@main.command()
@config_options
@only_option
@parallel_option
@yes_option
@output_option
@click.pass_context
@handle_errors
def up(ctx, config_path, target, state_dir, overrides, only, parallel, yes, output):
    """Build the lab (or finish an interrupted build). Safe to re-run.

    \b
    Examples:
      msctl up
      msctl up --only sg
      msctl up --target aws --yes
    """
    config = _load(config_path, overrides)
    selected_only = _only(only)
    console = report.make_console()
    notices = report.make_console(stderr=True)
    with Session.open(config, target, state_dir, command="up", console=notices) as session:
        if not session.target.is_local:
            _confirm_billable(notices, config, yes)
        steps = all_steps()
        selected = runner.select(steps, selected_only, "apply")
        session.prepare_clients(steps, selected)
        with report.Progress(console, selected, enabled=output == "table") as progress:
            session.ctx.listener = progress
            result = runner.run(session.ctx, steps, "apply", selected=selected, parallel=parallel)
        next_step = "See it with `msctl status`; remove it with `msctl down`."
        if result.ok and session.target.is_local and selected_only is None:
            url = _serve_locally(state_dir, config_path, overrides)
            next_step = f"The lab answers at {url}/ ; prove it with `msctl test-api`."
        _finish(console, result, output, ctx.obj["verbose"], next_step)
        if not result.ok:
            ctx.exit(EXIT_FAILED)


@main.command()
@config_options
@only_option
@output_option
@click.option("--destroy", is_flag=True, help="Preview what `down` would remove.")
@click.pass_context
@handle_errors
def plan(ctx, config_path, target, state_dir, overrides, only, output, destroy):
    """Show what `up` (or, with --destroy, `down`) would change, without changing anything.

    \b
    Examples:
      msctl plan
      msctl plan --only rds --output json
      msctl plan --destroy
    """
    config = _load(config_path, overrides)
    action = "plan-destroy" if destroy else "plan"
    selected_only = _only(only)
    console = report.make_console()
    with Session.open(
        config,
        target,
        state_dir,
        command="plan",
        console=report.make_console(stderr=True),
        lock=False,
        record=False,
    ) as session:
        steps = all_steps()
        selected = runner.select(steps, selected_only, action)
        session.prepare_clients(steps, selected)
        result = runner.run(session.ctx, steps, action, selected=selected, parallel=8)
    if output == "json":
        report.print_json(console, report.result_to_json(result))
    else:
        report.print_plan(console, result)
        if not result.ok:
            report.print_summary(console, result, verbose=ctx.obj["verbose"])
    if not result.ok:
        ctx.exit(EXIT_FAILED)


@main.command()
@config_options
@only_option
@parallel_option
@yes_option
@output_option
@click.pass_context
@handle_errors
def down(ctx, config_path, target, state_dir, overrides, only, parallel, yes, output):
    """Remove the lab, in reverse dependency order. Safe to run twice.

    \b
    Examples:
      msctl down
      msctl down --only ecs      (ecs and everything that depends on it)
    """
    config = _load(config_path, overrides)
    selected_only = _only(only)
    console = report.make_console()
    if target == "local":
        from .local import dataplane, emulator

        dataplane.stop(state_dir)
        if emulator.status(state_dir) is None:
            removed = Session.forget(config, state_dir)
            dataplane.remove_data(state_dir)
            console.print(
                "The local emulator is not running, so nothing of the lab exists on the "
                "local target" + ("; removed the stale state file." if removed else ".")
            )
            return
    if target == "aws" and not yes:
        _confirm(console, f"Delete every resource of lab {config.lab!r} on AWS?")
    notices = report.make_console(stderr=True)
    with Session.open(config, target, state_dir, command="down", console=notices) as session:
        steps = all_steps()
        selected = runner.select(steps, selected_only, "destroy")
        session.prepare_clients(steps, selected)
        swept = None
        with report.Progress(console, selected, enabled=output == "table") as progress:
            session.ctx.listener = progress
            result = runner.run(session.ctx, steps, "destroy", selected=selected, parallel=parallel)
            if selected_only is None:
                # Whatever is still tagged for the lab: orphans of interrupted runs, and what
                # the walk couldn't remove (duplicates, a blocked dependency). The sweep orders
                # its deletions itself, so it runs after a failed walk too.
                from .sweep import sweep

                swept = sweep(session.ctx)
        clean = swept.ok if swept is not None else result.ok
        if clean and selected_only is None:
            session.state.delete()
            if session.target.is_local:
                from .local import dataplane

                dataplane.remove_data(state_dir)
        if output == "json":
            doc = report.result_to_json(result)
            doc["sweep"] = report.sweep_to_json(swept) if swept is not None else None
            doc["ok"] = clean
            report.print_json(console, doc)
        else:
            _finish(console, result, output, ctx.obj["verbose"])
            if swept is not None:
                report.print_sweep(console, swept)
                if clean and not result.ok:
                    console.print(
                        "The sweep removed what the walk could not: nothing of the lab remains."
                    )
        if not clean:
            ctx.exit(EXIT_FAILED)


# ---------------------------------------------------------------- status


@main.command()
@config_options
@output_option
@click.option(
    "--rebuild-state",
    is_flag=True,
    help="Move the state file aside (to <lab>.json.bak-<UTC time>, never deleted) and rebuild "
    "it from the lab's tags, e.g. after it was corrupted.",
)
@click.pass_context
@handle_errors
def status(ctx, config_path, target, state_dir, overrides, output, rebuild_state):
    """Show the lab: each step's resources, checked against AWS, and its endpoints.

    Exits 1 when something is missing or differs from the config.

    \b
    Examples:
      msctl status
      msctl status --output json
      msctl status --rebuild-state      (the state file is corrupt or lost)
    """
    config = _load(config_path, overrides)
    console = report.make_console()
    rebuilt = None
    if rebuild_state:
        notices = report.make_console(stderr=True)
        rebuilt = Session.rebuild_state(config, target, state_dir, notices)
        if output != "json":
            report.print_rebuilt(console, rebuilt)
    doc = Session.status(config, target, state_dir)
    if rebuilt is not None:
        doc["rebuilt"] = rebuilt
    if output == "json":
        report.print_json(console, doc)
    else:
        report.print_status(console, doc)
    if not doc["ok"]:
        ctx.exit(EXIT_FAILED)


# ---------------------------------------------------------------- test-api


@main.command("test-api")
@config_options
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
def test_api(
    ctx,
    config_path,
    target,
    state_dir,
    overrides,
    output,
    url,
    load,
    requests_,
    concurrency,
    load_path,
):
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

    from . import apitest

    if not load_path.startswith("/"):
        raise UserError(f"--path must start with '/', got {load_path!r}")
    config = _load(config_path, overrides)
    base = (url or _public_url(config, target, state_dir)).rstrip("/")
    console = report.make_console()
    if load:
        with report.LoadProgress(console, requests_, enabled=output == "table") as progress:
            result = asyncio.run(
                apitest.run_load(
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
    checks = asyncio.run(apitest.run_scenario(base))
    if output == "json":
        report.print_json(
            console,
            {"url": base, "ok": all(c.ok for c in checks), "checks": [vars(c) for c in checks]},
        )
    else:
        report.print_checks(console, base, checks)
    if not all(c.ok for c in checks):
        ctx.exit(EXIT_FAILED)


def _public_url(config: LabConfig, target: str, state_dir: Path) -> str:
    if target == "local":
        from .local import dataplane

        served = dataplane.status(state_dir)
        if served is None:
            raise RunFailed(
                "the lab is not being served locally: run `msctl up` first (or pass --url)"
            )
        return served.url
    from .state import StateStore

    state = StateStore(state_dir, config.lab)
    domain = state.outputs("cloudfront").get("domain_name")
    if not domain:
        raise RunFailed(
            "no CloudFront distribution recorded for this lab: run "
            "`msctl up --target aws` first (or pass --url)"
        )
    return f"https://{domain}"


# ---------------------------------------------------------------- local emulator


@main.group()
def local():
    """Manage the local AWS emulator (moto, server mode, on 127.0.0.1)."""


def _state_dir_option(fn):
    return click.option(
        "--state-dir",
        type=click.Path(path_type=Path),
        default=Path(".msctl"),
        show_default=True,
        help="Where the emulator's pid, port and log live.",
    )(fn)


@local.command("start")
@_state_dir_option
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: a free one).")
def local_start(state_dir, port):
    """Start the emulator in the background (it outlives this command).

    \b
    Example:
      msctl local start
    """
    from .local import emulator

    try:
        info, started = emulator.start(state_dir, port=port)
    except emulator.EmulatorError as exc:
        raise RunFailed(str(exc)) from None
    verb = "started" if started else "already running"
    click.echo(f"emulator {verb}: {info.endpoint} (pid {info.pid}, log {info.log_path})")


@local.command("stop")
@_state_dir_option
def local_stop(state_dir):
    """Stop the emulator (everything in it is lost) and the local data plane.

    \b
    Example:
      msctl local stop
    """
    from .local import dataplane, emulator

    if dataplane.stop(state_dir):
        click.echo("local data plane stopped")
    stopped = emulator.stop(state_dir)
    click.echo("emulator stopped" if stopped else "emulator was not running")


@local.command("status")
@_state_dir_option
@output_option
def local_status(state_dir, output):
    """Say whether the emulator runs, and where. Exits 1 when it doesn't.

    \b
    Example:
      msctl local status --output json
    """
    from dataclasses import asdict

    from .local import emulator

    info = emulator.status(state_dir)
    if output == "json":
        report.print_json(
            report.make_console(), {"running": info is not None, **(asdict(info) if info else {})}
        )
    elif info:
        click.echo(f"emulator running: {info.endpoint} (pid {info.pid}, since {info.started_at})")
    else:
        click.echo("emulator not running (start it with `msctl local start` or `msctl up`)")
    if info is None:
        sys.exit(EXIT_FAILED)


# ---------------------------------------------------------------- helpers


def _finish(console, result, output: str, verbose: bool, next_step: str = "") -> None:
    if output == "json":
        report.print_json(console, report.result_to_json(result))
    else:
        report.print_summary(console, result, verbose=verbose, next_step=next_step)


def _serve_locally(state_dir: Path, config_path: Path, overrides) -> str:
    from .local import dataplane

    try:
        return dataplane.start(state_dir, config_path, list(overrides)).url
    except dataplane.DataPlaneError as exc:
        raise RunFailed(f"{exc} (the lab itself is built; `msctl up` tries again)") from None


def _confirm_billable(console, config: LabConfig, yes: bool) -> None:
    from .costs import billable

    report.print_billable(console, billable(config))
    if not yes:
        _confirm(console, "Create these billable resources?")


def _confirm(console, question: str) -> None:
    if not sys.stdin.isatty():
        raise UserError(f"{question} Not asking on a non-interactive input: pass --yes to confirm.")
    if not click.confirm(question, default=False):
        raise UserError("cancelled; nothing was changed")
