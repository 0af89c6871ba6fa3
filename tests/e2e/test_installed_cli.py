"""The installed `msctl` as a user runs it, on the local target."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def msctl(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("msctl")
    if exe is None:
        pytest.fail("msctl is not installed: pip install -e '.[test]'")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_up_status_down_stop(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    try:
        up = msctl(tmp_path, "up", "--only", "sg")
        assert up.returncode == 0, up.stdout + up.stderr
        assert "started the local emulator" in up.stderr

        status = msctl(tmp_path, "status", "--output", "json")
        doc = json.loads(status.stdout)
        assert doc["target"]["name"] == "local"
        assert doc["steps"]["sg"]["status"] == "nochange"
        assert set(doc["steps"]["sg"]["resources"]) == {
            "security-group:microservices-alb-sg",
            "security-group:microservices-ecs-sg",
            "security-group:microservices-rds-sg",
        }

        down = msctl(tmp_path, "down")
        assert down.returncode == 0, down.stdout + down.stderr
        assert not (tmp_path / ".msctl" / "microservices.json").exists()
    finally:
        stop = msctl(tmp_path, "local", "stop")
    assert stop.returncode == 0
    assert "emulator stopped" in stop.stdout
    after = msctl(tmp_path, "local", "status")
    assert after.returncode == 1
