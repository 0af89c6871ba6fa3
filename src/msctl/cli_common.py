"""What every msctl command shares: the exit codes, the errors, the options accepted anywhere,
how the config and the state are found, confirmations."""

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
