"""Runs the emulator's Lambda functions for real, for the local data plane.

moto provisions functions but can only run them in Docker, so the local data plane runs
them here: each function's deployed zip is fetched, checked against the emulator's
CodeSha256, extracted into ``<work_dir>/<name>/<sha256 hex>/`` and served by a small pool
of worker processes of its own. A worker is a fresh interpreter (``python function_worker.py``,
not a multiprocessing child, so neither msctl's ``__main__`` nor anything else of the
parent is imported into it) started in the extract directory with only the function's
environment plus what the Lambda runtime sets (AWS_ENDPOINT_URL points boto3 at the
emulator). It imports the handler once and serves one invocation at a time over a
multiprocessing Connection (warm starts, like Lambda). Its stdout, stderr and logging go
to ``<work_dir>/<name>.log``, like CloudWatch Logs.

Where the zip comes from: moto 5.2 answers GetFunction with ``Code.Location`` =
``https://awslambda-<region>-tasks.s3.<region>.amazonaws.com/<name>-<uuid>``, a URL that
nothing serves (no such bucket, not even in the emulator), and ``/moto-api/data.json``
fails (500) as soon as a function exists. So the runner tries, in order: the zip it
cached for that CodeSha256; ``Code.Location`` when it is on loopback (an emulator that
serves code); ``code_source(name)``, e.g. the deterministic packager (``lab_code_source``).
Whatever it runs hashes to the CodeSha256 the emulator reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from .environment import safe_environment
from .function_code import LOOPBACK, deployed_code
from .function_pool import FunctionError, Pool, Retired

logger = logging.getLogger("msctl.functions")

CHECK_INTERVAL = 2.0  # seconds between cheap "did the function change?" checks
_KEEP_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "SYSTEMROOT")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    arn: str
    handler: str
    runtime: str
    timeout: int
    memory_mb: int
    environment: dict
    code_sha256: str


def lab_code_source(config) -> Callable[[str], bytes | None]:
    """``code_source`` packaging the lab's functions (by deployed name) like the lambda step."""
    from ..build.lambda_package import function_zip

    keys = {function.name: key for key, function in config.lambda_.functions.items()}
    return lambda name: function_zip(config, keys[name]) if name in keys else None


class FunctionRunner:
    def __init__(
        self,
        endpoint: str,
        region: str,
        work_dir: Path,
        workers_per_function: int = 2,
        code_source: Callable[[str], bytes | None] | None = None,
    ):
        self.endpoint, self.region = endpoint.rstrip("/"), region
        self.work_dir = Path(work_dir).resolve()
        self.size = max(1, workers_per_function)
        self.code_source = code_source
        self._lock = threading.Lock()
        self._pools: dict[str, Pool] = {}
        self._aliases: dict[str, str] = {}  # name or ARN -> name
        self._load_locks: dict[str, threading.Lock] = {}
        self._extract_lock = threading.Lock()
        self._client = None
        self._closed = False

    # --- specs and code ------------------------------------------------------------

    def load(self, name_or_arn: str) -> FunctionSpec:
        """Read the function from the emulator, fetch and verify its code (also a reload)."""
        return self._load(name_or_arn).spec

    def _load(self, name_or_arn: str) -> Pool:
        with self._lock:
            lock = self._load_locks.setdefault(name_or_arn, threading.Lock())
        with lock:
            found = self._call("get_function", name_or_arn)
            spec = _spec(found["Configuration"])
            if found["Configuration"].get("PackageType", "Zip") != "Zip" or not (
                spec.runtime.startswith("python")
            ):
                raise FunctionError(
                    "RuntimeError",
                    f"{spec.name}: runtime {spec.runtime} can't run locally (python zips only)",
                    "Runtime.InvalidRuntime",
                )
            root = deployed_code(
                spec, found.get("Code") or {}, self.work_dir, self.code_source, self._extract_lock
            )
            with self._lock:
                if self._closed:
                    raise FunctionError("RuntimeError", "the function runner is closed")
                for alias in (name_or_arn, spec.name, spec.arn):
                    self._aliases[alias] = spec.name
                old = self._pools.get(spec.name)
                if old is not None and old.spec == spec:
                    old.next_check = time.monotonic() + CHECK_INTERVAL
                    return old
                log = self.work_dir / f"{spec.name}.log"
                pool = Pool(spec, self._command(spec), root, self._env(spec, root), log, self.size)
                pool.next_check = time.monotonic() + CHECK_INTERVAL
                self._pools[spec.name] = pool
            if old is not None:
                old.close()
            return pool

    def _command(self, spec: FunctionSpec) -> list[str]:
        # -P: the script's directory stays off sys.path; the worker puts the task root first.
        worker = Path(__file__).resolve().with_name("function_worker.py")
        return [sys.executable, "-u", "-P", str(worker), spec.arn]

    def _env(self, spec: FunctionSpec, root: Path) -> dict[str, str]:
        no_proxy = ",".join([*LOOPBACK, urlsplit(self.endpoint).hostname or ""])
        runtime = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,  # never the user's profiles or real endpoints
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "LAMBDA_TASK_ROOT": str(root),
            "_HANDLER": spec.handler,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }
        own = {key: os.environ[key] for key in _KEEP_ENV if key in os.environ}
        chosen = safe_environment(spec.environment, f"function {spec.name}", runtime)
        return {**own, "TZ": ":UTC", **chosen, **runtime}

    # --- invocation ----------------------------------------------------------------

    def invoke(self, name_or_arn: str, event, timeout: float | None = None):
        """Run the handler on ``event``; its JSON result, or FunctionError."""
        for _ in range(10):
            pool = self._current(name_or_arn)
            try:
                worker = pool.acquire()
            except Retired:
                continue
            if worker.proc.poll() is None:
                break
            pool.release(worker, False)  # died while idle: not this request's fault
        else:
            raise FunctionError("RuntimeError", f"no worker of {name_or_arn} took the invocation")
        request_id = str(uuid.uuid4())
        limit = float(pool.spec.timeout if timeout is None else timeout)
        healthy = False
        try:
            reply = worker.call(request_id, event, limit)
            healthy = True
        except FunctionError as exc:
            exc.request_id = request_id
            if exc.kind == "Timeout":
                _append(pool.log, f"{_now()} {request_id} {exc.message}\n")
            logger.warning("function %s request %s: %s", pool.spec.name, request_id, exc)
            raise
        finally:
            pool.release(worker, healthy)
        if reply[0] == "ok":
            return json.loads(reply[1])
        _, kind, error_type, message, trace = reply
        logger.error("function %s request %s failed:\n%s", pool.spec.name, request_id, trace)
        raise FunctionError(kind, message, error_type, request_id)

    def _current(self, name_or_arn: str) -> Pool:
        with self._lock:
            if self._closed:
                raise FunctionError("RuntimeError", "the function runner is closed")
            pool = self._pools.get(self._aliases.get(name_or_arn, ""))
        if pool is not None and (
            time.monotonic() < pool.next_check or not pool.checking.acquire(blocking=False)
        ):
            return pool
        if pool is not None:  # this thread checks; the others go on with the pool meanwhile
            try:
                pool.next_check = time.monotonic() + CHECK_INTERVAL
                config = self._call("get_function_configuration", pool.spec.arn)
                if _spec(config) == pool.spec:
                    return pool
            except FunctionError as exc:
                if exc.error_type != "ResourceNotFoundException":
                    logger.warning("could not check function %s: %s", pool.spec.name, exc)
                    return pool
            finally:
                pool.checking.release()
            # Deleted or changed: never serve the old version again, even if loading fails.
            with self._lock:
                if self._pools.get(pool.spec.name) is pool:
                    del self._pools[pool.spec.name]
            pool.close()
        return self._load(name_or_arn)

    def _call(self, operation: str, name: str) -> dict:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        with self._lock:
            if self._client is None:
                self._client = boto3.session.Session().client(
                    "lambda",
                    endpoint_url=self.endpoint,
                    region_name=self.region,
                    aws_access_key_id="testing",
                    aws_secret_access_key="testing",
                    config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
                )
        try:
            return getattr(self._client, operation)(FunctionName=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            raise FunctionError("RuntimeError", f"function {name}: {exc}", code) from None
        except BotoCoreError as exc:
            message = f"cannot reach the emulator at {self.endpoint}: {exc}"
            raise FunctionError("RuntimeError", message, "EmulatorUnavailable") from None

    def warm(self, name_or_arn: str) -> None:
        """Start all the function's workers now (cold starts happen before traffic)."""
        self._current(name_or_arn).fill()

    def close(self) -> None:
        """Stop every worker (busy ones too); idempotent."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close(kill_busy=True)

    def __enter__(self) -> FunctionRunner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --- helpers ---------------------------------------------------------------------------


def _spec(config: dict) -> FunctionSpec:
    return FunctionSpec(
        name=config["FunctionName"],
        arn=config["FunctionArn"],
        handler=config.get("Handler") or "",
        runtime=config.get("Runtime") or "",
        timeout=int(config.get("Timeout") or 3),
        memory_mb=int(config.get("MemorySize") or 128),
        environment=dict((config.get("Environment") or {}).get("Variables") or {}),
        code_sha256=config.get("CodeSha256") or "",
    )


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
