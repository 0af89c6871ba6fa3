"""The CLI's multi-lab side: `up`/`down` --labs (the same config for each lab, in
parallel) and `msctl labs` (every lab in the account and region, with its cost)."""

from __future__ import annotations

import click

from . import fleet, report
from .cli_common import (
    EXIT_FAILED,
    UserError,
    _confirm,
    _confirm_billable,
    _lab,
    global_options,
    handle_errors,
    output_option,
    set_option,
)
from .lab import Lab


def many(ctx, overrides, names, parallel_labs, output, command, selected, parallel, yes):
    """up/down --labs: the same config for each lab, in parallel; exit 1 if any failed."""
    try:
        labs = [_lab(overrides, name) for name in fleet.parse(names)]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    console = report.make_console()
    first = labs[0]
    if command == "up":
        fleet.check_quotas(labs, selected)
        if not first.local:
            _confirm_billable(first.config, yes, first.current_prices(), len(labs))

        def act(lab: Lab) -> fleet.Outcome:
            result, _ = lab.up(selected, parallel, serve=False, check_quotas=False)
            doc = report.result_to_json(result)
            return fleet.Outcome(lab.config.lab, result.ok, report.run_line(result), doc)

    else:
        if not yes:
            errs = report.make_console(stderr=True)
            for lab in labs:
                report.print_at_risk(errs, lab.config.lab, lab.data_at_risk(selected))
            where = "on AWS" if not first.local else "on the local emulator"
            _confirm(f"Delete labs {', '.join(lab.config.lab for lab in labs)} {where}?")

        def act(lab: Lab) -> fleet.Outcome:
            done = lab.down(selected, parallel)
            return fleet.Outcome(lab.config.lab, done.ok, report.down_line(done), down_doc(done))

    shown = output == "table"
    outcomes = fleet.run(
        labs, act, parallel_labs, lambda o: shown and report.print_outcome(console, o)
    )
    action = "built" if command == "up" else "removed"
    if output == "json":
        doc = {o.lab: {"ok": o.ok, "summary": o.summary, "run": o.doc} for o in outcomes}
        report.print_json(console, {"labs": doc, "ok": all(o.ok for o in outcomes)})
    else:
        console.print(fleet.summary(outcomes, action), highlight=False)
        if command == "up" and first.local and selected is None:
            report.notice(console, fleet.SERVE_NOTE)
    if not all(o.ok for o in outcomes):
        ctx.exit(EXIT_FAILED)


def down_doc(done) -> dict:
    doc = report.result_to_json(done.walk) if done.walk else {"action": "destroy", "steps": {}}
    doc["leftovers"] = report.leftovers_to_json(done.leftovers) if done.leftovers else None
    doc["ok"], doc["note"] = done.ok, done.note or None
    return doc


@click.command("labs")
@global_options
@set_option
@output_option
@click.pass_context
@handle_errors
def labs_command(ctx, overrides, output):
    """List every lab in the account and region: status, hourly cost, cost so far.

    Labs are found by their tags (and in the state backend when it is remote); the cost so
    far is an estimate: the hourly cost of what exists now times the hours since the
    lab's oldest resource was created. Exits 1 when something couldn't be listed.

    \b
    Examples:
      msctl labs
      msctl labs --target aws --output json
    """
    doc = _lab(overrides).labs()
    console = report.make_console()
    if output == "json":
        report.print_json(console, doc)
    else:
        report.print_labs(console, doc)
    if doc["problems"]:
        ctx.exit(EXIT_FAILED)
