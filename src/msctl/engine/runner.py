"""The runner: walks the step graph with a bounded pool, records statuses with reasons."""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from . import graph
from .model import Event, Status, StepResult
from .step import NotSupported, Step, StepError

if TYPE_CHECKING:
    from ..context import Context

Action = Literal["plan", "apply", "destroy", "plan-destroy", "verify", "rebuild"]
FORWARD = {"plan", "apply", "verify", "rebuild"}
READ_ONLY = {"verify", "rebuild"}  # a step whose dependency drifted is still worth reading


@dataclass
class RunResult:
    action: Action
    results: dict[str, StepResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results.values())

    @property
    def failed(self) -> list[StepResult]:
        return [r for r in self.results.values() if r.status is Status.FAILED]


def select(steps: Mapping[str, Step], only: list[str] | None, action: Action) -> list[str]:
    """--only: the named steps plus what they require (for destroy: plus what depends on them)."""
    requires = {name: step.requires for name, step in steps.items()}
    if not only:
        return list(steps)
    edges = requires if action in FORWARD else graph.transpose(requires)
    chosen = graph.closure(edges, only)
    return [name for name in steps if name in chosen]


def teardown_requires(steps: Mapping[str, Step]) -> dict[str, tuple[str, ...]]:
    """What each step's resources really need to exist while they do: its `requires` less
    the steps it only reads outputs from (`reads_only`: a name or an ARN in a policy or a
    setting). `down` orders on these alone, so independent slow deletions overlap."""
    return {
        name: tuple(d for d in step.requires if d not in getattr(step, "reads_only", ()))
        for name, step in steps.items()
    }


def run(
    ctx: Context,
    steps: Mapping[str, Step],
    action: Action,
    *,
    selected: list[str] | None = None,
    parallel: int = 8,
) -> RunResult:
    requires = {name: step.requires for name, step in steps.items()}
    graph.validate(requires)
    names = selected if selected is not None else list(steps)
    edges = requires if action in FORWARD else graph.transpose(teardown_requires(steps))
    # Only the selected steps take part; edges to unselected ones don't block.
    waits_for = {n: {d for d in edges[n] if d in names} for n in names}
    result = RunResult(action)
    for name in graph.order(waits_for):
        result.results[name] = StepResult(name)

    pending = set(names)
    running: dict[Future, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="step") as pool:
        try:
            _walk(ctx, steps, action, waits_for, result, pending, running, pool)
        except KeyboardInterrupt:
            # No step starts any more; running ones stop at their next wait or retry.
            ctx.cancelled.set()
            for future in running:
                future.cancel()
            raise
    return result


def _walk(
    ctx: Context,
    steps: Mapping[str, Step],
    action: Action,
    waits_for: dict[str, set[str]],
    result: RunResult,
    pending: set[str],
    running: dict[Future, str],
    pool: ThreadPoolExecutor,
) -> None:
    """Start every step whose dependencies are done; record each as it finishes."""
    while pending or running:
        for name in [n for n in result.results if n in pending]:
            deps = waits_for[name]
            finished = [d for d in deps if d not in pending and d not in running.values()]
            blocked = [d for d in finished if not result.results[d].ok and action not in READ_ONLY]
            if blocked:
                pending.discard(name)
                _finish(
                    ctx,
                    result.results[name],
                    Status.SKIPPED,
                    f"dependency {blocked[0]} {result.results[blocked[0]].status}",
                )
                continue
            if len(finished) == len(deps):
                pending.discard(name)
                result.results[name].status = Status.RUNNING
                ctx.emit(Event("start", name))
                running[pool.submit(_run_step, ctx, steps[name], action)] = name
        if not running:
            continue
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            name = running.pop(future)
            status, reason, payload = future.result()
            res = result.results[name]
            res.elapsed = payload.pop("elapsed")
            for key, value in payload.items():
                setattr(res, key, value)
            _finish(ctx, res, status, reason)


def _finish(ctx: Context, res: StepResult, status: Status, reason: str) -> None:
    res.status = status
    res.reason = reason
    ctx.emit(Event("finish", res.step, reason, res))


def _run_step(ctx: Context, step: Step, action: Action) -> tuple[Status, str, dict]:
    started = time.monotonic()
    payload: dict = {}
    try:
        if not step.enabled(ctx):
            status, reason = Status.NOCHANGE, "disabled by config"
        elif action in ("plan", "apply"):
            outputs, changes = step.plan(ctx) if action == "plan" else step.apply(ctx)
            ctx.set_outputs(step.name, outputs)
            if action == "apply":
                ctx.state.set_outputs(step.name, outputs)
            payload.update(outputs=outputs, changes=changes)
            unchanged = "up to date" if action == "plan" else "no changes"
            status, reason = _changed(changes, action == "plan", unchanged)
        elif action in ("destroy", "plan-destroy"):
            payload["changes"] = step.destroy(ctx, dry_run=action == "plan-destroy")
            if action == "destroy":
                ctx.state.clear_step(step.name)
            planned = action == "plan-destroy"
            status, reason = _changed(payload["changes"], planned, "nothing to remove")
        else:  # verify, rebuild: read (and for rebuild, record) what exists
            outputs, checks = step.check(ctx) if action == "verify" else step.rebuild(ctx)
            ctx.set_outputs(step.name, outputs)
            payload.update(outputs=outputs, checks=checks)
            bad = [c for c in checks if not c.ok]
            if action == "rebuild":
                status = Status.COMPLETE
                reason = f"rebuilt: {len(checks) - len(bad)} found, {len(bad)} missing"
            else:
                status = Status.FAILED if bad else Status.NOCHANGE
                reason = (
                    f"{len(bad)} check(s) failed: {bad[0].name}"
                    if bad
                    else f"{len(checks)} checks ok"
                )
                if bad:
                    payload["error"] = "; ".join(f"{c.name}: {c.detail}" for c in bad)
    except NotSupported as exc:
        status, reason = Status.UNSUPPORTED, str(exc)
    except StepError as exc:
        status, reason = Status.FAILED, str(exc)
        payload.update(error=str(exc), hint=exc.hint)
    except Exception as exc:  # any AWS or unexpected error fails this step only
        message, hint = ctx.describe_error(exc)
        status, reason = Status.FAILED, message
        payload.update(error=message, hint=hint, debug=traceback.format_exc())
    if action == "apply" or (action == "destroy" and status is Status.FAILED):
        ctx.state.set_status(step.name, str(status), reason)
    payload["elapsed"] = time.monotonic() - started
    return status, reason, payload


PAST = {"create": "created", "update": "updated", "replace": "replaced", "delete": "removed"}


def _changed(changes: list, planned: bool, unchanged: str) -> tuple[Status, str]:
    """ "2 created, 1 updated" (or, planned, "2 to create, 1 to update")."""
    if not changes:
        return Status.NOCHANGE, unchanged
    counts: dict[str, int] = {}
    for change in changes:
        counts[change.action] = counts.get(change.action, 0) + 1
    words = [f"{n} to {a}" if planned else f"{n} {PAST.get(a, a)}" for a, n in counts.items()]
    return Status.COMPLETE, ", ".join(words)
