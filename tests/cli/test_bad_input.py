"""Bad input gives one `Error:` line and an exit code, never a traceback or a full memory:
an endless or huge config, a state dir that is a file or a dangling symbolic link."""

from __future__ import annotations

from pathlib import Path

import pytest

from msctl.cli import main
from msctl.config.loading import MAX_CONFIG_BYTES

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", [["plan"], ["up"], ["status"]])
def test_an_endless_config_is_refused_after_the_limit(runner, command):
    result = runner.invoke(main, [*command, "-c", "/dev/zero"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: /dev/zero: more than {MAX_CONFIG_BYTES} bytes is far more than a lab config; "
        "is this the right file?"
    ]


FILE = "is not a directory; move it away or pass another --state-dir"
LINK = "is a symbolic link to {gone}, which does not exist; create that directory or pass another --state-dir"  # fmt: skip


@pytest.mark.parametrize(
    ("make", "problem"),
    [(lambda d: d.write_text("x"), FILE), (lambda d: d.symlink_to(d.parent / "gone"), LINK)],
    ids=["file", "dangling-link"],
)
@pytest.mark.parametrize(
    "command", [["status"], ["down", "--yes"], ["plan"], ["up"], ["local", "start"]]
)
def test_an_unusable_state_dir_is_one_error_line(runner, config, tmp_path, make, problem, command):
    state_dir = tmp_path / "state"
    make(state_dir)
    result = runner.invoke(main, [*command, "-c", str(config), "--state-dir", str(state_dir)])
    assert result.exit_code == 1
    problem = problem.format(gone=tmp_path / "gone")
    assert result.output.splitlines() == [f"Error: state directory {state_dir} {problem}"]
    assert not (tmp_path / "gone").exists()


@pytest.mark.parametrize("make", [lambda d: d.write_text("x"), lambda d: d.symlink_to(d / "x")])
def test_local_stop_with_an_unusable_state_dir_stops_nothing(runner, tmp_path, make):
    state_dir = tmp_path / "state"
    make(state_dir)
    result = runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])
    assert (result.exit_code, result.output) == (0, "emulator was not running\n")


@pytest.mark.parametrize("why", ["locked", "corrupt"])
def test_a_refused_down_changes_nothing(runner, config, tmp_path, monkeypatch, why):
    """`down` refused (another msctl holds the lab, or its state is corrupt) leaves the local
    data plane serving: it is stopped only once the lab is really being taken down."""
    from msctl.local import dataplane
    from msctl.state import StateStore

    state_dir = tmp_path / "state"
    args = ["-c", str(config), "--state-dir", str(state_dir)]
    assert runner.invoke(main, ["local", "start", "--state-dir", str(state_dir)]).exit_code == 0
    try:
        stopped = []
        monkeypatch.setattr(dataplane, "stop", lambda *a, **k: stopped.append(a) or True)
        store = StateStore(state_dir, "microservices")
        if why == "corrupt":
            assert runner.invoke(main, ["up", "--only", "vpc", *args]).exit_code == 0
            store.path.write_bytes(store.path.read_bytes()[:40])
            result = runner.invoke(main, ["down", "--yes", *args])
        else:
            with store.locked("up"):
                result = runner.invoke(main, ["down", "--yes", *args])
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        assert stopped == []
    finally:
        runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])
