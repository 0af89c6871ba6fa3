"""The local emulator: a real moto server process started, probed and stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from msctl.local import emulator
from msctl.local.emulator import EmulatorError, EmulatorInfo

HAS_PROC = Path("/proc/self/cmdline").exists()


def _alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait for a slow reaper)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    if HAS_PROC:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rpartition(")")[2].split()[0] != "Z"
    return True


def _kill_for_cleanup(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        for _ in range(100):
            if not _alive(pid):
                return
            time.sleep(0.05)


def _client(info: EmulatorInfo, service: str):
    return boto3.client(
        service,
        endpoint_url=info.endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


class Tracker:
    """Remembers every emulator pid a test saw, so teardown can reap them all."""

    def __init__(self) -> None:
        self.pids: set[int] = set()

    def add(self, info: EmulatorInfo) -> EmulatorInfo:
        self.pids.add(info.pid)
        return info


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def tracker(state_dir: Path) -> Iterator[Tracker]:
    tracker = Tracker()
    try:
        yield tracker
    finally:
        recorded = emulator.read_info(state_dir)
        emulator.stop(state_dir)
        if recorded is not None:
            tracker.pids.add(recorded.pid)
        for pid in tracker.pids:
            # Only pids this test started as emulators; stop() normally got them.
            _kill_for_cleanup(pid)


def test_lifecycle(state_dir: Path, tracker: Tracker) -> None:
    info, started_now = emulator.start(state_dir)
    tracker.add(info)
    assert started_now is True
    assert info.endpoint == f"http://127.0.0.1:{info.port}"
    assert re.fullmatch(r"[0-9a-f]{32}", info.instance_id)
    assert info.log_path == str(state_dir / "emulator.log")
    assert json.loads((state_dir / "emulator.json").read_text()) == {
        "pid": info.pid,
        "port": info.port,
        "endpoint": info.endpoint,
        "instance_id": info.instance_id,
        "started_at": info.started_at,
        "log_path": info.log_path,
    }

    assert emulator.status(state_dir) == info

    dynamodb = _client(info, "dynamodb")
    dynamodb.create_table(
        TableName="orders",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    assert dynamodb.list_tables()["TableNames"] == ["orders"]
    iam = _client(info, "iam")
    arn = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    assert iam.get_policy(PolicyArn=arn)["Policy"]["Arn"] == arn

    again, started_now = emulator.start(state_dir)
    assert started_now is False
    assert again == info

    # Same port: the running emulator. Another port: refused, not a second server.
    assert emulator.start(state_dir, port=info.port) == (info, False)
    with pytest.raises(EmulatorError, match=f"already runs on port {info.port}"):
        emulator.start(state_dir, port=emulator._free_port())

    # reset empties the world but keeps the process (and the managed policies).
    emulator.reset(info)
    assert dynamodb.list_tables()["TableNames"] == []
    assert iam.get_policy(PolicyArn=arn)["Policy"]["Arn"] == arn
    assert emulator.status(state_dir) == info

    assert emulator.stop(state_dir) is True
    assert not _alive(info.pid)
    assert emulator.status(state_dir) is None
    assert not (state_dir / "emulator.json").exists()
    assert emulator.stop(state_dir) is False


def test_stop_without_state_dir(tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    assert emulator.stop(missing) is False
    assert emulator.status(missing) is None
    assert not missing.exists()


def test_stale_record_with_dead_pid_is_replaced(state_dir: Path, tracker: Tracker) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state_dir.mkdir(parents=True)
    stale = EmulatorInfo(
        pid=dead.pid,
        port=emulator._free_port(),
        endpoint="http://127.0.0.1:1",
        instance_id="0" * 32,
        started_at="2020-01-01T00:00:00+00:00",
        log_path=str(state_dir / "emulator.log"),
    )
    (state_dir / "emulator.json").write_text(json.dumps(stale.__dict__))
    assert emulator.read_info(state_dir) == stale
    assert emulator.status(state_dir) is None

    info, started_now = emulator.start(state_dir)
    tracker.add(info)
    assert started_now is True
    assert info.instance_id != stale.instance_id
    assert info.pid != stale.pid
    assert emulator.status(state_dir) == info


def test_unreadable_record_is_ignored(state_dir: Path, tracker: Tracker) -> None:
    state_dir.mkdir(parents=True)
    (state_dir / "emulator.json").write_text("{not json")
    assert emulator.status(state_dir) is None
    info, started_now = emulator.start(state_dir)
    tracker.add(info)
    assert started_now is True
    assert emulator.status(state_dir) == info


def test_killed_emulator_is_not_running(state_dir: Path, tracker: Tracker) -> None:
    info = tracker.add(emulator.start(state_dir)[0])
    os.kill(info.pid, signal.SIGKILL)
    assert emulator.status(state_dir) is None
    assert emulator.stop(state_dir) is False
    assert not (state_dir / "emulator.json").exists()


@pytest.mark.skipif(not HAS_PROC, reason="the pid reuse guard reads /proc")
def test_recycled_pid_is_not_mistaken_for_the_emulator(state_dir: Path, tracker: Tracker) -> None:
    info = tracker.add(emulator.start(state_dir)[0])
    # The recorded pid now belongs to an unrelated process, while the recorded
    # port still answers as moto: only the cmdline check can tell.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        recycled = EmulatorInfo(**{**info.__dict__, "pid": other.pid})
        (state_dir / "emulator.json").write_text(json.dumps(recycled.__dict__))
        assert emulator.status(state_dir) is None
        assert emulator.stop(state_dir) is False
        assert other.poll() is None, "stop() must not signal a process that is not moto"
    finally:
        other.kill()
        other.wait()


def test_emulator_outlives_the_process_that_started_it(state_dir: Path, tracker: Tracker) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from msctl.local import emulator\n"
        "info, started_now = emulator.start(Path(sys.argv[1]))\n"
        "print(info.pid, started_now)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    pid_text, started_text = done.stdout.split()
    tracker.pids.add(int(pid_text))
    assert started_text == "True"

    info = emulator.status(state_dir)
    assert info is not None
    assert info.pid == int(pid_text)
    assert _client(info, "dynamodb").list_tables()["TableNames"] == []
    assert emulator.start(state_dir) == (info, False)

    assert emulator.stop(state_dir) is True
    assert not _alive(info.pid)
    assert emulator.status(state_dir) is None


def test_port_in_use_by_something_else(state_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EmulatorError, match=f"port {port} is in use"):
            emulator.start(state_dir, port=port)
    assert emulator.read_info(state_dir) is None


def test_explicit_port(state_dir: Path, tracker: Tracker) -> None:
    port = emulator._free_port()
    info, started_now = emulator.start(state_dir, port=port)
    tracker.add(info)
    assert started_now is True
    assert info.port == port
    assert emulator.status(state_dir) == info


def test_early_exit_reports_the_log_tail(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    crash = "import sys; print('first line'); print('boom: no such backend'); sys.exit(3)"
    monkeypatch.setattr(emulator, "_server_command", lambda port: [sys.executable, "-c", crash])
    with pytest.raises(EmulatorError) as caught:
        emulator.start(state_dir, port=emulator._free_port())
    message = str(caught.value)
    assert "exited with code 3" in message
    assert "first line | boom: no such backend" in message
    assert "\n" not in message
    assert emulator.read_info(state_dir) is None


def test_server_that_never_answers_is_killed(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hang = "import time; print('still booting', flush=True); time.sleep(300)"
    monkeypatch.setattr(emulator, "_server_command", lambda port: [sys.executable, "-c", hang])
    with pytest.raises(EmulatorError, match="did not answer") as caught:
        emulator.start(state_dir, timeout=1.0)
    pid = int(re.search(r"pid (\d+)", str(caught.value)).group(1))
    assert not _alive(pid)
    assert emulator.read_info(state_dir) is None


def test_server_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_PORT", "5000")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    env = emulator._server_env(tmp_path, 4567)
    assert env["MOTO_IAM_LOAD_MANAGED_POLICIES"] == "true"
    assert env["MOTO_ECS_SERVICE_RUNNING"] == "2"
    assert env["MOTO_PORT"] == "4567"
    assert env["DOCKER_HOST"].startswith("unix:///dev/null/")
    assert "DOCKER_TLS_VERIFY" not in env
    assert env["MOTO_RECORDER_FILEPATH"] == str(tmp_path / "moto_recording")
