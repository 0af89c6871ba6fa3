"""The step contract, and StepRun: the one computation behind plan, apply and destroy.

A step writes `reconcile` once, as a sequence of `run.ensure(...)` calls. Under `plan` the
run is dry: lookups happen, creates and fixes are only recorded as Changes, and values that
would come from a create are `Pending`. Under `apply` the same code executes them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..aws.retry import retry_eventual
from ..aws.tags import LAB
from ..aws.waiters import wait_for
from .model import Change, Check, Event, Pending, is_pending

if TYPE_CHECKING:
    from ..context import Context


class StepError(Exception):
    """A problem a step found that isn't an AWS error (ambiguous match, missing input...)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class NotSupported(Exception):
    """The target can't do this (reported as `unsupported`, never as success)."""


@dataclass(frozen=True)
class Fix:
    """One attribute that differs from the config, and how to make it match."""

    detail: str
    apply: Callable[[], Any]
    action: str = "update"


Resource = dict[str, Any]


class Step:
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    services: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    # Kinds of resource the step deliberately leaves behind on destroy (account settings).
    kept_after_down: ClassVar[tuple[str, ...]] = ()

    def enabled(self, ctx: Context) -> bool:
        """A step switched off by config (route53 without a domain) is skipped."""
        return True

    # --- what each step writes
    def reconcile(self, run: StepRun) -> dict:
        raise NotImplementedError

    def teardown(self, run: StepRun) -> None:
        raise NotImplementedError

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
        run = StepRun(ctx, self.name, dry_run=dry_run)
        self.teardown(run)
        return run.changes

    def check(self, ctx: Context) -> tuple[dict, list[Check]]:
        run = StepRun(ctx, self.name, dry_run=True)
        checks = self.verify(run)
        return run.outputs, checks


def _missing(change: Change) -> str:
    if change.action == "create":
        return "missing"
    return f"differs from config: {change.detail}" if change.detail else "differs from config"


class StepRun:
    """What a step sees while it runs: config, clients, state, and the ensure/remove verbs."""

    def __init__(self, ctx: Context, step: str, dry_run: bool):
        self.ctx = ctx
        self.step = step
        self.dry_run = dry_run
        self.changes: list[Change] = []
        self.found: list[tuple[str, str, str]] = []  # (kind, name, id) of resources that exist
        self.outputs: dict = {}  # what a dry reconcile under verify computed

    @property
    def config(self):
        return self.ctx.config

    @property
    def clients(self):
        return self.ctx.clients

    def tags(self, name: str) -> dict[str, str]:
        return self.ctx.tags(self.step, name)

    def outputs_of(self, step: str) -> dict:
        return self.ctx.outputs_of(step)

    # --- events
    def emit(self, kind: str, message: str) -> None:
        self.ctx.emit(Event(kind, self.step, message))

    def waiting(self, message: str) -> None:
        self.emit("wait", message)

    # --- verbs
    def ensure(
        self,
        kind: str,
        name: str,
        *,
        find: Callable[[], Resource | None],
        create: Callable[[], Resource],
        id_key: str,
        arn_key: str | None = None,
        fixes: Callable[[Resource], Iterable[Fix]] | None = None,
        after: Iterable[Any] = (),
    ) -> str:
        """Find the resource (by its tags or name); create it when absent; fix what differs.

        Returns its id, or a Pending placeholder under plan. `after` lists values this
        resource depends on: if any is Pending, the resource can't exist yet either.
        `fixes` compares a resource with the config; on a resource just created they run as
        part of the create (the plan said "create", meaning "as configured").
        """
        key = f"{kind}:{name}"
        found = None if is_pending(*after) else find()
        if found is None:
            self.record(Change("create", kind, name))
            if self.dry_run:
                return Pending(f"{kind} {name}")
            entry = self.ctx.state.journal_intent(self.step, key, "create")
            created = create()
            ident = created[id_key]
            self.ctx.state.record_resource(self.step, key, ident, created.get(arn_key or ""))
            self.ctx.state.journal_done(entry)
            for fix in fixes(created) if fixes else ():
                fix.apply()
            return ident
        ident = found[id_key]
        self.found.append((kind, name, ident))
        if not self.dry_run:
            self.ctx.state.record_resource(self.step, key, ident, found.get(arn_key or ""))
        for fix in fixes(found) if fixes else ():
            self.record(Change(fix.action, kind, name, fix.detail))
            if not self.dry_run:
                fix.apply()
        return ident

    def setting(
        self,
        kind: str,
        name: str,
        *,
        ok: bool,
        detail: str,
        apply: Callable[[], Any],
        action: str = "update",
        after: Iterable[Any] = (),
    ) -> None:
        """A sub-resource or attribute (a route, a rule, an association) that is either as
        configured or gets fixed. When a parent is Pending it is part of that parent's create."""
        if is_pending(*after):
            return
        if ok:
            self.found.append((kind, name, detail))
            return
        self.record(Change(action, kind, name, detail))
        if not self.dry_run:
            apply()

    def remove(
        self,
        kind: str,
        name: str,
        *,
        find: Callable[[], Resource | None],
        delete: Callable[[Resource], Any],
    ) -> bool:
        """Delete the resource if it exists; absent is success. Returns whether it existed."""
        found = find()
        key = f"{kind}:{name}"
        if found is None:
            if not self.dry_run:
                self.ctx.state.forget_resource(self.step, key)
            return False
        self.record(Change("delete", kind, name))
        if not self.dry_run:
            delete(found)
            self.ctx.state.forget_resource(self.step, key)
        return True

    def record(self, change: Change) -> None:
        self.changes.append(change)
        if not self.dry_run:
            self.emit("change", str(change))

    def wait(
        self,
        what: str,
        check: Callable[[], tuple[bool, str]],
        *,
        timeout: float,
        interval: float | None = None,
    ) -> str:
        if self.dry_run:
            return ""
        return wait_for(
            what,
            check,
            timeout=timeout,
            interval=self.ctx.poll_interval if interval is None else interval,
            on_wait=self.waiting,
        )

    def retry(
        self,
        fn: Callable[[], Any],
        *,
        codes: tuple[str, ...],
        reason: str,
        timeout: float = 60.0,
        match=lambda _exc: True,
    ) -> Any:
        return retry_eventual(
            fn, codes=codes, reason=reason, timeout=timeout, on_wait=self.waiting, match=match
        )


def claim(
    resource: Resource,
    tags: dict[str, str],
    *,
    lab: str,
    kind: str,
    name: str,
    on_foreign: StepRun | None,
    config_key: str,
) -> Resource | None:
    """The resource if it carries this lab's tag. Someone else's same-named resource is an
    error when reconciling (never adopted) and left alone, with a note, when destroying
    (pass the run as `on_foreign` there)."""
    if tags.get(LAB) == lab:
        return resource
    if on_foreign is not None:
        on_foreign.emit("note", f"{kind} {name} is not tagged {LAB}={lab}: left alone")
        return None
    raise StepError(
        f"a {kind} named {name} exists but isn't this lab's (tag {LAB} is "
        f"{tags.get(LAB)!r}, expected {lab!r})",
        hint="msctl doesn't adopt resources it didn't create: delete or rename it, or change "
        f"{config_key} in the config",
    )


def only_one(items: list[Resource], what: str) -> Resource | None:
    """More than one match for a lab resource is an error, not a guess."""
    if len(items) > 1:
        raise StepError(
            f"found {len(items)} {what} tagged for this lab; expected at most one",
            hint="remove the extra copies (msctl down removes all of them) and run again",
        )
    return items[0] if items else None
