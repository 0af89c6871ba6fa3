"""A container image built from a service's source without Docker, byte for byte reproducible.

Used on the local target, where the emulator stores images but never runs them: one gzip'd
tar layer holding the source under /app, an image config (what would run: the Dockerfile's
CMD, ENV, USER, the port) and a Docker v2 schema 2 manifest naming both by digest. The same
source always gives the same bytes, so the same digests. It carries no Python runtime and no
dependencies: it is not an image to run on Fargate; on AWS the ecr step uses `docker build`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shlex
import tarfile
from dataclasses import dataclass
from pathlib import Path

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"
APP_DIR = "app"  # files go under /app, the image's working directory
SKIP_DIRS = frozenset({"__pycache__", ".pytest_cache"})
SKIP_SUFFIXES = (".pyc",)


def source_files(root: Path) -> list[tuple[str, Path]]:
    """Every file of a service's source as (relative posix path, path), sorted by that path;
    caches (__pycache__, .pytest_cache, *.pyc) left out."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"service source {root} is not a directory")
    files = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part in SKIP_DIRS for part in rel.parts) or path.name.endswith(SKIP_SUFFIXES):
            continue
        if path.is_file():
            files.append((rel.as_posix(), path))
    return sorted(files)


def source_hash(path: Path) -> str:
    """First 16 hex digits of sha256 over every source file's relative path and bytes
    (in path order; caches left out): the same source gives the same hash anywhere."""
    h = hashlib.sha256()
    for rel, file in source_files(path):
        data = file.read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()[:16]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageBlobs:
    layer: bytes  # gzip'd tar
    config: bytes  # image config JSON
    manifest: bytes  # Docker v2 schema 2 manifest JSON

    @property
    def layer_digest(self) -> str:
        return digest(self.layer)

    @property
    def config_digest(self) -> str:
        return digest(self.config)

    @property
    def manifest_digest(self) -> str:
        return digest(self.manifest)


def build_image(source: Path, port: int) -> ImageBlobs:
    files = source_files(source)
    tar = _layer_tar(files)
    layer = gzip.compress(tar, compresslevel=9, mtime=0)
    dockerfile = Path(source) / "Dockerfile"
    settings = (
        parse_dockerfile(dockerfile.read_text(encoding="utf-8")) if dockerfile.is_file() else {}
    )
    config = _canonical(image_config(settings, port, digest(tar)))
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {
                "mediaType": CONFIG_MEDIA_TYPE,
                "size": len(config),
                "digest": digest(config),
            },
            "layers": [
                {"mediaType": LAYER_MEDIA_TYPE, "size": len(layer), "digest": digest(layer)}
            ],
        }
    )
    return ImageBlobs(layer=layer, config=config, manifest=manifest)


def _canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def _layer_tar(files: list[tuple[str, Path]]) -> bytes:
    """An uncompressed tar of the files under app/: sorted entries, parent directories first,
    mtime 0, root-owned, modes normalised (0755 directories and executables, 0644 files)."""
    buffer = io.BytesIO()
    seen_dirs: set[str] = set()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in files:
            parts = f"{APP_DIR}/{rel}".split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in seen_dirs:
                    seen_dirs.add(directory)
                    tar.addfile(_entry(directory + "/", tarfile.DIRTYPE, 0o755, 0))
            data = path.read_bytes()
            mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
            tar.addfile(_entry("/".join(parts), tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def _entry(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def image_config(settings: dict, port: int, diff_id: str) -> dict:
    container: dict = {
        "WorkingDir": "/" + APP_DIR,
        "ExposedPorts": {f"{port}/tcp": {}},
    }
    for key in ("Entrypoint", "Cmd", "Env", "User"):
        if settings.get(key):
            container[key] = settings[key]
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": container,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }


# ---------------------------------------------------------------- Dockerfile


def parse_dockerfile(text: str) -> dict:
    """What the image config can take from a Dockerfile: CMD and ENTRYPOINT (exec or shell
    form), simple ENV lines and USER. Anything it can't parse is left out, not guessed."""
    settings: dict = {}
    env: dict[str, str] = {}
    for instruction, args in _instructions(text):
        if instruction in ("CMD", "ENTRYPOINT"):
            command = _command(args)
            if command is not None:
                settings["Cmd" if instruction == "CMD" else "Entrypoint"] = command
        elif instruction == "ENV":
            env.update(_env(args))
        elif instruction == "USER" and args:
            settings["User"] = args
    if env:
        settings["Env"] = [f"{k}={v}" for k, v in env.items()]
    return settings


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1].strip() + " "
            continue
        current += line
        if current.strip():
            head, _, rest = current.strip().partition(" ")
            result.append((head.upper(), rest.strip()))
        current = ""
    if current.strip():
        head, _, rest = current.strip().partition(" ")
        result.append((head.upper(), rest.strip()))
    return result


def _command(args: str) -> list[str] | None:
    if args.startswith("["):
        try:
            value = json.loads(args)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return None
    return ["/bin/sh", "-c", args] if args else None


def _env(args: str) -> dict[str, str]:
    if "$" in args:  # variable expansion: not simple, left out
        return {}
    try:
        words = shlex.split(args)
    except ValueError:
        return {}
    if words and all("=" in w for w in words):
        return dict(w.split("=", 1) for w in words)
    if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV KEY value with spaces`
        return {words[0]: " ".join(words[1:])}
    return {}
