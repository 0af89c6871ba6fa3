"""Short-poll waiters: seconds between polls, not boto3's 15-60 s, with a hard timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from botocore.exceptions import ClientError

from ..engine.step import Interrupted, StepError
from .errors import ErrorKind, classify


class WaitTimeout(StepError):
    """A resource didn't reach the wanted state in time."""

    def __init__(self, message: str):
        super().__init__(message, hint="run the same command again to keep waiting")


def wait_for(
    what: str,
    check: Callable[[], tuple[bool, str]],
    *,
    timeout: float,
    interval: float = 2.0,
    on_wait: Callable[[str], None] = lambda _msg: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    cancelled: threading.Event | None = None,
) -> str:
    """Poll `check` until it returns (True, detail); return the final detail.

    `check` returns (done, what it sees now). A throttled or eventually-consistent poll is
    treated as "not yet", never as success; a terminal error propagates at once.
    """
    deadline = clock() + timeout
    seen = "not checked yet"
    while True:
        try:
            done, seen = check()
        except ClientError as exc:
            if classify(exc) is ErrorKind.TERMINAL:
                raise
            done, seen = False, f"poll answered {exc.response['Error'].get('Code')}"
        if done:
            return seen
        if clock() >= deadline:
            raise WaitTimeout(
                f"timed out after {timeout:.0f}s waiting for {what} (last seen: {seen})"
            )
        on_wait(f"waiting for {what}: {seen}")
        if cancelled is not None:
            if cancelled.wait(interval):
                raise Interrupted()
        else:
            sleep(interval)
