"""StateStore: the lab's state file (this module: the local backend; ``state_s3``: S3).

The state file is a *cache* of resource ids and step outputs, never the only
record of what exists (every resource is also tagged).  It is:

- versioned and checksummed: ``{"schema": 1, "checksum": "sha256:<hex>", "body": {...}}``;
  anything else is refused with :class:`StateCorrupt` and left untouched;
- written atomically (temp file in the same directory, fsync, rename, fsync dir);
- guarded by an ``flock`` on ``<lab>.lock`` so only one msctl changes a lab at a
  time; the kernel drops the lock when the holder dies, even on SIGKILL;
- thread-safe, since steps run in parallel threads;
- free of secrets: keys that look like secrets are refused (see :func:`check_no_secrets`).

:func:`open_store` picks the backend from a location: a directory or ``s3://bucket/prefix``.
Both share the document format and every method below; a backend overrides only the
storage hooks (``_fetch``, ``_store``, ``_remove``, ``_acquire``, ``_release``...).

Body layout::

    {"meta": {...},
     "steps": {step: {"resources": {logical: {"id": str, "arn": str | None}},
                      "outputs": {...}, "status": str | None, "reason": str | None,
                      "updated_at": iso}},
     "journal": [{"id", "step", "logical", "action", "token", "at", "pid"}, ...]}
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .state_checks import (  # re-exported: the state API is msctl.state
    StateCorrupt,
    StateError,
    StateLocked,
    check_lab_name,
    check_no_secrets,
    check_state_dir,
    prepare_state_dir,
)

__all__ = [
    "StateCorrupt",
    "StateError",
    "StateLocked",
    "StateStore",
    "check_lab_name",
    "check_no_secrets",
    "check_state_dir",
    "open_store",
    "prepare_state_dir",
]

SCHEMA_VERSION = 1
MAX_STATE_BYTES = 16 * 1024 * 1024  # a lab's state is a few KB: never read a huge file whole

REBUILD_HINT = (
    "run `msctl status --rebuild-state`: it moves the file aside and rebuilds the state "
    "from the lab's tags"
)


def open_store(location: str | Path, lab: str, *, client: Any = None) -> StateStore:
    """The lab's state at ``location``: a directory (the local backend) or
    ``s3://bucket/prefix`` (``client``: the boto3 S3 client to use; default: the standard
    credential chain)."""
    if isinstance(location, str) and location.startswith("s3://"):
        from .state_s3 import S3StateStore

        return S3StateStore.from_url(location, lab, client)
    if isinstance(location, str) and "://" in location:
        raise StateError(
            f"state location {location!r}: unknown scheme; use a directory or s3://BUCKET/PREFIX"
        )
    return StateStore(Path(location), lab)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _checksum(body: dict) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def encode(body: dict) -> bytes:
    """The stored document: the same bytes on every backend."""
    doc = {"schema": SCHEMA_VERSION, "checksum": _checksum(body), "body": body}
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _empty_body() -> dict:
    return {"meta": {}, "steps": {}, "journal": []}


def _new_step() -> dict:
    return {"resources": {}, "outputs": {}, "status": None, "reason": None, "updated_at": _now()}


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StateStore:
    """The state of one lab: ``state_dir/<lab>.json`` guarded by ``state_dir/<lab>.lock``."""

    def __init__(self, state_dir: Path, lab: str):
        check_lab_name(lab)
        self.state_dir = Path(state_dir)
        self.lab = lab
        self.location = str(self.state_dir)
        self.path = self.state_dir / f"{lab}.json"
        self.lock_path = self.state_dir / f"{lab}.lock"
        self._init_common()

    def _init_common(self) -> None:
        self._rlock = threading.RLock()
        self._body: dict | None = None
        # process lock bookkeeping (locked() is re-entrant per StateStore)
        self._lock_guard = threading.Lock()
        self._lock_handle: Any = None
        self._lock_depth = 0

    # ------------------------------------------------------------------ lock

    @contextmanager
    def locked(self, command: str) -> Iterator[None]:
        """Hold the lab's exclusive lock for the duration of ``command``.

        Fails at once with :class:`StateLocked` if another process holds it.
        Re-entrant within one StateStore (nested use does not re-lock).
        """
        with self._lock_guard:
            if self._lock_handle is None:
                self._lock_handle = self._acquire(command)
            self._lock_depth += 1
        try:
            yield
        finally:
            with self._lock_guard:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    handle, self._lock_handle = self._lock_handle, None
                    self._release(handle)

    def _acquire(self, command: str) -> int:
        self._ensure_dir()
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise StateError(f"cannot open lock file {self.lock_path}: {e.strerror}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._read_holder()
            raise StateLocked(
                f"lab '{self.lab}' is locked by pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')} ({holder.get('command', '?')}, started "
                f"{holder.get('started_at', '?')}); wait for it to finish or stop it"
            ) from None
        except OSError as e:
            os.close(fd)
            raise StateError(f"cannot lock {self.lock_path}: {e.strerror}") from e
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command,
            "started_at": _now(),
        }
        data = (json.dumps(info, sort_keys=True) + "\n").encode("utf-8")
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
        except OSError as e:
            self._release(fd)
            raise StateError(f"cannot write lock file {self.lock_path}: {e.strerror}") from e
        return fd

    def _release(self, fd: int | None) -> None:
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _read_holder(self) -> dict:
        # The holder writes its info right after taking the lock; if we looked in
        # between, give it a moment (bounded) rather than report "pid ?".
        for _ in range(50):
            try:
                info = json.loads(self.lock_path.read_text(encoding="utf-8"))
                if isinstance(info, dict):
                    return info
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        return {}

    # ------------------------------------------------------------ load / save

    def exists(self) -> bool:
        check_state_dir(self.state_dir)
        return self.path.exists()

    def load(self) -> None:
        """(Re)read the state file. A missing file is an empty state."""
        with self._rlock:
            self._body = None
            raw = self._fetch(MAX_STATE_BYTES + 1)
            if raw is None:
                self._body = _empty_body()
                return
            if len(raw) > MAX_STATE_BYTES:
                raise self._corrupt(f"more than {MAX_STATE_BYTES} bytes")
            self._body = self._parse(raw)

    def _fetch(self, limit: int) -> bytes | None:
        """At most ``limit`` bytes of the stored document; None when there is none."""
        check_state_dir(self.state_dir)
        try:
            with open(self.path, "rb") as fh:
                return fh.read(limit)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"cannot read state file {self.path}: {e.strerror}") from e

    def _corrupt(self, problem: str) -> StateCorrupt:
        return StateCorrupt(f"state file {self.path} is corrupt ({problem}); {REBUILD_HINT}")

    def _parse(self, raw: bytes) -> dict:
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise self._corrupt(f"not valid JSON, possibly truncated: {e}") from None
        if not isinstance(doc, dict):
            raise self._corrupt("top level is not an object")
        missing = [key for key in ("schema", "checksum", "body") if key not in doc]
        if missing:
            raise self._corrupt(f"missing key(s) {', '.join(missing)}")
        schema = doc["schema"]
        if not isinstance(schema, int) or isinstance(schema, bool):
            raise self._corrupt(f"schema is {schema!r}, not an integer")
        if schema != SCHEMA_VERSION:
            newer = " (written by a newer msctl)" if schema > SCHEMA_VERSION else ""
            raise self._corrupt(f"schema {schema}{newer}, this msctl reads schema {SCHEMA_VERSION}")
        body = doc["body"]
        if not isinstance(body, dict):
            raise self._corrupt("body is not an object")
        if doc["checksum"] != _checksum(body):
            raise self._corrupt("checksum mismatch: it was edited or partly written")
        shape = {"meta": dict, "steps": dict, "journal": list}
        for key, kind in shape.items():
            if not isinstance(body.get(key), kind):
                raise self._corrupt(f"body.{key} is missing or not a {kind.__name__}")
        for name, step in body["steps"].items():
            if not isinstance(step, dict) or not isinstance(step.get("resources"), dict):
                raise self._corrupt(f"step '{name}' is malformed")
        return body

    def _ensure_dir(self) -> None:
        prepare_state_dir(self.state_dir)

    def _loaded(self) -> dict:
        """The in-memory body, loading it on first use. Caller holds ``_rlock``."""
        if self._body is None:
            self.load()
        assert self._body is not None
        return self._body

    def _write(self, body: dict) -> None:
        self._store(encode(body))

    def _store(self, data: bytes) -> None:
        self._ensure_dir()
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=f".{self.lab}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            tmp = None
            _fsync_dir(self.state_dir)
        except OSError as e:
            raise StateError(
                f"cannot save state file {self.path}: {e.strerror or e}; the previous "
                "version is unchanged"
            ) from e
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _mutate(self, change: Callable[[dict], Any]) -> Any:
        """Apply ``change`` to a copy of the body, save it, then adopt it.

        If the save fails the in-memory state stays equal to the file on disk.
        """
        with self._rlock:
            body = copy.deepcopy(self._loaded())
            result = change(body)
            self._write(body)
            self._body = body
            return result

    @staticmethod
    def _step_for_update(body: dict, step: str) -> dict:
        entry = body["steps"].setdefault(step, _new_step())
        entry["updated_at"] = _now()
        return entry

    def _read(self, getter: Callable[[dict], Any]) -> Any:
        with self._rlock:
            return copy.deepcopy(getter(self._loaded()))

    # ------------------------------------------------------------------ meta

    def meta(self) -> dict:
        return self._read(lambda body: body["meta"])

    def set_meta(self, **values: Any) -> None:
        check_no_secrets(values, "meta")
        values = copy.deepcopy(values)
        self._mutate(lambda body: body["meta"].update(values))

    # ----------------------------------------------------------------- steps

    def steps(self) -> list[str]:
        return self._read(lambda body: sorted(body["steps"]))

    def resources(self, step: str) -> dict[str, dict]:
        return self._read(lambda body: body["steps"].get(step, {}).get("resources", {}))

    def resource_id(self, step: str, logical: str) -> str | None:
        found = self._read(lambda body: body["steps"].get(step, {}).get("resources", {}))
        entry = found.get(logical)
        return entry.get("id") if entry else None

    def record_resource(self, step: str, logical: str, id: str, arn: str | None = None) -> None:
        check_no_secrets({logical: None}, f"{step}.resources")

        def change(body: dict) -> None:
            entry = self._step_for_update(body, step)
            entry["resources"][logical] = {"id": id, "arn": arn}

        self._mutate(change)

    def forget_id(self, step: str, id: str) -> None:
        """Forget the resources recorded with this id (after their delete)."""
        with self._rlock:
            recorded = self._loaded()["steps"].get(step, {}).get("resources", {})
            keys = [k for k, entry in recorded.items() if entry.get("id") == id]
            if not keys:
                return

            def change(body: dict) -> None:
                for key in keys:
                    self._step_for_update(body, step)["resources"].pop(key, None)

            self._mutate(change)

    def outputs(self, step: str) -> dict:
        return self._read(lambda body: body["steps"].get(step, {}).get("outputs", {}))

    def set_outputs(self, step: str, outputs: dict) -> None:
        check_no_secrets(outputs, f"{step}.outputs")
        outputs = copy.deepcopy(outputs)

        def change(body: dict) -> None:
            self._step_for_update(body, step)["outputs"] = outputs

        self._mutate(change)

    def set_status(self, step: str, status: str, reason: str | None = None) -> None:
        def change(body: dict) -> None:
            entry = self._step_for_update(body, step)
            entry["status"] = status
            entry["reason"] = reason

        self._mutate(change)

    def status(self, step: str) -> tuple[str | None, str | None]:
        entry = self._read(lambda body: body["steps"].get(step, {}))
        return entry.get("status"), entry.get("reason")

    def clear_step(self, step: str) -> None:
        """Forget a step after a successful destroy, including its open journal entries."""

        def change(body: dict) -> None:
            body["steps"].pop(step, None)
            body["journal"] = [e for e in body["journal"] if e.get("step") != step]

        self._mutate(change)

    # --------------------------------------------------------------- journal

    def journal_intent(self, step: str, logical: str, action: str, token: str | None = None) -> str:
        """Record, before it happens, that ``step`` is about to ``action`` ``logical``."""
        entry = {
            "id": uuid.uuid4().hex,
            "step": step,
            "logical": logical,
            "action": action,
            "token": token,
            "at": _now(),
            "pid": os.getpid(),
        }
        self._mutate(lambda body: body["journal"].append(entry))
        return entry["id"]

    def journal_done(self, entry_id: str) -> None:
        with self._rlock:
            if not any(e.get("id") == entry_id for e in self._loaded()["journal"]):
                return

            def change(body: dict) -> None:
                body["journal"] = [e for e in body["journal"] if e.get("id") != entry_id]

            self._mutate(change)

    def open_intents(self, step: str | None = None) -> list[dict]:
        return self._read(
            lambda body: [e for e in body["journal"] if step is None or e.get("step") == step]
        )

    # ----------------------------------------------------------------- whole

    def snapshot(self) -> dict:
        return self._read(lambda body: body)

    def delete(self) -> None:
        """Remove the state file (after a complete ``down``)."""
        with self._rlock:
            self._remove()
            self._body = _empty_body()

    def _remove(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise StateError(f"cannot remove state file {self.path}: {e.strerror}") from e
        else:
            _fsync_dir(self.state_dir)

    def replace(self, body: dict) -> None:
        """Make ``body`` (another store's snapshot) this lab's whole state: push and pull."""
        check_no_secrets(body.get("meta", {}), "meta")
        for name, step in body.get("steps", {}).items():
            check_no_secrets(step.get("outputs", {}), f"{name}.outputs")
            check_no_secrets(step.get("resources", {}), f"{name}.resources")
        new = copy.deepcopy(body)

        def change(current: dict) -> None:
            current.clear()
            current.update(new)

        self._mutate(change)

    def move_aside(self) -> str | None:
        """Rename the state file to ``<name>.bak-<UTC time>`` (never deleted): where it went,
        or None when there was none."""
        with self._rlock:
            self._body = None
            if not self.path.exists():
                return None
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            backup = self.path.with_name(f"{self.path.name}.bak-{stamp}")
            n = 1
            while backup.exists():
                n += 1
                backup = self.path.with_name(f"{self.path.name}.bak-{stamp}-{n}")
            try:
                os.replace(self.path, backup)
            except OSError as e:
                raise StateError(
                    f"cannot move the state file {self.path} aside: {e.strerror}"
                ) from None
            return str(backup)

    def unlock(self, lock_id: str) -> dict:
        """Only remote locks can outlive their holder: the kernel drops this one with it."""
        raise StateError(
            f"the state of lab '{self.lab}' is in the directory {self.state_dir}, whose lock is "
            "released by the system when its holder ends: there is no lock to remove (pass "
            "--state s3://BUCKET/PREFIX for a lab kept in S3)"
        )
