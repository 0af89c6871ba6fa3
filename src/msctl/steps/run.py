"""StepRun: what a step sees while it runs, and the verbs it builds and deletes with.

A step writes `reconcile` once, as a sequence of `run.ensure(KIND, name, ...)` calls. Under
`plan` the run is dry: lookups happen, creates and fixes are only recorded as Changes, and
values that would come from a create are `Pending`. Under `apply` the same code executes
them. `down` deletes through `run.delete_owned(kinds)`: everything of those kinds that
carries this lab's and this step's tags.

Every lookup goes through `claim`: a resource is this lab's only if it carries this lab's
`msctl:lab` tag. Anything else with a wanted name is foreign: reconciling stops with an error
naming it; destroying leaves it alone and says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..aws.errors import NEW_ID_CODES
from ..aws.retry import retry_eventual
from ..aws.tags import LAB
from ..aws.waiters import Backoff, Wait, wait_all
from ..engine.model import Change, Event, Pending, is_pending
from ..engine.step import StepError
from ..resources import Kind, Resource, owner
from ..resources.base import Item, Part
from ..resources.inventory import owned

if TYPE_CHECKING:
    from ..context import Context

NEW_ID_TIMEOUT = 60  # a new EC2 id becomes visible within seconds


@dataclass(frozen=True)
class Fix:
    """One attribute that differs from the config, and how to make it match."""

    detail: str
    apply: Callable[[], Any]
    action: str = "update"


class StepRun:
    def __init__(self, ctx: Context, step: str, *, dry_run: bool, destroying: bool = False):
        self.ctx = ctx
        self.step = step
        self.dry_run = dry_run
        self.destroying = destroying
        self.changes: list[Change] = []
        self.found: list[tuple[str, str, str]] = []  # (kind, name, id) of resources that exist
        self.shared: list[tuple[str, str, str]] = []  # the same, of what isn't the lab's own
        self.seen: dict[str, tuple[str, str | None]] = {}  # "kind:name" -> (id, arn) found
        self._resources: dict[str, Resource] = {}  # "kind:name" -> as found or created
        self.outputs: dict = {}  # what a dry reconcile under verify computed

    @property
    def config(self):
        return self.ctx.config

    @property
    def clients(self):
        return self.ctx.clients

    def client(self, kind: Kind):
        return kind.client(self.ctx)

    def tags(self, name: str) -> dict[str, str]:
        return self.ctx.tags(self.step, name)

    def outputs_of(self, step: str) -> dict:
        return self.ctx.outputs_of(step)

    # --- events
    def emit(self, kind: str, message: str) -> None:
        self.ctx.emit(Event(kind, self.step, message))

    def waiting(self, message: str) -> None:
        self.emit("wait", message)

    # --- ownership: the one check
    def claim(self, kind: Kind, name: str, resource: Resource | None) -> Resource | None:
        """The resource if it is this lab's; a foreign one is an error when reconciling (never
        adopted or changed) and left alone, with a note, when destroying."""
        if resource is None or isinstance(kind, Part):
            return resource
        lab = self.ctx.lab
        found = owner(kind.tags(self.client(kind), resource))
        if found == lab:
            return resource
        field, verb = ("tag", "tagged") if kind.tagging_type else ("mark", "marked")
        whose = f"is {verb} {LAB}={found}" if found else f"has no {LAB} {field}"
        what = f"{kind.name} {name} ({kind.ident(resource)})"
        if self.destroying:
            self.emit("note", f"{what} isn't lab {lab}'s (it {whose}): left alone")
            return None
        raise StepError(
            f"{what} exists but isn't lab {lab}'s: it {whose}",
            hint="msctl never adopts, changes or deletes what it didn't create for this lab: "
            "remove or rename that resource, or choose another name in the config",
        )

    def got(self, kind: Kind, name: str) -> Resource | None:
        """The resource `ensure` found or created (None under plan, before its create)."""
        return self._resources.get(f"{kind.name}:{name}")

    def lookup(self, kind: Kind, name: str) -> Resource | None:
        """The resource the lab calls `name`, if it exists and is this lab's."""
        return self.claim(kind, name, kind.find(self.client(kind), name, self.ctx.lab))

    # --- verbs
    def ensure(
        self,
        kind: Kind,
        name: str,
        *,
        create: Callable[[], Resource],
        fixes: Callable[[Resource], Iterable[Fix]] | None = None,
        find: Callable[[], Resource | None] | None = None,
        after: Iterable[Any] = (),
    ) -> str:
        """Find the resource (the kind's lookup, or `find`, then the ownership check); create
        it when absent; fix what differs.

        Returns its id, or a Pending placeholder under plan. `after` lists values this
        resource depends on: if any is Pending, the resource can't exist yet either.
        `fixes` compares a resource with the config; on a resource just created they run as
        part of the create (the plan said "create", meaning "as configured").
        """
        key = f"{kind.name}:{name}"
        if is_pending(*after):
            found = None
        elif find is not None:
            found = self.claim(kind, name, find())
        else:
            found = self.lookup(kind, name)
        if found is None:
            self.record(Change("create", kind.name, name))
            if self.dry_run:
                return Pending(f"{kind.name} {name}")
            entry = self.ctx.state.journal_intent(self.step, key, "create")
            created = create()
            ident = kind.ident(created)
            self.ctx.state.record_resource(self.step, key, ident, kind.arn(created))
            self.ctx.state.journal_done(entry)
            # A create call's answer often lacks what the fixes compare: they look at the
            # resource as AWS describes it now (or, while it isn't visible yet, at that answer),
            # so that nothing the create already set is written a second time.
            current = (
                (find() if find else kind.find(self.client(kind), name, self.ctx.lab))
                if fixes
                else None
            )
            self._resources[key] = current or created
            for fix in fixes(current or created) if fixes else ():
                self.fresh(fix.apply)
            return ident
        self._resources[key] = found
        ident = kind.ident(found)
        self.found.append((kind.name, name, ident))
        self.seen[key] = (ident, kind.arn(found))
        if not self.dry_run:
            self.ctx.state.record_resource(self.step, key, ident, kind.arn(found))
        for fix in fixes(found) if fixes else ():
            self.record(Change(fix.action, kind.name, name, fix.detail))
            if not self.dry_run:
                self.fresh(fix.apply)
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
        """A part of a resource (a rule, a route, a record) that is either as configured or
        gets fixed. When a parent is Pending it is part of that parent's create."""
        if is_pending(*after):
            return
        if ok:
            self.found.append((kind, name, detail))
            return
        self.record(Change(action, kind, name, detail))
        if not self.dry_run:
            self.fresh(apply)

    def delete_owned(self, kinds: Iterable[Kind], names: Iterable[tuple[Kind, str]] = ()) -> None:
        """Delete everything of these kinds tagged for this lab and step, dependents first
        (the reverse of `kinds`, which lists them in creation order). A resource with a name
        the config wants that isn't the lab's is reported and left alone."""
        kinds = list(kinds)
        for kind, name in names:
            self.lookup(kind, name)
        inventory = owned(self.ctx, self.ctx.lab, step=self.step, kinds=kinds)
        unchecked = [i for i in inventory.items if i.live is None]
        for kind in reversed(kinds):
            items = [i for i in inventory.of(kind) if i.live is not None]
            if items:
                kind.prepare(self, [i.live for i in items])
            # Every delete of a kind starts before any is waited for: they end together.
            waits: list[tuple[Item, Wait | None]] = []
            for item in items:
                kept = kind.keep(self, item.live)
                if kept:
                    self.emit("note", f"kept {kind.name} {item.label}: {kept}")
                    continue
                detail = item.id if item.label and item.label != item.id else ""
                self.record(Change("delete", kind.name, item.label or item.id, detail))
                if not self.dry_run:
                    waits.append((item, kind.delete(self, item.live)))
            self.wait_all(w for _, w in waits)
            for item, _ in waits:
                self.ctx.state.forget_id(self.step, item.id)
        problems = inventory.problems + [f"{i.kind} {i.id}: {i.note}" for i in unchecked]
        if problems:
            raise StepError("; ".join(problems), hint="run the same command again")

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
        expected: float | None = None,
    ) -> str:
        """Poll `check` until done (see `wait_all`); `expected` is how long it typically takes
        on AWS, which keeps the polls a small fraction of it."""
        return self.wait_all([Wait(what, check, timeout, expected)])[0]

    def wait_all(self, waits: Iterable[Wait | None]) -> list[str]:
        """Wait for all of them at once, each polled on its own schedule: short polls that
        back off (aws.waiters.Backoff). `ctx.poll_interval` scales the schedule: the first poll
        waits that long (0 in tests: no sleep)."""
        waits = [w for w in waits if w is not None]
        if self.dry_run or not waits:
            return [""] * len(waits)
        return wait_all(
            waits,
            backoff=Backoff(unit=self.ctx.poll_interval),
            on_wait=self.waiting,
            cancelled=self.ctx.cancelled,
        )

    def fresh(self, fn: Callable[[], Any]) -> Any:
        """A change that names ids created moments ago, retried while EC2 can't see them."""
        return self.retry(
            fn,
            codes=NEW_ID_CODES,
            reason="an id created moments ago is not visible to EC2 yet",
            timeout=NEW_ID_TIMEOUT,
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
            fn,
            codes=codes,
            reason=reason,
            timeout=timeout,
            on_wait=self.waiting,
            match=match,
            cancelled=self.ctx.cancelled,
        )


def derived(value: Any, fmt: str, what: str) -> Any:
    """A value made from an id (an ARN, a URL): Pending while the id is."""
    return Pending(what) if is_pending(value) else fmt.format(value)
