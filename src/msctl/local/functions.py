"""Runs the emulator's Lambda functions for real, for the local data plane.

moto provisions functions but can only run them in Docker, so the local data plane runs
them here: each function's deployed zip is fetched, checked against the emulator's
CodeSha256, extracted into ``<work_dir>/<name>/<sha256 hex>/`` and served by a small pool
of worker processes of its own. A worker is a fresh interpreter (``python functions.py``,
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

import base64
import contextlib
import hashlib
import importlib
import io
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

logger = logging.getLogger("msctl.functions")

CHECK_INTERVAL = 2.0  # seconds between cheap "did the function change?" checks
INIT_TIMEOUT = 30.0  # interpreter start + handler import (Lambda allows 10 s of init)
FETCH_TIMEOUT = 10.0
KILL_WAIT = 5.0
ORPHAN_GRACE = 5.0  # a worker kills itself this long after its deadline
_DONE = ".msctl-extracted"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
_KEEP_ENV = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LD_LIBRARY_PATH", "SYSTEMROOT")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FunctionError(Exception):
    """kind: "Unhandled" (the handler raised), "Timeout", or "RuntimeError"."""

    def __init__(self, kind: str, message: str, error_type: str | None = None, request_id=None):
        super().__init__(message)
        self.kind, self.message = kind, message
        self.error_type = error_type or kind
        self.request_id = request_id


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
        self._pools: dict[str, _Pool] = {}
        self._aliases: dict[str, str] = {}  # name or ARN -> name
        self._load_locks: dict[str, threading.Lock] = {}
        self._extract_lock = threading.Lock()
        self._client = None
        self._closed = False

    # --- specs and code ------------------------------------------------------------

    def load(self, name_or_arn: str) -> FunctionSpec:
        """Read the function from the emulator, fetch and verify its code (also a reload)."""
        return self._load(name_or_arn).spec

    def _load(self, name_or_arn: str) -> _Pool:
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
            root = self._code(spec, found.get("Code") or {})
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
                pool = _Pool(spec, self._command(spec), root, self._env(spec, root), log, self.size)
                self._pools[spec.name] = pool
            if old is not None:
                old.close()
            return pool

    def _code(self, spec: FunctionSpec, code: dict) -> Path:
        digest = base64.b64decode(spec.code_sha256).hex()
        folder = self.work_dir / spec.name
        root, cached = folder / digest, folder / f"{digest}.zip"
        sources: list[tuple[str, Callable[[], bytes | None]]] = []
        if cached.is_file():
            sources.append(("the cached zip", cached.read_bytes))
        problems = []
        location = code.get("Location") or ""
        if urlsplit(location).hostname in _LOOPBACK:
            sources.append((f"Code.Location {location}", lambda: _fetch(location)))
        elif location:  # moto's: a made-up S3 URL; never send local traffic to the internet
            problems.append(f"Code.Location {location} is not served by the emulator")
        if self.code_source is not None:
            sources.append(("the local package", lambda: self.code_source(spec.name)))
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
                with self._extract_lock:
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

    def _command(self, spec: FunctionSpec) -> list[str]:
        # -P: this file's directory stays off sys.path; the worker puts the task root first.
        return [sys.executable, "-u", "-P", str(Path(__file__).resolve()), spec.arn]

    def _env(self, spec: FunctionSpec, root: Path) -> dict[str, str]:
        no_proxy = ",".join([*_LOOPBACK, urlsplit(self.endpoint).hostname or ""])
        env = {key: os.environ[key] for key in _KEEP_ENV if key in os.environ}
        env.update({"TZ": ":UTC", **spec.environment})
        env.update(
            {
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
        )
        return env

    # --- invocation ----------------------------------------------------------------

    def invoke(self, name_or_arn: str, event, timeout: float | None = None):
        """Run the handler on ``event``; its JSON result, or FunctionError."""
        for _ in range(10):
            pool = self._current(name_or_arn)
            try:
                worker = pool.acquire()
            except _Retired:
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

    def _current(self, name_or_arn: str) -> _Pool:
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


class _Retired(Exception):
    """The pool was replaced (redeployed function) or closed: take the current one."""


class _Pool:
    """Up to ``size`` workers of one function version; started on demand."""

    def __init__(self, spec, command, root, env, log, size):
        self.spec, self.command, self.root, self.env, self.log = spec, command, root, env, log
        self.size, self.started, self.closed = size, 0, False
        self.idle: list[_Worker] = []
        self.workers: set[_Worker] = set()
        self.cond = threading.Condition()
        self.checking = threading.Lock()
        self.next_check = time.monotonic() + CHECK_INTERVAL

    def acquire(self) -> _Worker:
        with self.cond:
            while not self.idle and self.started >= self.size and not self.closed:
                self.cond.wait()
            if self.closed:
                raise _Retired
            if self.idle:
                return self.idle.pop()  # the most recently used: warm
            self.started += 1
        return self._start()

    def release(self, worker: _Worker, healthy: bool) -> None:
        if healthy:
            with self.cond:
                if not self.closed:
                    self.idle.append(worker)
                    self.cond.notify()
                    return
        worker.stop()
        with self.cond:
            self.workers.discard(worker)
            self.started -= 1
            replace = not self.closed
            self.cond.notify()
        if replace:  # start the fresh worker now, so it is warm for the next call
            with self.cond:
                self.started += 1
            with contextlib.suppress(FunctionError, _Retired):
                self.release(self._start(), True)

    def fill(self) -> None:
        with self.cond:
            missing = 0 if self.closed else self.size - self.started
            self.started += missing
        with contextlib.suppress(_Retired):
            for _ in range(missing):
                self.release(self._start(), True)

    def _start(self) -> _Worker:
        try:
            worker = _Worker(self)
        except BaseException:
            with self.cond:
                self.started -= 1
                self.cond.notify()
            raise
        with self.cond:
            if not self.closed:
                self.workers.add(worker)
                return worker
            self.started -= 1
        worker.stop()  # closed while it started: close() could not see it
        raise _Retired

    def close(self, kill_busy: bool = False) -> None:
        with self.cond:
            self.closed = True
            idle, self.idle = self.idle, []
            busy = [w for w in self.workers if w not in idle] if kill_busy else []
            self.cond.notify_all()
        for worker in idle:
            worker.stop()
        for worker in busy:  # the invoking thread sees EOF, then stop()s it itself
            worker.kill()


class _Worker:
    def __init__(self, pool: _Pool):
        self.conn, child = Pipe()
        env = dict(pool.env, AWS_LAMBDA_LOG_STREAM_NAME=_log_stream())
        try:
            with open(pool.log, "ab") as log:
                self.proc = subprocess.Popen(
                    [*pool.command, str(child.fileno())],
                    cwd=pool.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    pass_fds=(child.fileno(),),
                    start_new_session=True,  # a Ctrl-C in the terminal is the parent's to handle
                )
        except OSError as exc:
            self.conn.close()
            raise FunctionError("RuntimeError", f"cannot start a worker: {exc}") from None
        finally:
            child.close()
        self.ready = False

    def call(self, request_id: str, event, limit: float) -> tuple:
        if not self.ready:
            if not self.conn.poll(INIT_TIMEOUT):
                raise FunctionError("Timeout", f"Init timed out after {INIT_TIMEOUT:.2f} seconds")
            self._recv()
            self.ready = True
        try:
            self.conn.send((request_id, event, time.time() + limit))
        except OSError:
            self._recv()  # raises the exit error
        if not self.conn.poll(limit):
            raise FunctionError("Timeout", f"Task timed out after {limit:.2f} seconds")
        return self._recv()

    def _recv(self) -> tuple:
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            try:
                code = self.proc.wait(KILL_WAIT)
            except subprocess.TimeoutExpired:
                code = None
            message = f"Runtime exited with error: {_exit_status(code)}"
            raise FunctionError("RuntimeError", message, "Runtime.ExitError") from None

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(KILL_WAIT)

    def stop(self) -> None:
        self.kill()
        self.conn.close()


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


def _exit_status(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"signal: {signal.Signals(-code).name}"
        return f"signal: {-code}"
    return f"exit status {code}"


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


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError), open(path, "a", encoding="utf-8") as fh:
        fh.write(text)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _log_stream() -> str:
    return f"{datetime.now(UTC):%Y/%m/%d}/[$LATEST]{uuid.uuid4().hex}"


# --- the worker process (runs as a script: `python functions.py <arn> <fd>`) ----------

_request_id = ""


class _Context:
    def __init__(self, request_id: str, deadline: float, arn: str):
        env = os.environ
        self.aws_request_id = request_id
        self.function_name = env["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = env["AWS_LAMBDA_FUNCTION_VERSION"]
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]  # a str in Lambda too
        self.log_group_name = env["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = env["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def _json_default(value):
    if isinstance(value, Decimal):  # the Lambda runtime writes Decimals as numbers
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _setup_logging() -> None:
    class RequestId(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id
            return True

    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
        "%Y-%m-%dT%H:%M:%S",
    )
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(RequestId())
    logging.getLogger().handlers = [handler]


def _load_handler(spec: str):
    module_name, _, attr = spec.rpartition(".")
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except Exception as exc:
        error = ("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
        return None, error
    func = getattr(module, attr, None)
    if not callable(func):
        return None, ("Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{module_name}'")  # fmt: skip
    return func, None


def _worker_main(arn: str, fd: int) -> None:
    global _request_id
    sys.path.insert(0, os.getcwd())  # LAMBDA_TASK_ROOT
    time.tzset()
    conn = Connection(fd)
    _setup_logging()
    func, init_error = _load_handler(os.environ["_HANDLER"])
    if init_error:
        print(f"[ERROR] {init_error[0]}: {init_error[1]}", file=sys.stderr)
    conn.send(("ready",))
    memory = os.environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
    while True:
        try:
            request_id, event, deadline = conn.recv()
        except (EOFError, OSError):
            return
        _request_id = request_id
        if init_error:
            conn.send(("error", "RuntimeError", *init_error, init_error[1]))
            continue
        sys.stdout.write(f"START RequestId: {request_id} Version: $LATEST\n")
        started = time.perf_counter()
        # Backstop: if msctl dies mid-invocation nobody kills a stuck handler but SIGALRM.
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0) + ORPHAN_GRACE)
        try:
            result = func(event, _Context(request_id, deadline, arn))
            try:
                reply = ("ok", json.dumps(result, default=_json_default))
            except (TypeError, ValueError) as exc:
                message = f"Unable to marshal response: {exc}"
                reply = ("error", "RuntimeError", "Runtime.MarshalError", message, message)
        except Exception as exc:
            trace = traceback.format_exc()
            sys.stderr.write(f"[ERROR] {type(exc).__name__}: {exc}\n{trace}")
            reply = ("error", "Unhandled", type(exc).__name__, str(exc), trace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        took = (time.perf_counter() - started) * 1000
        used = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        sys.stdout.write(
            f"END RequestId: {request_id}\nREPORT RequestId: {request_id}\tDuration: {took:.2f} ms"
            f"\tBilled Duration: {int(took) + 1} ms\tMemory Size: {memory} MB"
            f"\tMax Memory Used: {used} MB\n"
        )
        conn.send(reply)


if __name__ == "__main__":
    _worker_main(sys.argv[1], int(sys.argv[2]))
