"""What the CLI tests share: click's runner and a copy of the shipped config."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def config(tmp_path) -> Path:
    """config/lab.yaml copied into this test's own directory (its state dir goes beside it)."""
    target = tmp_path / "config" / "lab.yaml"
    target.parent.mkdir()
    shutil.copy(ROOT / "config" / "lab.yaml", target)
    return target
