"""Bounded retries for eventual-consistency errors (throttling is botocore's job)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from botocore.exceptions import ClientError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_random_exponential

from ..engine.step import Interrupted
from .errors import error_code

T = TypeVar("T")


def sleep(seconds: float) -> None:
    """How a retry waits between attempts. Tests that inject many faults replace it with a
    scaled-down sleep (the schedule, exponential with jitter and bounded by `timeout`,
    stays the same)."""
    time.sleep(seconds)


def retry_eventual(
    fn: Callable[[], T],
    *,
    codes: tuple[str, ...],
    reason: str,
    timeout: float = 60.0,
    on_wait: Callable[[str], None] = lambda _msg: None,
    max_wait: float = 5.0,
    match: Callable[[ClientError], bool] = lambda _exc: True,
    cancelled: threading.Event | None = None,
) -> T:
    """Call fn, retrying only the named error codes for up to `timeout` seconds.

    `reason` says why the error is expected to clear (shown while waiting);
    `match` narrows a broad code (InvalidParameterValueException) to the message that means it.
    """

    def expected(exc: BaseException) -> bool:
        return isinstance(exc, ClientError) and error_code(exc) in codes and match(exc)

    def pause(seconds: float) -> None:
        if cancelled is not None and cancelled.is_set():
            raise Interrupted()
        sleep(seconds)

    def before_sleep(state) -> None:
        code = error_code(state.outcome.exception())
        on_wait(f"{reason} (retrying {code}, attempt {state.attempt_number})")

    retrying = Retrying(
        retry=retry_if_exception(expected),
        stop=stop_after_delay(timeout),
        wait=wait_random_exponential(multiplier=0.5, max=max_wait),
        before_sleep=before_sleep,
        sleep=pause,
        reraise=True,
    )
    return retrying(fn)
