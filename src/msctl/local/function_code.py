"""The deployed code of a function: fetched, checked against the emulator's CodeSha256 and
extracted once into ``<work_dir>/<name>/<sha256 hex>/`` (see functions.py for the sources)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from .function_pool import FunctionError

FETCH_TIMEOUT = 10.0
_DONE = ".msctl-extracted"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def deployed_code(
    spec,
    code: dict,
    work_dir: Path,
    code_source: Callable[[str], bytes | None] | None,
    lock: threading.Lock,
) -> Path:
    """The extract directory of ``spec``'s code, from the first source whose zip hashes to
    its CodeSha256 (written to the cache and extracted under ``lock``); else FunctionError."""
    digest = base64.b64decode(spec.code_sha256).hex()
    folder = work_dir / spec.name
    root, cached = folder / digest, folder / f"{digest}.zip"
    sources: list[tuple[str, Callable[[], bytes | None]]] = []
    if cached.is_file():
        sources.append(("the cached zip", cached.read_bytes))
    problems = []
    location = code.get("Location") or ""
    if urlsplit(location).hostname in LOOPBACK:
        sources.append((f"Code.Location {location}", lambda: _fetch(location)))
    elif location:  # moto's: a made-up S3 URL; never send local traffic to the internet
        problems.append(f"Code.Location {location} is not served by the emulator")
    if code_source is not None:
        sources.append(("the local package", lambda: code_source(spec.name)))
    for label, get in sources:
        try:
            data = get()
        except Exception as exc:  # noqa: BLE001 - any failure means "not available"
            problems.append(f"{label} can't be read ({exc})")
            continue
        if data is None:
            problems.append(f"{label} is not available")
        elif (got := _sha256(data)) != spec.code_sha256:
            problems.append(f"{label} has CodeSha256 {got}")
            if label == "the cached zip":
                cached.unlink(missing_ok=True)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            with lock:
                if label != "the cached zip":
                    _write_atomic(cached, data)
                _extract(data, root)
            return root
    raise FunctionError(
        "RuntimeError",
        f"deployed code for {spec.name} is not available or doesn't match its CodeSha256 "
        f"{spec.code_sha256}: {'; '.join(problems) or 'no code source'}; run msctl up",
        "Runtime.CodeNotAvailable",
    )


def _sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def _fetch(url: str) -> bytes:
    with _OPENER.open(url, timeout=FETCH_TIMEOUT) as response:
        return response.read()


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _extract(data: bytes, root: Path) -> None:
    """Extract into ``root`` once (a marker says it is complete); refuse unsafe names."""
    if (root / _DONE).is_file():
        return
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise FunctionError("RuntimeError", f"deployed code is not a zip: {exc}") from None
    for name in archive.namelist():
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
            raise FunctionError("RuntimeError", f"deployed zip has an unsafe entry {name!r}")
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".extract-"))
    try:
        archive.extractall(tmp)
        (tmp / _DONE).touch()
        if (root / _DONE).is_file():  # another msctl process was quicker
            return
        with contextlib.suppress(OSError):
            shutil.rmtree(root)  # an incomplete earlier attempt
        os.rename(tmp, root)
    except OSError:
        if not (root / _DONE).is_file():  # else another runner won the race
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
