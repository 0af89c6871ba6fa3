"""A corrupt state file: every command stops with the way out, and
`msctl status --rebuild-state` moves it aside and rebuilds it from the lab's tags."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msctl.cli import main

ROOT = Path(__file__).resolve().parents[2]
WAY_OUT = "msctl status --rebuild-state"


@pytest.fixture
def local_lab(runner, tmp_path):
    """The shipped config (its sources resolve) and a state dir of this test's own; the
    local emulator is stopped afterwards."""
    state_dir = tmp_path / "state"
    yield ["-c", str(ROOT / "config" / "lab.yaml"), "--state-dir", str(state_dir)], state_dir
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])


def body(state_file: Path) -> dict:
    return json.loads(state_file.read_text())["body"]


def test_a_truncated_state_is_refused_then_rebuilt_from_tags(runner, local_lab):
    args, state_dir = local_lab
    up = runner.invoke(main, ["up", *args, "--only", "sg"])
    assert up.exit_code == 0, up.output
    state_file = state_dir / "microservices.json"
    before = body(state_file)
    built = {name: before["steps"][name]["resources"] for name in ("vpc", "sg")}
    assert len(built["vpc"]) == 8 and len(built["sg"]) == 3
    shown = runner.invoke(main, ["status", *args, "--output", "json"])
    statuses = {n: s["status"] for n, s in json.loads(shown.output)["steps"].items()}

    raw = state_file.read_bytes()
    state_file.write_bytes(raw[: len(raw) // 2])  # a write cut short

    for command in (["status"], ["plan"], ["up", "--only", "sg"], ["down"]):
        refused = runner.invoke(main, [*command, *args])
        assert refused.exit_code == 1, (command, refused.output)
        assert "Traceback" not in refused.output
        lines = refused.output.strip().splitlines()
        assert lines[-1].startswith("Error: state file ") and "is corrupt" in lines[-1]
        assert WAY_OUT in lines[-1]
    assert state_file.read_bytes() == raw[: len(raw) // 2]  # refused, left untouched

    rebuilt = runner.invoke(main, ["status", *args, "--rebuild-state"])
    assert rebuilt.exit_code == shown.exit_code, rebuilt.output  # a partial lab: 1 both times
    assert "Traceback" not in rebuilt.output
    assert "rebuilt the state from the lab's tags: 11 resource(s) in 2 step(s)" in rebuilt.output
    backups = list(state_dir.glob("microservices.json.bak-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == raw[: len(raw) // 2]
    assert f"moved the old state file aside to {backups[0]}" in rebuilt.output

    after = body(state_file)
    assert {name: after["steps"][name]["resources"] for name in ("vpc", "sg")} == built
    again = json.loads(runner.invoke(main, ["status", *args, "--output", "json"]).output)
    assert {n: s["status"] for n, s in again["steps"].items()} == statuses
    for name in ("vpc", "sg"):
        assert after["steps"][name]["outputs"] == before["steps"][name]["outputs"]
    assert after["meta"]["emulator_id"] == before["meta"]["emulator_id"]
    # Steps never built have nothing recorded (no half-known outputs).
    assert set(after["steps"]) == {"vpc", "sg"}

    # The rebuilt state is a normal state: plan sees the lab as built, down removes it.
    replan = runner.invoke(main, ["plan", *args, "--only", "sg"])
    assert replan.exit_code == 0 and "no changes" in replan.output, replan.output
    down = runner.invoke(main, ["down", *args])
    assert down.exit_code == 0, down.output
    assert not state_file.exists() and backups[0].exists()


def test_rebuild_keeps_outputs_out_when_a_resource_is_missing(runner, local_lab):
    """nat built, then its NAT gateway deleted behind msctl's back: the EIP is recorded, the
    step's outputs (which would name a NAT gateway still to be created) are not."""
    import boto3

    args, state_dir = local_lab
    assert runner.invoke(main, ["up", *args, "--only", "nat"]).exit_code == 0
    state_file = state_dir / "microservices.json"
    before = body(state_file)
    endpoint = before["meta"]["endpoint"]
    ec2 = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ec2.delete_nat_gateway(NatGatewayId=before["steps"]["nat"]["outputs"]["nat_gateway_id"])
    state_file.write_text("{not json")

    rebuilt = runner.invoke(main, ["status", *args, "--rebuild-state", "--output", "json"])
    assert rebuilt.exit_code == 1  # the lab isn't as configured: status says so
    doc = json.loads(rebuilt.output)
    assert doc["rebuilt"]["steps"]["nat"] == {
        "resources": 1,
        "outputs": False,
        "missing": 2,  # the NAT gateway and its route
        "error": None,
    }
    after = body(state_file)
    assert after["steps"]["nat"]["resources"] == {
        "elastic-ip:microservices-nat-eip": before["steps"]["nat"]["resources"][
            "elastic-ip:microservices-nat-eip"
        ]
    }
    assert after["steps"]["nat"]["outputs"] == {}
    assert after["steps"]["nat"]["status"] == "failed"
    assert after["steps"]["vpc"]["outputs"] == before["steps"]["vpc"]["outputs"]
