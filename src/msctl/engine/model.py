"""Values the engine passes around: changes, checks, statuses, results and events."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

Action = Literal["create", "update", "replace", "delete"]


class Pending(str):
    """A value known only after apply (a `plan` of a resource that doesn't exist yet)."""

    def __new__(cls, what: str) -> Pending:
        return super().__new__(cls, f"(known after apply: {what})")


def is_pending(*values: object) -> bool:
    return any(isinstance(v, Pending) for v in values)


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    detail: str = ""

    def __str__(self) -> str:
        tail = f" ({self.detail})" if self.detail else ""
        return f"{self.action} {self.kind} {self.name}{tail}"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""
    # An account-wide setting the lab uses but doesn't own: it doesn't make the lab exist.
    shared: bool = False


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"  # changed something
    NOCHANGE = "nochange"  # everything already as configured
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed, or not selected
    UNSUPPORTED = "unsupported"  # the target can't do this (e.g. X-Ray on the local emulator)
    ABSENT = "absent"  # status: nothing of this step exists (never built, or removed)


@dataclass
class StepResult:
    step: str
    status: Status = Status.PENDING
    reason: str = ""
    elapsed: float = 0.0
    changes: list[Change] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    error: str = ""  # AWS error or exception text, for the report
    hint: str = ""  # what to do next
    debug: str = ""  # traceback, shown only with -v

    @property
    def ok(self) -> bool:
        return self.status in (Status.COMPLETE, Status.NOCHANGE, Status.UNSUPPORTED)


@dataclass(frozen=True)
class Event:
    """Emitted by the runner and steps; the reporter is the only consumer that prints."""

    kind: Literal["start", "wait", "change", "note", "finish"]
    step: str
    message: str = ""
    result: StepResult | None = None
