"""Deterministic zips of the lab's Lambda functions.

A function's zip holds its source directory (lab/functions/<key>/: handler.py, ...) plus the
shared modules (lab/functions/_shared/: labcommon.py, ...), all at the zip root so a handler
can `import labcommon`. Entries are sorted, timestamps and permissions fixed and caches
skipped, so the same source always gives the same bytes, hence the same CodeSha256, and a
re-run updates nothing. Used by the lambda step and the local data plane.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from pathlib import Path

SHARED_SOURCE = Path("lab/functions/_shared")
HANDLER_FILE = "handler.py"
FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can hold
FILE_MODE = 0o644
COMPRESS_LEVEL = 9
SKIP_DIRS = frozenset({"__pycache__"})
SKIP_SUFFIXES = (".pyc", ".pyo")


class PackageError(Exception):
    """The function's source can't be packaged (missing directory, clashing file names)."""


def package_files(source: Path, shared: Path | None = None) -> dict[str, Path]:
    """Zip entry name -> file, for the function's source and the shared modules."""
    source = Path(source)
    if not source.is_dir():
        raise PackageError(f"function source {source} is not a directory")
    files = _walk(source)
    if HANDLER_FILE not in files:
        raise PackageError(f"function source {source} has no {HANDLER_FILE}")
    if shared is not None:
        shared = Path(shared)
        if not shared.is_dir():
            raise PackageError(f"shared function code {shared} is not a directory")
        for name, path in _walk(shared).items():
            if name in files:
                raise PackageError(
                    f"{source / name} and {path} would both be {name} in the zip; rename one"
                )
            files[name] = path
    return dict(sorted(files.items()))


def build_zip(source: Path, shared: Path | None = None) -> bytes:
    """The function's zip: the same source gives the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in package_files(source, shared).items():
            info = zipfile.ZipInfo(name, date_time=FIXED_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # unix, so external_attr holds the mode
            info.external_attr = (0o100000 | FILE_MODE) << 16
            archive.writestr(info, path.read_bytes(), compresslevel=COMPRESS_LEVEL)
    return buffer.getvalue()


def code_sha256(data: bytes) -> str:
    """What Lambda reports as CodeSha256: base64 of the zip's SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def function_zip(config, key: str) -> bytes:
    """The zip of config lambda.functions.<key>, paths resolved against the project."""
    function = config.lambda_.functions[key]
    return build_zip(config.path(function.source), config.path(SHARED_SOURCE))


def _walk(root: Path) -> dict[str, Path]:
    files = {}
    for path in root.rglob("*"):
        parts = path.relative_to(root).parts
        if any(p in SKIP_DIRS or p.startswith(".") for p in parts):
            continue
        if path.is_file() and not path.name.endswith(SKIP_SUFFIXES):
            files["/".join(parts)] = path
    return files
