"""Short-poll waiters with a hard timeout: polls that start short and back off, never
boto3's stock 15-60 s, and many waits polled together so they end at the latest one, not
at their sum."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from botocore.exceptions import ClientError

from ..engine.step import Interrupted, StepError
from .errors import ErrorKind, classify

Check = Callable[[], tuple[bool, str]]
MAX_INTERVAL = 15.0  # no poll ever waits longer, whatever the scale


class WaitTimeout(StepError):
    """A resource didn't reach the wanted state in time."""

    def __init__(self, message: str):
        super().__init__(message, hint="run the same command again to keep waiting")


@dataclass(frozen=True)
class Wait:
    """One thing to wait for: `check()` returns (done, what it sees now). `expected` is how
    long it typically takes on AWS, in seconds: its polls stay a small fraction of that."""

    what: str
    check: Check
    timeout: float
    expected: float | None = None


@dataclass(frozen=True)
class Backoff:
    """Seconds between polls: `first`, growing by `factor` up to `cap`, and never more than
    `fraction` of the wait's expected duration. Every value is in units of `unit` seconds
    (1 on AWS; a test layer that runs AWS's minutes as seconds scales it down; 0: no sleep)."""

    unit: float = 1.0
    first: float = 1.0
    factor: float = 1.5
    cap: float = 15.0
    fraction: float = 0.1

    def intervals(self, expected: float | None = None) -> Iterator[float]:
        cap = self.cap if expected is None else min(self.cap, self.fraction * expected)
        limit = min(cap * self.unit, MAX_INTERVAL)
        step = self.first * self.unit
        while True:
            yield min(step, limit)
            step *= self.factor


def wait_all(
    waits: Sequence[Wait],
    *,
    backoff: Backoff | None = None,
    interval: float | None = None,
    on_wait: Callable[[str], None] = lambda _msg: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    cancelled: threading.Event | None = None,
) -> list[str]:
    """Poll every wait's check on its own schedule until all are done; return what each
    saw last, in order. A fixed `interval` replaces the backoff.

    A throttled or eventually-consistent poll is "not yet", never success; a terminal error
    (or a StepError a check raises) propagates at once. A wait past its timeout raises
    WaitTimeout naming it and what it saw last."""
    start = clock()
    plan = backoff or Backoff()
    schedules = [
        _fixed(interval) if interval is not None else plan.intervals(w.expected) for w in waits
    ]
    seen = ["not checked yet"] * len(waits)
    due = [start] * len(waits)
    pending = set(range(len(waits)))
    while True:
        now = clock()
        for i in sorted(i for i in pending if due[i] <= now):
            done, seen[i] = _poll(waits[i].check)
            if done:
                pending.discard(i)
                continue
            if clock() - start >= waits[i].timeout:
                raise WaitTimeout(
                    f"timed out after {waits[i].timeout:.0f}s waiting for {waits[i].what} "
                    f"(last seen: {seen[i]})"
                )
            on_wait(f"waiting for {waits[i].what}: {seen[i]}")
            due[i] = clock() + next(schedules[i])
        if not pending:
            return seen
        pause = max(0.0, min(due[i] for i in pending) - clock())
        if cancelled is not None:
            if cancelled.wait(pause):
                raise Interrupted()
        elif pause > 0:
            sleep(pause)


def wait_for(
    what: str,
    check: Check,
    *,
    timeout: float,
    interval: float | None = 2.0,
    backoff: Backoff | None = None,
    expected: float | None = None,
    on_wait: Callable[[str], None] = lambda _msg: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    cancelled: threading.Event | None = None,
) -> str:
    """Poll `check` until it returns (True, detail); return the final detail. A `backoff`
    replaces the fixed `interval`."""
    (seen,) = wait_all(
        [Wait(what, check, timeout, expected)],
        backoff=backoff,
        interval=None if backoff is not None else interval,
        on_wait=on_wait,
        sleep=sleep,
        clock=clock,
        cancelled=cancelled,
    )
    return seen


def _fixed(interval: float) -> Iterator[float]:
    while True:
        yield interval


def _poll(check: Check) -> tuple[bool, str]:
    try:
        return check()
    except ClientError as exc:
        if classify(exc) is ErrorKind.TERMINAL:
            raise
        return False, f"poll answered {exc.response['Error'].get('Code')}"
