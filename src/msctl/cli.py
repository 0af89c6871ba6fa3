"""msctl's command line: the `msctl` group and the lab commands (up, plan, down, status);
`test-api`, `labs`, `local` and `state` live beside it (cli_*.py). Parse, call the library
(lab.Lab), render with report.py, set the exit code."""

from __future__ import annotations

import click

from . import report
from .cli_common import (
    EXIT_FAILED,
    EXIT_NOTHING,
    Globals,
    RunFailed,
    UserError,
    _confirm,
    _confirm_billable,
    _finish,
    _globals,
    _lab,
    _only,
    _shown,
    global_options,
    handle_errors,
    labs_options,
    only_option,
    output_option,
    parallel_option,
    set_option,
    yes_option,
)
from .cli_labs import labs_command
from .cli_local import local
from .cli_state import state
from .cli_testapi import test_api
from .local.dataplane import DataPlaneError


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


main.add_command(labs_command)
main.add_command(local)
main.add_command(state)
main.add_command(test_api)
