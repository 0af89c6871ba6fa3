"""CLI conventions: global options anywhere, the config found from any directory, Ctrl-C,
did-you-mean, status exit codes and summary, what `down` asks, concise counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

from msctl.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's config where the lab code is (config/lab.yaml + lab/)."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config" / "lab.yaml", tmp_path / "config" / "lab.yaml")
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    return tmp_path


@pytest.fixture
def lab(runner, project):
    """msctl run from inside the project, on its own emulator (stopped afterwards)."""
    yield project
    runner.invoke(main, ["local", "stop", "--state-dir", str(project / ".msctl")])


def test_global_options_go_before_or_after_the_command(runner, tmp_path):
    missing = tmp_path / "nope.yaml"
    for args in (["-c", str(missing), "status"], ["status", "-c", str(missing)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, args
        assert (
            result.output.strip()
            == f"Error: config file {missing} not found (pass -c/--config PATH)"
        )
    # The one after the command wins.
    result = runner.invoke(main, ["-c", "elsewhere.yaml", "plan", "-v", "-c", str(missing)])
    assert str(missing) in result.output
    assert runner.invoke(main, ["status", "-v", "--help"]).exit_code == 0


def test_the_config_is_found_from_any_directory_below_the_project(runner, project, monkeypatch):
    deep = project / "lab" / "static"
    monkeypatch.chdir(project / "config")
    found = runner.invoke(main, ["plan", "--set", "rds.instance_clas=db.t3.small"])
    assert found.exit_code == 2
    assert found.output.strip() == (
        "Error: --set rds.instance_clas: rds.instance_clas: unknown key; "
        "did you mean 'instance_class'?"
    )
    monkeypatch.chdir(deep)  # through the symlink: its parents are the lab's, not the project's
    monkeypatch.setenv("MSCTL_CONFIG", str(project / "config" / "lab.yaml"))
    assert "did you mean" in runner.invoke(main, ["plan", "--set", "vpc.nmae=x"]).output
    monkeypatch.delenv("MSCTL_CONFIG")
    monkeypatch.chdir("/")
    lost = runner.invoke(main, ["status"])
    assert lost.exit_code == 2
    assert lost.output.startswith(
        "Error: no lab config found: looked for config/lab.yaml and msctl.yaml in /"
    )


def test_ctrl_c_exits_130_and_says_how_to_finish(runner, lab, monkeypatch):
    from msctl.steps.vpc import VpcStep

    def interrupted(self, run):
        raise KeyboardInterrupt

    monkeypatch.chdir(lab)
    monkeypatch.setattr(VpcStep, "reconcile", interrupted)
    result = runner.invoke(main, ["up", "--only", "vpc"])
    assert result.exit_code == 130, result.output
    assert result.output.strip().splitlines()[-1] == (
        "Error: interrupted; run `msctl up` again to finish"
    )
    assert "Aborted" not in result.output and "Traceback" not in result.output


def test_status_exit_codes_and_summary(runner, lab, monkeypatch):
    monkeypatch.chdir(lab)
    nothing = runner.invoke(main, ["status"])
    assert nothing.exit_code == 3, nothing.output
    assert nothing.output.strip().splitlines()[-1] == (
        "nothing of lab microservices exists: the local emulator is not running "
        "(`msctl up` starts it and builds the lab)"
    )
    up = runner.invoke(main, ["up", "--only", "sg"])
    assert up.exit_code == 0, up.output
    assert "sg          ✓ complete" in up.output and "8 created" in up.output
    partial = runner.invoke(main, ["status"])
    assert partial.exit_code == 1
    assert (
        partial.output.strip()
        .splitlines()[-1]
        .startswith(
            "lab microservices: 13 of 16 steps missing or not as configured (nat, dynamodb,"
        )
    )
    assert "...and" in partial.output and "more (-v shows them)" in partial.output
    verbose = runner.invoke(main, ["status", "-v"])
    assert "more (-v shows them)" not in verbose.output
    doc = json.loads(runner.invoke(main, ["status", "--output", "json"]).output)
    assert (doc["exists"], doc["ok"]) == (True, False)
    assert all(k.isidentifier() and k == k.lower() for k in doc["endpoints"])
    down = runner.invoke(main, ["down"])  # nothing holds data: no question
    assert down.exit_code == 0, down.output
    assert "8 removed" in down.output
    gone = runner.invoke(main, ["status"])
    assert gone.exit_code == 3
    assert gone.output.strip().splitlines()[-1] == (
        "nothing of lab microservices exists; the emulator is still running "
        "(`msctl local stop` ends it)"
    )
    assert "│" not in gone.output  # no table of 15 "missing" rows


def test_down_names_the_data_it_deletes_and_asks(runner, lab, monkeypatch):
    monkeypatch.chdir(lab)
    assert runner.invoke(main, ["up", "--only", "dynamodb"]).exit_code == 0
    endpoint = json.loads((lab / ".msctl" / "emulator.json").read_text())["endpoint"]
    table = boto3.resource(
        "dynamodb",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    ).Table("microservices-users")
    for n in range(3):
        table.put_item(Item={"userId": f"u{n}"})

    monkeypatch.setattr("msctl.cli_common._interactive", lambda: True)
    declined = runner.invoke(main, ["down"], input="n\n")
    assert declined.exit_code == 2
    assert "table microservices-users: 3 item(s)" in declined.output
    assert "table microservices-sessions: 0 item(s)" in declined.output
    assert "Delete lab 'microservices' on the local emulator?" in declined.output
    assert declined.output.strip().splitlines()[-1] == "Error: cancelled; nothing was changed"
    assert table.scan(Select="COUNT")["Count"] == 3

    monkeypatch.setattr("msctl.cli_common._interactive", lambda: False)
    refused = runner.invoke(main, ["down"])
    assert refused.exit_code == 2
    assert "pass --yes to confirm" in refused.output

    done = runner.invoke(main, ["down", "--yes"])
    assert done.exit_code == 0, done.output
    assert "2 removed" in done.output


def test_plan_says_when_auto_scaling_owns_the_desired_count(runner, lab, monkeypatch):
    monkeypatch.chdir(lab)
    sets = ["--set", "ecr.images.products=public.ecr.aws/x/p:1"]
    sets += ["--set", "ecr.images.orders=public.ecr.aws/x/o:1"]
    assert runner.invoke(main, ["up", "--only", "ecs", *sets]).exit_code == 0
    plan = runner.invoke(
        main, ["plan", "--only", "ecs", *sets, "--set", "ecs.services.products.desired_count=3"]
    )
    assert plan.exit_code == 0, plan.output
    assert "auto scaling owns the count once the service exists" in plan.output
    assert plan.output.strip().splitlines()[-1] == "plan: no changes; the lab matches the config"
