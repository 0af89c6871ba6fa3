"""The local AWS emulator: moto in server mode on loopback, outliving the command.

``start`` spawns ``python -m moto.server`` in its own session (so it survives the
msctl process and a Ctrl-C in the terminal), waits until it answers, and records
it in ``<state_dir>/emulator.json``. ``status`` trusts that record only when the
pid is alive, is really a moto server on the recorded port (pid reuse guard), and
answers HTTP. ``stop`` terminates the process group and forgets the record.

Environment given to the server on top of ``os.environ`` (see ``_server_env``):

- ``MOTO_IAM_LOAD_MANAGED_POLICIES=true``: AWS-managed IAM policies such as
  ``service-role/AWSLambdaBasicExecutionRole`` exist only with it.
- ``MOTO_ECS_SERVICE_RUNNING=2``: moto reports ``runningCount`` from this value
  when a service is created (otherwise 0, and ``services_stable`` never passes);
  ``update_service(desiredCount=N)`` sets ``runningCount`` to N.
- ``DOCKER_HOST`` pointing at a path that cannot exist (and the Docker TLS
  variables removed): moto's Lambda (and Batch) run handlers in Docker
  containers, pulling images first. From a loopback-bound server that can never
  work (the container cannot reach 127.0.0.1 of the host) and an image pull can
  take minutes, so Docker is made to fail at once: ``Invoke`` answers a function
  error "error running docker: ..." instead of hanging. The local data plane runs
  the handlers itself. Switching moto to ``{"lambda": {"use_docker": false}}``
  is not done: that backend is a separate store which the resource groups
  tagging API does not read, so Lambda functions would vanish from discovery.
- ``MOTO_PORT``: the real port, in case the caller's environment has another one
  (moto only sets it when absent; Lambda uses it to build endpoints).
- ``MOTO_RECORDER_FILEPATH``: keeps a recording (``/moto-api/recorder/*``) in the
  state directory instead of the server's working directory.
- ``PYTHONUNBUFFERED=1``: the log shows output as it happens, so the tail quoted
  in start errors is complete.

The server also runs with the state directory as its working directory, so it
never holds or writes into the directory msctl was started from.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HOST = "127.0.0.1"
STATE_FILE = "emulator.json"
LOG_FILE = "emulator.log"
LOCK_FILE = "emulator.lock"

# GET answers a tiny JSON document ({"batch": ..., "lambda": ...}) that only moto
# serves: cheap, side-effect free, and it tells moto apart from any other server.
_PROBE_PATH = "/moto-api/config"
_POLL_INTERVAL = 0.1
_STATUS_PROBE_TIMEOUT = 1.0
# Before declaring a recorded, live moto process hung and replacing it.
_START_PROBE_TIMEOUT = 5.0
_KILL_WAIT = 5.0
_LOG_TAIL_LINES = 5
_PORT_ATTEMPTS = 3
# A path below a regular file can never be a socket: Docker fails immediately.
_NO_DOCKER_HOST = "unix:///dev/null/msctl-docker-disabled.sock"

# Loopback must never go through an HTTP(S)_PROXY from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Servers spawned by this process, kept so they are reaped (no zombies, no
# "subprocess still running" warnings) and so stop() can wait() on them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class EmulatorError(Exception):
    """A user-facing, one-line problem with the local emulator."""


@dataclass(frozen=True)
class EmulatorInfo:
    pid: int
    port: int
    endpoint: str
    instance_id: str
    started_at: str
    log_path: str


def start(
    state_dir: Path, port: int | None = None, timeout: float = 30.0
) -> tuple[EmulatorInfo, bool]:
    """Return the running emulator, starting one if needed; ``(info, started_now)``."""
    state_dir = Path(state_dir)
    with _locked(state_dir):
        existing = read_info(state_dir)
        if existing is not None and _is_moto_process(existing.pid, existing.port):
            if _probe(existing.port, _START_PROBE_TIMEOUT):
                if port is not None and port != existing.port:
                    raise EmulatorError(
                        f"the emulator already runs on port {existing.port} "
                        f"(pid {existing.pid}); stop it before starting on port {port}"
                    )
                return existing, False
            # Alive but not answering: its state is unreachable, and starting a
            # second server next to it would leak it.
            _terminate(existing.pid, _KILL_WAIT)
        (state_dir / STATE_FILE).unlink(missing_ok=True)

        if port is not None and not _port_free(port):
            raise EmulatorError(
                f"port {port} is in use by another program; free it or choose another port"
            )
        attempts = 1 if port is not None else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else _free_port()
            try:
                info = _spawn(state_dir, chosen, timeout)
            except EmulatorError:
                # A free port found by bind(0) can be taken before moto binds it.
                if port is None and attempt < attempts and not _port_free(chosen):
                    continue
                raise
            try:
                _write_info(state_dir / STATE_FILE, info)
            except BaseException:
                _terminate(info.pid, _KILL_WAIT)
                raise
            return info, True
    raise AssertionError("unreachable")  # pragma: no cover


def status(state_dir: Path) -> EmulatorInfo | None:
    """The recorded emulator if it is alive, really moto, and answering; else None.

    A record that exists but fails these checks is stale: ``read_info`` still
    returns it, so ``read_info(d) is not None and status(d) is None`` means stale.
    """
    info = read_info(Path(state_dir))
    if info is None:
        return None
    if _is_moto_process(info.pid, info.port) and _probe(info.port, _STATUS_PROBE_TIMEOUT):
        return info
    return None


def stop(state_dir: Path, timeout: float = 10.0) -> bool:
    """Stop the recorded emulator and forget it; True if a process was stopped."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return False
    with _locked(state_dir):
        info = read_info(state_dir)
        stopped = False
        if info is not None and _is_moto_process(info.pid, info.port):
            _terminate(info.pid, timeout)
            stopped = True
        (state_dir / STATE_FILE).unlink(missing_ok=True)
        return stopped


def reset(info: EmulatorInfo) -> None:
    """Empty every service of the emulator (``POST /moto-api/reset``).

    The process, and so ``instance_id``, stays the same.
    """
    request = urllib.request.Request(f"{info.endpoint}/moto-api/reset", data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=10.0) as response:
            response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise EmulatorError(f"could not reset the emulator at {info.endpoint}: {exc}") from exc


def read_info(state_dir: Path) -> EmulatorInfo | None:
    """The recorded emulator, without checking it; None if absent or unreadable."""
    try:
        data = json.loads((Path(state_dir) / STATE_FILE).read_text(encoding="utf-8"))
        return EmulatorInfo(
            pid=int(data["pid"]),
            port=int(data["port"]),
            endpoint=str(data["endpoint"]),
            instance_id=str(data["instance_id"]),
            started_at=str(data["started_at"]),
            log_path=str(data["log_path"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


# --- spawning ---------------------------------------------------------------


def _server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]


def _server_env(state_dir: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        env.pop(name, None)
    env.update(
        {
            "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
            "MOTO_ECS_SERVICE_RUNNING": "2",
            # ACM issues DNS-validated certificates after 60 s by default; the lab does not wait.
            "MOTO_ACM_VALIDATION_WAIT": "0",
            "DOCKER_HOST": _NO_DOCKER_HOST,
            "MOTO_PORT": str(port),
            "MOTO_RECORDER_FILEPATH": str(state_dir / "moto_recording"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def _spawn(state_dir: Path, port: int, timeout: float) -> EmulatorInfo:
    log_path = state_dir / LOG_FILE
    endpoint = f"http://{HOST}:{port}"
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with open(log_path, "ab") as log:
        log.write(f"--- msctl: {started_at} starting moto server on {endpoint}\n".encode())
        log.flush()
        offset = log.tell()
        try:
            proc = subprocess.Popen(
                _server_command(port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_server_env(state_dir, port),
                cwd=state_dir,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise EmulatorError(f"could not start the emulator: {exc}") from exc
    _CHILDREN[proc.pid] = proc

    deadline = time.monotonic() + timeout
    try:
        while True:
            code = proc.poll()
            if code is not None:
                _CHILDREN.pop(proc.pid, None)
                raise EmulatorError(
                    f"the emulator exited with code {code} before answering on {endpoint}"
                    f"{_log_tail(log_path, offset)}"
                )
            if _probe(port, _STATUS_PROBE_TIMEOUT):
                break
            if time.monotonic() >= deadline:
                raise EmulatorError(
                    f"the emulator (pid {proc.pid}) did not answer on {endpoint} "
                    f"within {timeout:g} s{_log_tail(log_path, offset)}"
                )
            time.sleep(_POLL_INTERVAL)
    except BaseException:
        # Timeout, Ctrl-C, anything: never leave an unrecorded server behind.
        if proc.poll() is None:
            _terminate(proc.pid, _KILL_WAIT, sig=signal.SIGKILL)
        raise

    return EmulatorInfo(
        pid=proc.pid,
        port=port,
        endpoint=endpoint,
        instance_id=uuid.uuid4().hex,
        started_at=started_at,
        log_path=str(log_path),
    )


def _write_info(path: Path, info: EmulatorInfo) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(asdict(info), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _log_tail(log_path: Path, offset: int) -> str:
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return f" (log {log_path} is empty)"
    return f"; last log lines ({log_path}): " + " | ".join(lines[-_LOG_TAIL_LINES:])


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    """Serialise start/stop between concurrent msctl processes."""
    from ..state import prepare_state_dir  # one error line for a file, a dangling link...

    prepare_state_dir(state_dir)
    with open(state_dir / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- ports and HTTP ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_free(port: int) -> bool:
    """Whether moto could bind the port (it sets SO_REUSEADDR too)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _probe(port: int, timeout: float) -> bool:
    """Whether a moto server answers on the port within ``timeout`` seconds."""
    try:
        with _OPENER.open(f"http://{HOST}:{port}{_PROBE_PATH}", timeout=timeout) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, http.client.HTTPException):
        return False
    return isinstance(body, dict) and "lambda" in body


# --- processes --------------------------------------------------------------


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None and proc.poll() is not None:
        del _CHILDREN[pid]


def _pid_exists(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _is_moto_process(pid: int, port: int) -> bool:
    """Alive, ours to signal, and (where /proc exists) a moto server on ``port``."""
    if pid <= 0:
        return False
    _reap(pid)
    try:
        os.kill(pid, 0)
    except OSError:
        return False  # gone, or not ours to signal: not our emulator either way
    if not Path("/proc/self").exists():
        return True
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return False
    # A zombie has an empty cmdline; a recycled pid has someone else's.
    return any("moto" in arg for arg in args) and str(port) in args


def _gone(pid: int) -> bool:
    return not _pid_exists(pid) or _is_zombie(pid)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise EmulatorError(f"not allowed to stop the emulator (pid {pid}): {exc}") from exc


def _wait_gone(pid: int, timeout: float) -> bool:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        _CHILDREN.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _terminate(pid: int, timeout: float, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the process group, then SIGKILL it if it outlives ``timeout``."""
    if sig != signal.SIGKILL:
        _signal_group(pid, sig)
        if _wait_gone(pid, timeout):
            return
    _signal_group(pid, signal.SIGKILL)
    if not _wait_gone(pid, _KILL_WAIT):
        raise EmulatorError(f"the emulator (pid {pid}) did not exit after SIGKILL")


# --- shared with the data plane, which manages its process the same way ---------


def adopt_child(process: subprocess.Popen) -> None:
    """Track a background child of ours so it is reaped (no zombie) when it stops."""
    _CHILDREN[process.pid] = process


terminate_group = _terminate
write_record = _write_info
