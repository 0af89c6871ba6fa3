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
from .preflight import QuotaExceeded
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
        except (StateError, QuotaExceeded) as exc:
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
    state: str | None = None


def _store(name: str):
    def callback(ctx: click.Context, _param, value):
        if value not in (None, False):
            setattr(ctx.find_root().ensure_object(Globals), name, value)

    return callback


def global_options(fn):
    """-v, -c, --target, --state-dir, --state."""
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
        click.option(
            "--state",
            metavar="URL",
            expose_value=False,
            callback=_store("state"),
            help="Where the lab's state lives: local (the state dir) or s3://bucket/prefix "
            "(default: the config's `state:`).",
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


def labs_options(fn):
    """--labs, --parallel-labs (up and down)."""
    fn = click.option(
        "--parallel-labs",
        type=click.IntRange(1, 32),
        default=3,
        show_default=True,
        help="With --labs: how many labs run at once.",
    )(fn)
    return click.option(
        "--labs",
        "lab_names",
        metavar="A,B,C",
        help="Do it for each of these labs: the config with --set lab=NAME, in parallel.",
    )(fn)


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


def _lab(overrides=(), name: str | None = None) -> Lab:
    """The lab of the config (with --set lab=NAME when a name is given: --labs)."""
    config_path = _config_path()
    notices = report.make_console(stderr=True)
    overrides = (*overrides, f"lab={name}") if name else tuple(overrides)
    prefix = f"{name}: " if name else ""
    return Lab(
        load_config(config_path, list(overrides)),
        _globals().target or "local",
        _state_dir(config_path),
        on_notice=lambda message: report.notice(notices, prefix + message),
        config_path=config_path,
        overrides=overrides,
        state=_state_url(),
    )


def _state_url() -> str | None:
    """--state as a location (None: the config's, or the state dir)."""
    value = _globals().state
    if value is None:
        return None
    from pydantic import ValidationError

    from .config.models import StateConfig

    try:
        chosen = StateConfig.model_validate(value)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"--state {value}: {problem} (local or s3://bucket/prefix)") from None
    return chosen.location or str(_state_dir(_config_path()))


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
@labs_options
@yes_option
@output_option
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Local target: the port the lab is served on (default: the one it had, else a free one).",
)
@click.pass_context
@handle_errors
def up(ctx, overrides, only, parallel, lab_names, parallel_labs, yes, output, port):
    """Build the lab (or finish an interrupted build). Safe to re-run.

    On the local target a full `up` also serves the lab, on the same URL every time.
    First the quota preflight: `up` stops, creating nothing, when the account has no room.

    \b
    Examples:
      msctl up
      msctl up --only sg
      msctl up --port 8080
      msctl up --target aws --yes
      msctl up --labs alice,bob,carol --parallel-labs 3   (one lab each, same config)
    """
    selected = _only(only)
    console = report.make_console()
    if lab_names:
        if port is not None:
            raise UserError("--port serves one lab: not with --labs")
        from .cli_labs import many

        many(ctx, overrides, lab_names, parallel_labs, output, "up", selected, parallel, yes)
        return
    lab = _lab(overrides)
    if port is not None and not lab.local:
        raise UserError("--port is for the local target only")
    try:
        with report.Progress(console, _shown(selected, "apply"), enabled=output == "table") as bar:
            lab.on_event = bar
            result, url = lab.up(
                selected,
                parallel,
                confirm=lambda c: _confirm_billable(c, yes, lab.prices),
                port=port,
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
@labs_options
@yes_option
@output_option
@click.pass_context
@handle_errors
def down(ctx, overrides, only, parallel, lab_names, parallel_labs, yes, output):
    """Remove the lab, in reverse dependency order, and check that nothing of it remains.

    Asks first, naming the data that goes with it (tables and their items, the database);
    --yes skips the question. Safe to run twice.

    \b
    Examples:
      msctl down
      msctl down --yes
      msctl down --only ecs      (ecs and everything that depends on it)
      msctl down --labs alice,bob,carol --yes
    """
    selected = _only(only)
    console = report.make_console()
    if lab_names:
        from .cli_labs import down_doc, many

        many(ctx, overrides, lab_names, parallel_labs, output, "down", selected, parallel, yes)
        return
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
        from .cli_labs import down_doc

        report.print_json(console, down_doc(done))
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


def _confirm_billable(config: LabConfig, yes: bool, prices, labs: int = 1) -> None:
    from .costs import billable

    report.print_billable(report.make_console(stderr=True), billable(config, prices), prices, labs)
    if not yes:
        _confirm("Create these billable resources?")


def _interactive() -> bool:
    return sys.stdin.isatty()


def _confirm(question: str) -> None:
    if not _interactive():
        raise UserError(f"{question} Not asking on a non-interactive input: pass --yes to confirm.")
    if not click.confirm(question, default=False, err=True):
        raise UserError("cancelled; nothing was changed")


# The commands that live in their own modules (they build on the options above).
from .cli_labs import labs_command  # noqa: E402
from .cli_local import local  # noqa: E402
from .cli_state import state  # noqa: E402
from .cli_testapi import test_api  # noqa: E402

main.add_command(labs_command)
main.add_command(local)
main.add_command(state)
main.add_command(test_api)
