"""msctl's command line: parse, call the library (lab.Lab), render, set the exit code."""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from . import report
from .config import ConfigError, LabConfig, find_config, load_config, project_root
from .engine.graph import GraphError
from .lab import Lab, SessionError
from .local.dataplane import DataPlaneError
from .state import StateError
from .steps import all_steps

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3  # status: nothing of the lab exists
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
STEP_NAMES = ", ".join(all_steps())


class UserError(click.ClickException):
    """A bad config, bad usage or an unusable environment: one `Error:` line, exit 2."""

    exit_code = EXIT_USAGE

    def show(self, file=None) -> None:
        report.error(report.make_console(stderr=True), self.message)


class RunFailed(UserError):
    exit_code = EXIT_FAILED


class Interrupted(UserError):
    exit_code = EXIT_INTERRUPTED


def handle_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, GraphError, SessionError) as exc:
            raise UserError(str(exc)) from None
        except StateError as exc:
            raise RunFailed(str(exc)) from None
        except KeyboardInterrupt:
            command = click.get_current_context().info_name
            raise Interrupted(f"interrupted; run `msctl {command}` again to finish") from None

    return wrapper


# ---------------------------------------------------------------- options


@dataclass
class Globals:
    """The options accepted before the subcommand or after it (the latter wins)."""

    verbose: bool = False
    config: Path | None = None
    target: str | None = None
    state_dir: Path | None = None


def _store(name: str):
    def callback(ctx: click.Context, _param, value):
        if value not in (None, False):
            setattr(ctx.find_root().ensure_object(Globals), name, value)

    return callback


def global_options(fn):
    """-v, -c, --target, --state-dir."""
    decorators = [
        click.option(
            "-v",
            "--verbose",
            is_flag=True,
            expose_value=False,
            callback=_store("verbose"),
            help="More detail: every check, emulated endpoints, tracebacks of failures.",
        ),
        click.option(
            "-c",
            "--config",
            type=click.Path(path_type=Path),
            expose_value=False,
            callback=_store("config"),
            help="Lab config file (default: config/lab.yaml or msctl.yaml in this directory "
            "or a parent, or $MSCTL_CONFIG).",
        ),
        click.option(
            "--target",
            type=click.Choice(["local", "aws"]),
            expose_value=False,
            callback=_store("target"),
            help="local (default): the moto emulator msctl runs on loopback; aws: real AWS "
            "(AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL honoured).",
        ),
        click.option(
            "--state-dir",
            type=click.Path(path_type=Path),
            expose_value=False,
            callback=_store("state_dir"),
            help="Where state, locks and the emulator live (default: .msctl beside the config).",
        ),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value, e.g. --set rds.instance_class=db.t3.small "
    "(repeatable; validated like the file).",
)
only_option = click.option(
    "--only",
    metavar="STEP[,STEP]",
    help=f"Only these steps, plus what they require (for down: plus what depends on them). "
    f"Steps: {STEP_NAMES}.",
)
output_option = click.option(
    "--output", type=click.Choice(["table", "json"]), default="table", help="Output format."
)
parallel_option = click.option(
    "--parallel",
    type=click.IntRange(1, 32),
    default=8,
    show_default=True,
    help="How many independent steps run at once (1: serial).",
)
yes_option = click.option("--yes", "-y", is_flag=True, help="Don't ask (for scripts).")


def _only(value: str | None) -> list[str] | None:
    if not value:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in all_steps()]
    if unknown:
        raise UserError(f"--only: unknown step {unknown[0]!r} (steps: {STEP_NAMES})")
    return names


def _globals() -> Globals:
    return click.get_current_context().find_root().ensure_object(Globals)


def _config_path() -> Path:
    chosen = _globals().config
    if chosen is not None:
        return chosen
    found = find_config(Path.cwd(), os.environ.get("MSCTL_CONFIG"))
    if found is None:
        raise UserError(
            f"no lab config found: looked for config/lab.yaml and msctl.yaml in {Path.cwd()} "
            "and its parents; pass -c PATH or set MSCTL_CONFIG"
        )
    return found


def _state_dir(config_path: Path | None) -> Path:
    chosen = _globals().state_dir
    if chosen is not None:
        return chosen
    return (project_root(config_path) if config_path else Path.cwd()) / ".msctl"


def _lab(overrides=()) -> Lab:
    config_path = _config_path()
    notices = report.make_console(stderr=True)
    return Lab(
        load_config(config_path, list(overrides)),
        _globals().target or "local",
        _state_dir(config_path),
        on_notice=lambda message: report.notice(notices, message),
        config_path=config_path,
        overrides=overrides,
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(package_name="msctl")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Build, prove and tear down the Day 21 AWS microservices lab.

    \b
    Quick start (no AWS account needed, runs on a local emulator):
      msctl up          build the lab
      msctl status      show what exists
      msctl down        remove all of it

    The options above may also come after the command (msctl status -v).
    """
    ctx.ensure_object(Globals)


# ---------------------------------------------------------------- up / plan / down


@main.command()
@global_options
@set_option
@only_option
@parallel_option
@yes_option
@output_option
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Local target: the port the lab is served on (default: the one it had, else a free one).",
)
@click.pass_context
@handle_errors
def up(ctx, overrides, only, parallel, yes, output, port):
    """Build the lab (or finish an interrupted build). Safe to re-run.

    On the local target a full `up` also serves the lab, on the same URL every time.

    \b
    Examples:
      msctl up
      msctl up --only sg
      msctl up --port 8080
      msctl up --target aws --yes
    """
    selected = _only(only)
    console = report.make_console()
    lab = _lab(overrides)
    if port is not None and not lab.local:
        raise UserError("--port is for the local target only")
    try:
        with report.Progress(console, _shown(selected, "apply"), enabled=output == "table") as bar:
            lab.on_event = bar
            result, url = lab.up(
                selected, parallel, confirm=lambda c: _confirm_billable(c, yes), port=port
            )
    except DataPlaneError as exc:
        raise RunFailed(f"{exc} (the lab itself is built; `msctl up` tries again)") from None
    next_step = "See it with `msctl status`; remove it with `msctl down`."
    if url:
        next_step = f"The lab answers at {url}/ ; prove it with `msctl test-api`."
    _finish(console, result, output, next_step)
    if not result.ok:
        ctx.exit(EXIT_FAILED)


@main.command()
@global_options
@set_option
@only_option
@output_option
@click.option("--destroy", is_flag=True, help="Preview what `down` would remove.")
@click.pass_context
@handle_errors
def plan(ctx, overrides, only, output, destroy):
    """Show what `up` (or, with --destroy, `down`) would change, without changing anything.

    \b
    Examples:
      msctl plan
      msctl plan --only rds --output json
      msctl plan --destroy
    """
    lab = _lab(overrides)
    notes: list[str] = []
    lab.on_event = lambda e: notes.append(f"{e.step}: {e.message}") if e.kind == "note" else None
    result = lab.plan(_only(only), destroy=destroy)
    console = report.make_console()
    if output == "json":
        report.print_json(console, {**report.result_to_json(result), "notes": notes})
    else:
        report.print_plan(console, result, notes)
        if not result.ok:
            report.print_summary(console, result, verbose=_globals().verbose)
    if not result.ok:
        ctx.exit(EXIT_FAILED)


@main.command()
@global_options
@set_option
@only_option
@parallel_option
@yes_option
@output_option
@click.pass_context
@handle_errors
def down(ctx, overrides, only, parallel, yes, output):
    """Remove the lab, in reverse dependency order, and check that nothing of it remains.

    Asks first, naming the data that goes with it (tables and their items, the database);
    --yes skips the question. Safe to run twice.

    \b
    Examples:
      msctl down
      msctl down --yes
      msctl down --only ecs      (ecs and everything that depends on it)
    """
    selected = _only(only)
    console = report.make_console()
    lab = _lab(overrides)
    if not yes:
        lost = lab.data_at_risk(selected)
        if lost or not lab.local:
            report.print_at_risk(report.make_console(stderr=True), lab.config.lab, lost)
            where = "on AWS" if not lab.local else "on the local emulator"
            _confirm(f"Delete lab {lab.config.lab!r} {where}?")
    with report.Progress(console, _shown(selected, "destroy"), enabled=output == "table") as bar:
        lab.on_event = bar
        done = lab.down(selected, parallel)
    if output == "json":
        doc = report.result_to_json(done.walk) if done.walk else {"action": "destroy", "steps": {}}
        doc["leftovers"] = report.leftovers_to_json(done.leftovers) if done.leftovers else None
        doc["ok"] = done.ok
        doc["note"] = done.note or None
        report.print_json(console, doc)
    elif done.walk is None:
        report.notice(console, done.note + ".")
    else:
        _finish(console, done.walk, output)
        report.print_leftovers(console, done.leftovers)
    if not done.ok:
        ctx.exit(EXIT_FAILED)


# ---------------------------------------------------------------- status


@main.command()
@global_options
@set_option
@output_option
@click.option(
    "--rebuild-state",
    is_flag=True,
    help="Move the state file aside (to <lab>.json.bak-<UTC time>, never deleted) and rebuild "
    "it from the lab's tags, e.g. after it was corrupted.",
)
@click.pass_context
@handle_errors
def status(ctx, overrides, output, rebuild_state):
    """Show the lab: each step checked against the target, and where it answers.

    \b
    Exit codes:
      0  every enabled step is built and as configured
      1  something is missing or differs from the config
      3  nothing of the lab exists

    \b
    Examples:
      msctl status
      msctl status -v                  (every check, emulated AWS endpoints)
      msctl status --output json
      msctl status --rebuild-state     (the state file is corrupt or lost)
    """
    console = report.make_console()
    lab = _lab(overrides)
    rebuilt = None
    if rebuild_state:
        rebuilt = lab.rebuild_state()
        if output != "json":
            report.print_rebuilt(console, rebuilt)
    doc = lab.status()
    if rebuilt is not None:
        doc["rebuilt"] = rebuilt
    if output == "json":
        report.print_json(console, doc)
    else:
        report.print_status(console, doc, verbose=_globals().verbose)
    if not doc["exists"]:
        ctx.exit(EXIT_NOTHING)
    if not doc["ok"]:
        ctx.exit(EXIT_FAILED)


# ---------------------------------------------------------------- test-api


@main.command("test-api")
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

    from . import apitest

    if not load_path.startswith("/"):
        raise UserError(f"--path must start with '/', got {load_path!r}")
    lab = _lab(overrides)
    base = (url or lab.public_url()).rstrip("/")
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


# ---------------------------------------------------------------- local emulator


@main.group()
@global_options
def local():
    """Manage the local AWS emulator (moto, server mode, on 127.0.0.1)."""


def _local_state_dir() -> Path:
    """The state dir of the lab the config names, else .msctl here (no config needed)."""
    if _globals().state_dir is not None:
        return _globals().state_dir
    chosen = _globals().config or find_config(Path.cwd(), os.environ.get("MSCTL_CONFIG"))
    return _state_dir(chosen)


@local.command("start")
@global_options
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default: a free one).")
@handle_errors
def local_start(port):
    """Start the emulator in the background (it outlives this command).

    \b
    Example:
      msctl local start
    """
    from .local import emulator

    try:
        info, started = emulator.start(_local_state_dir(), port=port)
    except emulator.EmulatorError as exc:
        raise RunFailed(str(exc)) from None
    verb = "started" if started else "already running"
    click.echo(f"emulator {verb}: {info.endpoint} (pid {info.pid}, log {info.log_path})")


@local.command("stop")
@global_options
@handle_errors
def local_stop():
    """Stop the emulator (everything in it is lost) and the local data plane.

    \b
    Example:
      msctl local stop
    """
    from .local import dataplane, emulator

    state_dir = _local_state_dir()
    if dataplane.stop(state_dir):
        click.echo("local data plane stopped")
    stopped = emulator.stop(state_dir)
    click.echo("emulator stopped" if stopped else "emulator was not running")


@local.command("status")
@global_options
@output_option
@handle_errors
def local_status(output):
    """Say whether the emulator runs, and where. Exits 1 when it doesn't.

    \b
    Example:
      msctl local status --output json
    """
    from dataclasses import asdict

    from .local import emulator

    info = emulator.status(_local_state_dir())
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


def _finish(console, result, output: str, next_step: str = "") -> None:
    if output == "json":
        report.print_json(console, report.result_to_json(result))
    else:
        report.print_summary(console, result, verbose=_globals().verbose, next_step=next_step)


def _shown(only: list[str] | None, action: str) -> list[str]:
    """The steps a progress display shows: what --only selects (and what it pulls in)."""
    from .engine import runner

    return runner.select(all_steps(), only, action)


def _confirm_billable(config: LabConfig, yes: bool) -> None:
    from .costs import billable

    report.print_billable(report.make_console(stderr=True), billable(config))
    if not yes:
        _confirm("Create these billable resources?")


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    if not _interactive():
        raise UserError(f"{question} Not asking on a non-interactive input: pass --yes to confirm.")
    if not click.confirm(question, default=False, err=True):
        raise UserError("cancelled; nothing was changed")
