"""`msctl local start|stop|status`: the local emulator (moto, server mode, on 127.0.0.1)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from . import report
from .cli_common import (
    EXIT_FAILED,
    RunFailed,
    _globals,
    _state_dir,
    global_options,
    handle_errors,
    output_option,
)
from .config import find_config


@click.group()
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
