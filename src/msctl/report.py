"""The only module that prints. Renders engine events live, and results as tables or JSON."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
from rich.progress import Progress as Bar
from rich.table import Table
from rich.text import Text

from .costs import Billable, total
from .engine.model import Event, Status, StepResult
from .engine.runner import RunResult

STYLE = {
    Status.PENDING: ("·", "dim"),
    Status.RUNNING: ("…", "cyan"),
    Status.COMPLETE: ("✓", "green"),
    Status.NOCHANGE: ("=", "green"),
    Status.FAILED: ("✗", "bold red"),
    Status.SKIPPED: ("-", "yellow"),
    Status.UNSUPPORTED: ("!", "yellow"),
    Status.ABSENT: ("○", "dim"),
}


def make_console(stderr: bool = False) -> Console:
    # Lines are not wrapped when output goes to a file or pipe, so logs stay greppable; no
    # emoji codes: an ARN's ":secret:" must print as it is.
    return Console(stderr=stderr, soft_wrap=True, emoji=False)


class Progress:
    """Listener for engine events: a live table on a terminal, one line per event otherwise."""

    def __init__(self, console: Console, steps: Iterable[str], *, enabled: bool = True):
        self.console = console
        self.enabled = enabled
        self.rows = {
            name: {"status": Status.PENDING, "message": "", "started": None, "elapsed": 0.0}
            for name in steps
        }
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> Progress:
        if self.enabled and self.console.is_terminal:
            self._live = Live(
                self._table(),
                console=self.console,
                refresh_per_second=8,
                get_renderable=self._table,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        with self._lock:
            row = self.rows.setdefault(
                event.step,
                {"status": Status.PENDING, "message": "", "started": None, "elapsed": 0.0},
            )
            if event.kind == "start":
                row.update(status=Status.RUNNING, started=time.monotonic(), message="")
            elif event.kind == "finish" and event.result is not None:
                row.update(
                    status=event.result.status,
                    elapsed=event.result.elapsed,
                    message=event.result.reason,
                )
            else:
                row["message"] = event.message
            if self.enabled and self._live is None:
                self._line(event, row)

    def _line(self, event: Event, row: dict) -> None:
        if event.kind == "start":
            self.console.print(f"[cyan]{event.step:<11}[/] started")
        elif event.kind == "finish":
            mark, style = STYLE[row["status"]]
            self.console.print(
                f"[{style}]{event.step:<11} {mark} {row['status']}[/] "
                f"({row['elapsed']:.1f}s) {_escape(row['message'])}"
            )
        else:
            self.console.print(f"[dim]{event.step:<11}[/]   {_escape(event.message)}")

    def _table(self) -> Table:
        table = Table.grid(padding=(0, 2))
        now = time.monotonic()
        with self._lock:
            for name, row in self.rows.items():
                mark, style = STYLE[row["status"]]
                running = row["status"] is Status.RUNNING and row["started"] is not None
                elapsed = now - row["started"] if running else row["elapsed"]
                table.add_row(
                    Text(mark, style=style),
                    Text(name, style="bold"),
                    Text(str(row["status"]), style=style),
                    Text(f"{elapsed:5.1f}s" if elapsed else "", style="dim"),
                    Text(row["message"][:100], style="dim"),
                )
        return table


def _escape(text: str) -> str:
    return text.replace("[", r"\[")


# ---------------------------------------------------------------- results


def result_to_json(result: RunResult) -> dict:
    return {
        "action": result.action,
        "ok": result.ok,
        "steps": {name: _step_json(res) for name, res in result.results.items()},
    }


def _step_json(res: StepResult) -> dict:
    return {
        "status": str(res.status),
        "reason": res.reason,
        "elapsed": round(res.elapsed, 3),
        "changes": [asdict(c) for c in res.changes],
        "checks": [asdict(c) for c in res.checks],
        "outputs": res.outputs,
        "error": res.error or None,
        "hint": res.hint or None,
    }


def print_json(console: Console, doc: dict) -> None:
    console.file.write(json.dumps(doc, indent=2, default=str) + "\n")
    console.file.flush()


def print_summary(
    console: Console, result: RunResult, *, verbose: bool, next_step: str = ""
) -> None:
    counts: dict[str, int] = {}
    for res in result.results.values():
        counts[str(res.status)] = counts.get(str(res.status), 0) + 1
    line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    failed = result.failed
    for res in failed:
        console.print(
            f"[bold red]Error: step {res.step} failed: {_escape(res.error or res.reason)}[/]"
        )
        if res.hint:
            console.print(f"  next: {_escape(res.hint)}")
        if verbose and res.debug:
            console.print(res.debug, markup=False, highlight=False)
    if failed:
        console.print(
            f"[red]{result.action} failed[/] ({line}). Fix the error and run the same "
            "command again: finished steps are kept and not redone."
        )
    else:
        console.print(f"[green]{result.action} done[/] ({line}). {next_step}".rstrip())


def print_plan(console: Console, result: RunResult, notes: Iterable[str] = ()) -> None:
    table = Table(title="plan", show_lines=False)
    for col in ("step", "action", "resource", "name", "detail"):
        table.add_column(col)
    n = 0
    for name, res in result.results.items():
        for change in res.changes:
            n += 1
            style = {"create": "green", "delete": "red", "replace": "magenta"}.get(
                change.action, "yellow"
            )
            table.add_row(
                name, Text(change.action, style=style), change.kind, change.name, change.detail
            )
        if res.status is Status.FAILED:
            table.add_row(name, Text("error", style="bold red"), "", "", res.error)
    if n:
        console.print(table)
    by_action: dict[str, int] = {}
    for res in result.results.values():
        for change in res.changes:
            by_action[change.action] = by_action.get(change.action, 0) + 1
    summary = ", ".join(f"{count} to {action}" for action, count in sorted(by_action.items()))
    for note in dict.fromkeys(notes):
        console.print(f"note: {_escape(note)}", highlight=False)
    console.print(f"plan: {summary or 'no changes; the lab matches the config'}")


def print_status(console: Console, doc: dict, *, verbose: bool = False) -> None:
    """A line per step (every failing check with -v), where the lab answers, a summary."""
    target = doc["target"]
    if target["name"] == "local":
        emulator = doc.get("emulator") or {}
        where = emulator.get("endpoint") or "not running"
        console.print(f"lab [bold]{doc['lab']}[/] on the local emulator ({_escape(where)})")
    else:
        where = target.get("endpoint") or "AWS"
        console.print(f"lab [bold]{doc['lab']}[/] on {_escape(where)} ({target['region']})")
    for warning in doc.get("warnings", []):
        console.print(f"[yellow]! {_escape(warning)}[/]")
    if doc["exists"] or verbose:
        table = Table()
        for col in ("step", "status", "resources", "detail"):
            table.add_column(col)
        for name, step in doc["steps"].items():
            status = Status(step["status"])
            mark, style = STYLE[status]
            bad = [f"{c['name']}: {c['detail']}" for c in step.get("checks", []) if not c["ok"]]
            shown = bad if verbose else bad[:1]
            if len(bad) > len(shown):
                shown.append(f"...and {len(bad) - len(shown)} more (-v shows them)")
            table.add_row(
                name,
                Text(f"{mark} {status}", style=style),
                str(len(step.get("resources", {}))),
                _escape("\n".join(shown) or step.get("reason", "")),
            )
        console.print(table)
    for key, value in doc.get("endpoints", {}).items():
        console.print(f"{key.replace('_', ' ')}: {value}")
    read_with = doc["steps"].get("admin", {}).get("outputs", {}).get("read_with")
    if read_with:
        console.print(f"admin login: {_escape(read_with)}", highlight=False)
    cost = doc.get("cost")
    if cost and cost["resources"]:
        console.print(
            f"cost: {_cost_line(cost)}; {_escape(cost['prices']['label'])}", highlight=False
        )
    if verbose:
        for key, value in doc.get("emulated_endpoints", {}).items():
            console.print(
                f"[dim]{key.replace('_', ' ')}: {_escape(value)} (emulated: opens nowhere)[/]"
            )
    console.print(doc["summary"], highlight=False)


def print_rebuilt(console: Console, rebuilt: dict) -> None:
    """What `status --rebuild-state` did (Session.rebuild_state's summary)."""
    if rebuilt.get("backup"):
        console.print(f"moved the old state file aside to {_escape(rebuilt['backup'])}")
    if rebuilt.get("note"):
        console.print(f"[yellow]! {_escape(rebuilt['note'])}[/]")
        return
    steps = rebuilt.get("steps", {})
    resources = sum(s["resources"] for s in steps.values())
    found = [name for name, s in steps.items() if s["resources"]]
    console.print(
        f"rebuilt the state from the lab's tags: {resources} resource(s) in "
        f"{len(found)} step(s)" + (f" ({', '.join(found)})" if found else "")
    )
    for name, step in steps.items():
        if step.get("error") and step["error"] != "disabled by config":
            console.print(f"[yellow]! {name}: not rebuilt: {_escape(step['error'])}[/]")


def print_billable(console: Console, items: list[Billable], prices=None, labs: int = 1) -> None:
    title = "billable resources this will create" + (f" (each of {labs} labs)" if labs > 1 else "")
    table = Table(title=title)
    for col in ("resource", "name", "USD/hour", "note"):
        table.add_column(col)
    for item in items:
        table.add_row(item.kind, item.name, f"{item.hourly:.4f}", item.note)
    console.print(table)
    hourly = total(items) * labs
    what = "the lab exists" if labs == 1 else f"the {labs} labs exist"
    console.print(
        f"about ${hourly:.3f}/hour (${hourly * 24:.2f}/day) while {what}; "
        "`msctl down` removes all of it",
        highlight=False,
    )
    console.print(_escape(prices.label if prices else "prices: built-in table"), highlight=False)


def leftovers_to_json(found) -> dict:
    """`down`'s final check (msctl.leftovers.Leftovers) as a JSON document."""
    return {
        "lab": found.lab,
        "ok": found.ok,
        "remaining": [asdict(item) for item in found.remaining],
        "kept": [asdict(item) for item in found.kept],
        "problems": list(found.problems),
        "remaining_usd_per_hour": round(found.hourly, 4),
        "prices": BUILT_IN_PRICES,
    }


def _leftover(item) -> str:
    name = f" ({item.name})" if item.name and item.name != item.id else ""
    return f"{item.kind} {item.id}{name}"


BUILT_IN_PRICES = "prices: built-in table"  # the kinds price what `down` finds from it


def print_leftovers(console: Console, found) -> None:
    """What `down` kept on purpose and what still remains: one line each (greppable logs)."""
    for item in found.kept:
        console.print(
            f"[yellow]! kept {_escape(_leftover(item))} "
            f"(${item.hourly:.4f}/hour): {_escape(item.note)}[/]",
            highlight=False,
        )
    for problem in found.problems:
        console.print(f"[bold red]Error: {_escape(problem)}[/]", highlight=False)
    if found.remaining:
        hourly = found.hourly
        console.print(
            f"[bold red]Error: {len(found.remaining)} resource(s) of lab {found.lab} "
            f"remain, about ${hourly:.4f}/hour (${hourly * 24:.2f}/day):[/]",
            highlight=False,
        )
        console.print(f"  {BUILT_IN_PRICES}", highlight=False)
        for item in found.remaining:
            note = f"; {_escape(item.note)}" if item.note else ""
            console.print(
                f"  {_escape(_leftover(item))} in {item.region}: ${item.hourly:.4f}/hour{note}",
                highlight=False,
            )
        console.print("  next: fix what is named above and run `msctl down` again")
    elif not found.problems:
        console.print(f"nothing tagged for lab {found.lab} remains")
    if found.kept and not found.remaining:
        console.print(BUILT_IN_PRICES, highlight=False)


def _cost_line(cost: dict) -> str:
    line = f"about ${cost['hourly_usd']:.4f}/hour"
    if cost.get("cost_so_far_usd") is not None:
        line += (
            f", about ${cost['cost_so_far_usd']:.2f} so far (an estimate, since {cost['created']})"
        )
    return line


def print_labs(console: Console, doc: dict) -> None:
    """`msctl labs`: one row per lab, then where the prices came from."""
    where = f"{doc['target']} target, region {doc['region']}"
    if not doc["labs"]:
        note = doc.get("note") or "nothing tagged by msctl here"
        console.print(f"no labs ({where}): {_escape(note)}", highlight=False)
    else:
        table = Table(title=f"labs ({where})")
        for col in ("lab", "status", "created (UTC)", "resources", "USD/hour", "so far", "from"):
            table.add_column(col, no_wrap=col != "lab")
        for lab in doc["labs"]:
            so_far = lab["cost_so_far_usd"]
            table.add_row(
                lab["name"],
                lab["status"],
                (lab["created"] or "-")[:16].replace("T", " "),
                str(lab["resources"]),
                f"{lab['hourly_usd']:.4f}",
                "-" if so_far is None else f"~{so_far:.2f}",
                ", ".join(lab["found_in"]),
            )
        console.print(table)
        hourly = sum(lab["hourly_usd"] for lab in doc["labs"])
        console.print(
            f"{len(doc['labs'])} lab(s), about ${hourly:.4f}/hour in all", highlight=False
        )
    if doc.get("prices"):
        console.print(_escape(doc["prices"]["label"]), highlight=False)
        console.print(_escape(doc["estimate"]), highlight=False)
    for problem in doc.get("problems", []):
        console.print(f"[bold red]Error: {_escape(problem)}[/]", highlight=False)


def run_line(result: RunResult) -> str:
    """One run in a line: `apply done (2 complete, 15 nochange)` or the first failure."""
    counts: dict[str, int] = {}
    for res in result.results.values():
        counts[str(res.status)] = counts.get(str(res.status), 0) + 1
    line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    failed = result.failed
    if failed:
        res = failed[0]
        return f"{result.action} failed ({line}): step {res.step}: {res.error or res.reason}"
    return f"{result.action} done ({line})"


def down_line(done) -> str:
    """`down` of one lab in a line (lab.Down)."""
    if done.walk is None:
        return done.note
    line = run_line(done.walk)
    found = done.leftovers
    if found is not None and found.remaining:
        line += f"; {len(found.remaining)} resource(s) remain, about ${found.hourly:.4f}/hour"
    elif found is not None and found.problems:
        line += f"; {found.problems[0]}"
    else:
        line += "; nothing of it remains"
    return line


def print_outcome(console: Console, outcome) -> None:
    """One lab of `--labs` as it finishes (fleet.Outcome)."""
    mark = "[green]✓[/]" if outcome.ok else "[bold red]✗[/]"
    console.print(f"{mark} {outcome.lab}: {_escape(outcome.summary)}", highlight=False)


def print_at_risk(console: Console, lab: str, lost: list[str]) -> None:
    """What `down` would delete that holds data, before it asks."""
    if not lost:
        console.print(f"`msctl down` removes every resource of lab {lab}.")
        return
    console.print(f"`msctl down` removes every resource of lab {lab}, and with them:")
    for line in lost:
        console.print(f"  - {_escape(line)}", highlight=False)


def notice(console: Console, message: str) -> None:
    """A line for the user beside the results (on stderr, so stdout stays parseable)."""
    if message.startswith("! "):
        console.print(f"[yellow]{_escape(message)}[/]", highlight=False)
    else:
        console.print(_escape(message), highlight=False)


def error(console: Console, message: str) -> None:
    for line in message.splitlines() or [""]:
        console.print(f"[bold red]Error:[/] {_escape(line)}", highlight=False)


def print_checks(console: Console, url: str, checks) -> None:
    table = Table(title=f"test-api {url}")
    for col in ("", "check", "ms", "detail"):
        table.add_column(col)
    for check in checks:
        mark = Text("✓", style="green") if check.ok else Text("✗", style="bold red")
        table.add_row(mark, check.name, f"{check.latency_ms:.1f}", check.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(checks)} checks failed[/]")
    else:
        console.print(f"[green]all {len(checks)} checks passed[/]")


def print_load(console: Console, summary: dict) -> None:
    table = Table(title=f"load test {summary['url']}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("requests", str(summary["requests"]))
    table.add_row("concurrency", str(summary["concurrency"]))
    table.add_row("seconds", f"{summary['seconds']:.2f}")
    table.add_row("requests/s", f"{summary['requests_per_second']:.1f}")
    for name, value in summary["latency_ms"].items():
        table.add_row(f"latency {name} (ms)", f"{value:.2f}")
    for code, count in summary["status_codes"].items():
        table.add_row(f"status {code}", str(count))
    for kind, count in summary["errors"].items():
        table.add_row(Text(f"error {kind}", style="red"), str(count))
    console.print(table)


class LoadProgress:
    """A progress bar for the load test (silent when disabled or not on a terminal)."""

    def __init__(self, console: Console, total: int, *, enabled: bool = True):
        self._bar = Bar(
            "load",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
            transient=True,
        )
        self._task = self._bar.add_task("requests", total=total)

    def __enter__(self) -> LoadProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)
