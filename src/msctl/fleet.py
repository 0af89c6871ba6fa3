"""Many labs from one config (`up`/`down` --labs a,b,c): each lab is the config with
`--set lab=<name>`, run in parallel with bounded concurrency, one line per lab as it
finishes, and a summary.

`up` checks the quotas for all of them together first (labs built at once each see the
account before the others create anything), and asks once on AWS. On the local target the
labs share the emulator of the state dir; the local data plane serves one lab at a time, so
`up --labs` builds them without serving (`msctl up --set lab=<name>` serves one).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from . import preflight
from .lab import Lab

SERVE_NOTE = (
    "the labs are built; the local data plane serves one lab at a time: "
    "`msctl up --set lab=NAME` serves that one"
)


@dataclass
class Outcome:
    lab: str
    ok: bool
    summary: str
    doc: dict | None = None  # the run as JSON (report.result_to_json), when it ran


def parse(value: str) -> list[str]:
    """`a,b,c` as lab names, in order, each once."""
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    if not names:
        raise ValueError("--labs: give one or more lab names, e.g. --labs alice,bob")
    return names


def check_quotas(labs: list[Lab], only: list[str] | None) -> None:
    """Raise preflight.QuotaExceeded unless the account has room for all the labs."""
    if labs:
        labs[0].check_quotas(preflight.merge([lab.quota_needs(only) for lab in labs]))


def run(
    labs: list[Lab],
    action: Callable[[Lab], Outcome],
    parallel_labs: int,
    on_done: Callable[[Outcome], None],
) -> list[Outcome]:
    """`action` on every lab, at most `parallel_labs` at once; a lab that raises is a failed
    outcome with the error as its summary. Returns the outcomes in the labs' order."""
    outcomes: dict[str, Outcome] = {}
    with ThreadPoolExecutor(max_workers=parallel_labs, thread_name_prefix="lab") as pool:
        futures = {pool.submit(action, lab): lab.config.lab for lab in labs}
        for future in as_completed(futures):
            name = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:
                outcome = Outcome(name, False, _one_line(exc))
            outcomes[name] = outcome
            on_done(outcome)
    return [outcomes[lab.config.lab] for lab in labs]


def summary(outcomes: list[Outcome], action: str) -> str:
    failed = [o.lab for o in outcomes if not o.ok]
    done = len(outcomes) - len(failed)
    line = f"{len(outcomes)} labs: {done} {action}"
    return line + (f", {len(failed)} failed ({', '.join(failed)})" if failed else "")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " | ".join(line.strip() for line in text.splitlines() if line.strip())
