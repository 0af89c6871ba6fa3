"""The step contract the runner drives, and the two exceptions a step raises on purpose.

The engine knows nothing of AWS: a step is anything with these methods (the lab's steps
implement them in `msctl.steps.base`), and errors it doesn't know are described by the
context's `describe_error`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .model import Change, Check

if TYPE_CHECKING:
    from ..context import Context


class StepError(Exception):
    """A problem a step found that isn't an AWS error (ambiguous match, missing input...)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class Interrupted(StepError):
    """The user stopped the command (Ctrl-C) while this step waited."""

    def __init__(self):
        super().__init__("interrupted", hint="run the same command again to finish")


class NotSupported(Exception):
    """The target can't do this (reported as `unsupported`, never as success)."""


class Step:
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    services: ClassVar[tuple[str, ...]] = ()  # clients it needs (built up front)
    description: ClassVar[str] = ""

    def enabled(self, ctx: Context) -> bool:
        """A step switched off by config (route53 without a domain) is skipped."""
        return True

    def plan(self, ctx: Context) -> tuple[dict, list[Change]]:
        raise NotImplementedError

    def apply(self, ctx: Context) -> tuple[dict, list[Change]]:
        raise NotImplementedError

    def destroy(self, ctx: Context, dry_run: bool = False) -> list[Change]:
        raise NotImplementedError

    def check(self, ctx: Context) -> tuple[dict, list[Check]]:
        raise NotImplementedError

    def rebuild(self, ctx: Context) -> tuple[dict, list[Check]]:
        """Check what exists and record it in the state (a lost or corrupt state file)."""
        raise NotImplementedError
