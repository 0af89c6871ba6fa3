"""The CLI through click's CliRunner: exit codes, error lines, JSON output, help text."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from msctl.cli import main

ROOT = Path(__file__).resolve().parents[2]


def all_commands(group: click.Group, prefix=()):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from all_commands(command, prefix + (name,))
        else:
            yield prefix + (name,), command


def test_every_command_has_help_with_an_example(runner):
    for path, command in all_commands(main):
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, path
        assert "Example" in result.output, f"{' '.join(path)} help has no example"
        assert command.help, path


def test_missing_config_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(main, ["plan", "-c", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: config file {tmp_path / 'nope.yaml'} not found (pass -c/--config PATH)"
    ]


def test_yaml_syntax_error_names_the_line(runner, tmp_path):
    bad = tmp_path / "lab.yaml"
    bad.write_text("lab: x\nregion: [us-east-1\n")
    result = runner.invoke(main, ["up", "-c", str(bad)])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {bad}:")
    assert "YAML syntax error" in result.output
    assert "Traceback" not in result.output


def test_unknown_key_names_path_and_line(runner, config):
    text = config.read_text().replace(
        "  cidr: 10.0.0.0/16", "  cidr: 10.0.0.0/16\n  nat_gatway: typo"
    )
    config.write_text(text)
    result = runner.invoke(main, ["plan", "-c", str(config)])
    assert result.exit_code == 2
    line = next(
        i for i, text in enumerate(config.read_text().splitlines(), 1) if "nat_gatway" in text
    )
    assert f"Error: {config}:{line}: vpc.nat_gatway: unknown key" in result.output


def test_bad_set_value_is_reported_against_the_flag(runner, config):
    result = runner.invoke(main, ["plan", "-c", str(config), "--set", "rds.allocated_storage=lots"])
    assert result.exit_code == 2
    assert (
        "Error: --set rds.allocated_storage: rds.allocated_storage: Input should be a valid integer"
        in result.output
    )


def test_bad_set_syntax(runner, config):
    result = runner.invoke(main, ["plan", "-c", str(config), "--set", "novalue"])
    assert result.exit_code == 2
    assert "Error: --set novalue: expected dotted.key=value" in result.output


def test_unknown_only_step(runner, config, tmp_path):
    result = runner.invoke(
        main,
        ["plan", "-c", str(config), "--only", "vpc,nope", "--state-dir", str(tmp_path / "s")],
    )
    assert result.exit_code == 2
    assert "Error: --only: unknown step 'nope'" in result.output


def test_bad_option_value_is_usage_error(runner):
    result = runner.invoke(main, ["up", "--target", "mars"])
    assert result.exit_code == 2


def test_aws_target_without_credentials_is_a_clear_error(runner, config, monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    result = runner.invoke(
        main,
        ["plan", "-c", str(config), "--target", "aws", "--state-dir", str(tmp_path / "s")],
    )
    assert result.exit_code == 2
    assert "Error: no AWS credentials found" in result.output


def test_aws_region_must_match_the_zones(runner, config, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    result = runner.invoke(
        main,
        ["plan", "-c", str(config), "--target", "aws", "--state-dir", str(tmp_path / "s")],
    )
    assert result.exit_code == 2
    assert "are not in region eu-west-1" in result.output


def test_up_on_aws_refuses_without_confirmation_when_not_interactive(
    runner, config, monkeypatch, tmp_path
):
    from msctl import lab
    from msctl.context import Target

    monkeypatch.setattr(lab, "check_aws", lambda config: Target("aws", "us-east-1", None))
    result = runner.invoke(
        main, ["up", "-c", str(config), "--target", "aws", "--state-dir", str(tmp_path / "s")]
    )
    assert result.exit_code == 2
    assert "NAT gateway" in result.output and "USD/hour" in result.output
    assert "pass --yes to confirm" in result.output


@pytest.fixture
def local_lab(runner, config, tmp_path):
    """A lab on a real local emulator (stopped afterwards)."""
    state_dir = tmp_path / "state"
    args = ["-c", str(config), "--state-dir", str(state_dir)]
    yield args, state_dir
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])


def test_plan_up_status_down_on_the_local_target(runner, local_lab):
    args, state_dir = local_lab
    plan = runner.invoke(main, ["plan", *args, "--only", "sg", "--output", "json"])
    assert plan.exit_code == 0, plan.output
    doc = json.loads(plan.output[plan.output.index("{") :])
    assert set(doc["steps"]) == {"vpc", "sg"}
    assert {c["action"] for c in doc["steps"]["sg"]["changes"]} == {"create"}
    assert (
        not (state_dir / "microservices.json").exists()
        or json.loads((state_dir / "microservices.json").read_text())["body"]["steps"] == {}
    )

    up = runner.invoke(main, ["up", *args, "--only", "sg"])
    assert up.exit_code == 0, up.output
    assert "apply done" in up.output

    status = runner.invoke(main, ["status", *args, "--output", "json"])
    doc = json.loads(status.output)
    assert doc["steps"]["vpc"]["status"] == "nochange"
    assert doc["steps"]["sg"]["status"] == "nochange"
    assert doc["steps"]["nat"]["status"] == "absent"
    assert doc["emulator"]["running"] is True
    assert len(doc["steps"]["sg"]["resources"]) == 3

    replan = runner.invoke(main, ["plan", *args, "--only", "sg"])
    assert "no changes" in replan.output

    down = runner.invoke(main, ["down", *args])
    assert down.exit_code == 0, down.output
    assert not (state_dir / "microservices.json").exists()
    again = runner.invoke(main, ["down", *args])
    assert again.exit_code == 0
    assert "nothing to remove" in again.output


def test_second_run_on_a_locked_lab_fails_at_once(runner, local_lab):
    from msctl.state import StateStore

    args, state_dir = local_lab
    with StateStore(state_dir, "microservices").locked("up --only vpc"):
        result = runner.invoke(main, ["up", *args, "--only", "vpc"])
    assert result.exit_code == 1
    assert "Error: lab 'microservices' is locked by pid" in result.output
    assert "up --only vpc" in result.output


def test_failed_step_exits_1_and_names_it(runner, local_lab, monkeypatch):
    from msctl.steps.sg import SgStep

    def broken(self, run):
        run.clients.ec2.describe_security_groups(GroupIds=["sg-doesnotexist"])

    monkeypatch.setattr(SgStep, "reconcile", broken)
    args, _ = local_lab
    result = runner.invoke(main, ["up", *args, "--only", "sg"])
    assert result.exit_code == 1
    assert "Error: step sg failed: DescribeSecurityGroups: InvalidGroup.NotFound" in result.output
    assert "vpc" in result.output and "complete" in result.output


def test_status_notices_a_restarted_emulator_and_up_rebuilds(runner, local_lab):
    args, state_dir = local_lab
    assert runner.invoke(main, ["up", *args, "--only", "vpc"]).exit_code == 0
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])

    gone = runner.invoke(main, ["status", *args])
    assert gone.exit_code == 3  # nothing of the lab exists
    assert gone.output.splitlines()[0].startswith(
        "lab microservices on the local emulator (not running)"
    )
    assert gone.output.splitlines()[-1] == (
        "nothing of lab microservices exists: the local emulator is not running "
        "(`msctl up` starts it and builds the lab)"
    )

    assert runner.invoke(main, ["local", "start", "--state-dir", str(state_dir)]).exit_code == 0
    restarted = runner.invoke(main, ["status", *args, "--output", "json"])
    assert restarted.exit_code == 3
    doc = json.loads(restarted.output)
    assert any("emulator this lab was built on is gone" in w for w in doc["warnings"])

    rebuilt = runner.invoke(main, ["up", *args, "--only", "vpc"])
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "create vpc microservices-vpc" in rebuilt.output
    after = json.loads(runner.invoke(main, ["status", *args, "--output", "json"]).output)
    assert after["warnings"] == [] and after["steps"]["vpc"]["status"] == "nochange"
