"""What every state backend checks: its errors, lab names, state directories, and that
nothing stored looks like a secret."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_SECRET_MARKERS = ("password", "secret_value", "secretstring", "private_key", "token")
# Compared after lowercasing and dropping "_" / "-", so the boto3 spellings
# (ClientToken, CallerReference) pass as well as the snake_case ones.
_SECRET_ALLOWED = frozenset({"clienttoken", "callerreference"})


class StateError(Exception):
    """A user-facing state problem; ``str(e)`` is a complete one-line message."""


class StateLocked(StateError):
    """Another msctl process holds the lab's lock."""


class StateCorrupt(StateError):
    """The state file is unreadable, truncated, fails its checksum or has an unknown schema."""


def check_no_secrets(value: Any, where: str) -> None:
    """Raise ValueError if any key, at any depth, looks like it holds a secret.

    A key is refused when its lowercase name contains one of ``_SECRET_MARKERS``,
    unless it ends in ``arn`` (a secret's ARN is fine) or is an idempotency
    token name (``client_token`` / ``caller_reference``).
    """
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                name = str(key).lower()
                child_path = f"{path}.{key}"
                if (
                    any(marker in name for marker in _SECRET_MARKERS)
                    and not name.endswith("arn")
                    and name.replace("_", "").replace("-", "") not in _SECRET_ALLOWED
                ):
                    raise ValueError(
                        f"refusing to store '{child_path}' in the state file: "
                        f"key '{key}' looks like a secret; store its ARN instead"
                    )
                stack.append((child_path, child))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(item))


def check_lab_name(lab: str) -> None:
    if not lab or "/" in lab or "\0" in lab or lab.startswith("."):
        raise ValueError(f"invalid lab name for a state file: {lab!r}")


def check_state_dir(path: Path) -> None:
    """A StateError unless ``path`` is a directory or doesn't exist yet."""
    if path.is_dir() or not os.path.lexists(path):
        return
    if not path.exists():  # a symbolic link to nothing
        raise StateError(
            f"state directory {path} is a symbolic link to {os.readlink(path)}, which does "
            "not exist; create that directory or pass another --state-dir"
        )
    raise StateError(
        f"state directory {path} is not a directory; move it away or pass another --state-dir"
    )


def prepare_state_dir(path: Path) -> None:
    """Create the state directory (0700) unless it exists; a one-line StateError for one
    that can't be used (a file, a dangling symbolic link, no permission to write in it)."""
    path = Path(path)
    check_state_dir(path)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise StateError(f"cannot create state directory {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateError(
            f"cannot write in state directory {path}: permission denied; pass another --state-dir"
        )
