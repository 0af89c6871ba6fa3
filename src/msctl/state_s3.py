"""The S3 state backend: ``s3://bucket/prefix`` holds ``<prefix>/<lab>.json`` and
``<prefix>/<lab>.lock``.

- The state object is the local file's document, byte for byte. It is written with
  ``If-Match: <the ETag it was read with>`` (``If-None-Match: *`` when there was none), so a
  writer that read an older version is refused instead of losing someone else's update.
- The lock is a separate object created with ``If-None-Match: *``; its body names the holder
  (user@host, pid, command, time) and a lock id. Nothing removes it when its holder is
  killed: ``msctl state unlock LOCK_ID`` does, and only when the id matches.
- Deletes (the lock on release, the state after ``down``) carry ``If-Match`` too, so they
  remove exactly what this process read or wrote.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import socket
import uuid
from contextlib import closing
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .aws.errors import describe, error_code
from .state import StateStore, _now
from .state_checks import StateError, StateLocked, check_lab_name

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = ("NoSuchKey", "404", "NotFound")
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict")


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix without surrounding slashes)."""
    rest = url.removeprefix("s3://") if url.startswith("s3://") else None
    bucket, _, prefix = (rest or "").partition("/")
    if rest is None or not _BUCKET.match(bucket) or ".." in bucket:
        raise StateError(
            f"state location {url!r} is not s3://BUCKET/PREFIX with a valid bucket name "
            "(3-63 lowercase letters, digits, dots and hyphens)"
        )
    return bucket, prefix.strip("/")


def client_for(target) -> Any:
    """An S3 client for a target (context.Target): the local emulator or AWS's chain."""
    from .aws.clients import CLIENT_CONFIG
    from .context import make_session

    endpoint = target.endpoint if target.is_local else None
    return make_session(target).client("s3", endpoint_url=endpoint, config=CLIENT_CONFIG)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return f"uid{os.getuid()}"


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return True  # can't tell: never call it stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class S3StateStore(StateStore):
    """The state of one lab in S3; the StateStore API with S3 storage and an S3 lock."""

    def __init__(self, bucket: str, prefix: str, lab: str, client: Any):
        check_lab_name(lab)
        self.bucket, self.prefix, self.lab, self.client = bucket, prefix, lab, client
        base = f"{prefix}/" if prefix else ""
        self.key, self.lock_key = f"{base}{lab}.json", f"{base}{lab}.lock"
        self.location = f"s3://{bucket}/{prefix}".rstrip("/")
        self.path = f"s3://{bucket}/{self.key}"
        self.lock_path = f"s3://{bucket}/{self.lock_key}"
        self._etag: str | None = None  # of the version last read or written
        self._init_common()

    @classmethod
    def from_url(cls, url: str, lab: str, client: Any = None) -> S3StateStore:
        bucket, prefix = parse_url(url)
        if client is None:
            import boto3

            from .aws.clients import CLIENT_CONFIG

            client = boto3.client("s3", config=CLIENT_CONFIG)
        return cls(bucket, prefix, lab, client)

    # -------------------------------------------------------------- errors

    def _fail(self, doing: str, exc: Exception) -> StateError:
        if error_code(exc) == "NoSuchBucket":
            return StateError(
                f"cannot {doing}: bucket {self.bucket} does not exist; create it with "
                f"`msctl state init s3://{self.bucket}/{self.prefix}`"
            )
        text, hint = describe(exc)
        return StateError(f"cannot {doing}: {text}" + (f"; {hint}" if hint else ""))

    def _call(self, doing: str, operation: str, missing_ok: bool = False, **kwargs) -> Any:
        """One S3 call; None for a missing object when ``missing_ok``; conflicts propagate."""
        try:
            return getattr(self.client, operation)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            if missing_ok and error_code(exc) in _MISSING:
                return None
            if error_code(exc) in _CONFLICT:
                raise
            raise self._fail(doing, exc) from None
        except BotoCoreError as exc:
            raise self._fail(doing, exc) from None

    def _conflict(self) -> StateError:
        return StateError(
            f"the state {self.path} was changed by another msctl since this one read it; "
            "nothing was overwritten: run the command again"
        )

    # --------------------------------------------------------- state object

    def exists(self) -> bool:
        return (
            self._call(f"read {self.path}", "head_object", missing_ok=True, Key=self.key)
            is not None
        )

    def _fetch(self, limit: int) -> bytes | None:
        got = self._call(f"read the state {self.path}", "get_object", missing_ok=True, Key=self.key)
        if got is None:
            self._etag = None
            return None
        self._etag = got["ETag"]
        with closing(got["Body"]) as body:
            return body.read(limit)

    def _store(self, data: bytes) -> None:
        condition = {"IfMatch": self._etag} if self._etag else {"IfNoneMatch": "*"}
        try:
            put = self._call(
                f"save the state {self.path}",
                "put_object",
                missing_ok=bool(self._etag),  # If-Match on an object since deleted: 404
                Key=self.key,
                Body=data,
                ContentType="application/json",
                **condition,
            )
        except ClientError:
            put = None
        if put is None:
            raise self._conflict()
        self._etag = put["ETag"]

    def _remove(self) -> None:
        if self._etag is None:
            head = self._call(f"read {self.path}", "head_object", missing_ok=True, Key=self.key)
            if head is None:
                return
            self._etag = head["ETag"]
        try:
            self._call(
                f"remove the state {self.path}",
                "delete_object",
                missing_ok=True,
                Key=self.key,
                IfMatch=self._etag,
            )
        except ClientError:
            raise self._conflict() from None
        self._etag = None

    def move_aside(self) -> str | None:
        with self._rlock:
            self._body = None
            if not self.exists():
                return None
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
            backup = f"{self.key}.bak-{stamp}-{uuid.uuid4().hex[:6]}"
            source = {"Bucket": self.bucket, "Key": self.key}
            self._call(f"copy {self.path} aside", "copy_object", Key=backup, CopySource=source)
            self._etag = None
            self._remove()
            return f"s3://{self.bucket}/{backup}"

    # ----------------------------------------------------------------- lock

    def _acquire(self, command: str) -> tuple[str, str]:
        host = socket.gethostname()
        info = {
            "id": str(uuid.uuid4()),
            "holder": f"{_user()}@{host}",
            "host": host,
            "pid": os.getpid(),
            "command": command,
            "started_at": _now(),
        }
        body = (json.dumps(info, sort_keys=True) + "\n").encode("utf-8")
        for _ in range(3):  # a holder may release between our refused create and our read
            try:
                put = self._call(
                    f"create the lock {self.lock_path}",
                    "put_object",
                    Key=self.lock_key,
                    Body=body,
                    ContentType="application/json",
                    IfNoneMatch="*",
                )
                return info["id"], put["ETag"]
            except ClientError:
                held = self.lock_info()
                if held is not None:
                    raise StateLocked(self._locked_message(held)) from None
        raise StateLocked(
            f"lab '{self.lab}': the lock {self.lock_path} keeps changing hands; try again"
        )

    def _release(self, handle: tuple[str, str] | None) -> None:
        if handle is None:
            return
        lock_id, etag = handle
        try:
            self._call(
                "remove the lock", "delete_object", missing_ok=True, Key=self.lock_key, IfMatch=etag
            )
        except ClientError:
            pass  # no longer ours: someone ran `state unlock` and another command took it
        except StateError as exc:
            raise StateError(
                f"{exc}; the lock {self.lock_path} remains: once no msctl works on lab "
                f"'{self.lab}', remove it with `msctl state unlock {lock_id} --state {self.location}`"
            ) from None

    def lock_info(self) -> dict | None:
        """The lock's holder as recorded in it, None when the lab is not locked."""
        got = self._call(
            f"read the lock {self.lock_path}", "get_object", missing_ok=True, Key=self.lock_key
        )
        if got is None:
            return None
        with closing(got["Body"]) as body:
            raw = body.read(64 * 1024)
        try:
            info = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            info = None
        info = info if isinstance(info, dict) else {"id": None}
        info["etag"] = got["ETag"]
        return info

    def _locked_message(self, held: dict) -> str:
        lock_id = held.get("id")
        if not lock_id:
            return (
                f"lab '{self.lab}' is locked by an object msctl can't read, {self.lock_path}; "
                f"if no msctl works on the lab, delete it (aws s3 rm {self.lock_path})"
            )
        stale = held.get("host") == socket.gethostname() and not _alive(held.get("pid"))
        advice = (
            "that process no longer runs on this host, so the lock is stale: remove it with"
            if stale
            else "wait for it to finish; if it no longer runs, remove the stale lock with"
        )
        return (
            f"lab '{self.lab}' is locked by {held.get('holder', '?')} (pid {held.get('pid', '?')}, "
            f"{held.get('command', '?')}, started {held.get('started_at', '?')}, lock id "
            f"{lock_id}); {advice} `msctl state unlock {lock_id} --state {self.location}`"
        )

    def unlock(self, lock_id: str) -> dict:
        """Remove the lab's lock if its id is ``lock_id``; the removed lock's holder."""
        held = self.lock_info()
        if held is None:
            raise StateError(f"lab '{self.lab}' is not locked ({self.lock_path} does not exist)")
        if held.get("id") != lock_id:
            raise StateError(
                f"the lock of lab '{self.lab}' has id {held.get('id')}, not {lock_id}: it is held "
                f"by {held.get('holder', '?')} (pid {held.get('pid', '?')}, "
                f"{held.get('command', '?')}, started {held.get('started_at', '?')}); nothing removed"
            )
        try:
            self._call("remove the lock", "delete_object", Key=self.lock_key, IfMatch=held["etag"])
        except ClientError:
            raise StateError(
                f"the lock of lab '{self.lab}' changed while it was being removed; nothing removed"
            ) from None
        held.pop("etag", None)
        return held
