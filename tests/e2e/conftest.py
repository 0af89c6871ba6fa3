"""The installed CLI, and the whole lab built with it on the local target."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
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


@dataclass
class LocalLab:
    state: Path
    up: subprocess.CompletedProcess

    def status(self) -> dict:
        return json.loads(msctl(self.state, "status", "--output", "json").stdout)


@pytest.fixture
def local_lab(tmp_path):
    """`msctl up` in a fresh state dir; afterwards the emulator and data plane are stopped,
    which drops everything they held."""
    state = tmp_path / "state"
    try:
        up = msctl(state, "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        yield LocalLab(state, up)
    finally:
        stop = local(state, "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
