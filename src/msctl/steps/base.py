"""LabStep: the engine's step contract, implemented once for every step of the lab.

A step writes `reconcile(run)` (plan, apply, verify and state rebuilds all run it) and
declares `kinds`, the resource kinds it creates, in creation order: `down` deletes, in the
reverse order, everything of those kinds tagged for the lab and the step. A step whose
teardown needs more (parts of other steps' resources, a check first) overrides `teardown`
and ends with `super().teardown(run)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from ..engine.model import Change, Check, Pending
from ..engine.step import Step
from ..resources import Kind
from .run import StepRun

if TYPE_CHECKING:
    from ..context import Context


class LabStep(Step):
    kinds: ClassVar[tuple[Kind, ...]] = ()
    # Required steps whose outputs this one only names (an ARN in a policy, a domain in a
    # setting): its resources don't keep theirs from being deleted, so `down` doesn't wait
    # for this step before removing them (engine.runner.teardown_requires).
    reads_only: ClassVar[tuple[str, ...]] = ()

    # --- what each step writes
    def reconcile(self, run: StepRun) -> dict:
        raise NotImplementedError

    def names(self, config) -> list[tuple[Kind, str]]:
        """The unique names the config gives this step's resources: `down` checks them to
        report a same-named resource that isn't the lab's (it is never touched)."""
        return []

    def teardown(self, run: StepRun) -> None:
        run.delete_owned(self.kinds, self.names(run.config))

    def verify(self, run: StepRun) -> list[Check]:
        """By default: a dry reconcile against AWS. Every resource found as configured is a
        passing check; every change it would make is a failing one."""
        run.outputs = self.reconcile(run) or {}
        drifted = {(c.kind, c.name) for c in run.changes}
        checks = [
            Check(f"{kind} {name}", True, ident)
            for kind, name, ident in run.found
            if (kind, name) not in drifted
        ]
        checks += [Check(f"{c.kind} {c.name}", False, _missing(c)) for c in run.changes]
        checks += [
            Check(f"{kind} {name}", True, ident, shared=True) for kind, name, ident in run.shared
        ]
        return checks

    # --- the contract the runner calls
    def plan(self, ctx: Context) -> tuple[dict, list[Change]]:
        return self._reconcile(ctx, dry_run=True)

    def apply(self, ctx: Context) -> tuple[dict, list[Change]]:
        return self._reconcile(ctx, dry_run=False)

    def _reconcile(self, ctx: Context, dry_run: bool) -> tuple[dict, list[Change]]:
        run = StepRun(ctx, self.name, dry_run=dry_run)
        interrupted = [] if dry_run else ctx.state.open_intents(self.name)
        for intent in interrupted:
            run.emit(
                "note",
                f"an earlier run was interrupted while creating {intent['logical']}; "
                "looking it up by its tags before creating anything",
            )
        outputs = self.reconcile(run) or {}
        # Every resource was found or created by now: the old intents are settled.
        for intent in interrupted:
            ctx.state.journal_done(intent["id"])
        return outputs, run.changes

    def destroy(self, ctx: Context, dry_run: bool = False) -> list[Change]:
        run = StepRun(ctx, self.name, dry_run=dry_run, destroying=True)
        self.teardown(run)
        return run.changes

    def check(self, ctx: Context) -> tuple[dict, list[Check]]:
        run = StepRun(ctx, self.name, dry_run=True)
        checks = self.verify(run)
        return run.outputs, checks

    def rebuild(self, ctx: Context) -> tuple[dict, list[Check]]:
        """A verify that records what it finds, as `apply` would; the outputs too when none
        of them is still unknown (a missing resource leaves them Pending)."""
        run = StepRun(ctx, self.name, dry_run=True)
        checks = self.verify(run)
        for key, (ident, arn) in run.seen.items():
            ctx.state.record_resource(self.name, key, ident, arn)
        if run.seen and not has_pending(run.outputs):
            ctx.state.set_outputs(self.name, run.outputs)
            ctx.state.set_status(self.name, "complete", "rebuilt from the lab's tags")
        elif run.seen:
            missing = sum(not c.ok for c in checks)
            ctx.state.set_status(
                self.name,
                "failed",
                f"rebuilt from the lab's tags; {missing} resource(s) missing: run `msctl up`",
            )
        return run.outputs, checks


def _missing(change: Change) -> str:
    if change.action == "create":
        return "missing"
    return f"differs from config: {change.detail}" if change.detail else "differs from config"


def has_pending(value) -> bool:
    if isinstance(value, Pending):
        return True
    if isinstance(value, dict):
        return any(has_pending(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(has_pending(v) for v in value)
    return False
