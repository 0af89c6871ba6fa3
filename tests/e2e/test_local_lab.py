"""The whole lab on the local target through the installed CLI: up, status, test-api, down."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def msctl(state_dir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = shutil.which("msctl")
    if exe is None:
        pytest.fail("msctl is not installed: pip install -e '.[test]'")
    command = [exe, *args, "-c", str(ROOT / "config" / "lab.yaml"), "--state-dir", str(state_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def local(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shutil.which("msctl"), "local", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_lab_serves_real_requests_and_leaves_nothing(tmp_path):
    state = tmp_path / "state"
    try:
        up = msctl(state, "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        assert "The lab answers at http://127.0.0.1:" in up.stdout

        status = json.loads(msctl(state, "status", "--output", "json").stdout)
        assert status["ok"], status
        assert status["endpoints"]["site (local)"].startswith("http://127.0.0.1:")

        checks = msctl(state, "test-api", "--output", "json")
        doc = json.loads(checks.stdout)
        failed = [c for c in doc["checks"] if not c["ok"]]
        assert checks.returncode == 0 and not failed, failed
        assert len(doc["checks"]) >= 25

        load = msctl(
            state,
            "test-api",
            "--load",
            "--requests",
            "200",
            "--concurrency",
            "10",
            "--output",
            "json",
        )
        summary = json.loads(load.stdout)
        assert load.returncode == 0, summary
        assert summary["status_codes"] == {"200": 200} and summary["errors"] == {}

        again = msctl(state, "up", "--output", "json")
        assert again.returncode == 0
        assert {s["status"] for s in json.loads(again.stdout)["steps"].values()} <= {
            "nochange",
            "unsupported",
        }

        down = msctl(state, "down")
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
        after = json.loads(msctl(state, "status", "--output", "json").stdout)
        assert {s["status"] for s in after["steps"].values()} <= {
            "absent",
            "nochange",
            "unsupported",
        }, after
        assert not (state / "microservices.json").exists()
    finally:
        stop = local(state, "stop")
    assert stop.returncode == 0
