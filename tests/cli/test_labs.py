"""Many labs on the local target: the quota preflight refusing `up` when the emulated quota
is full, `up`/`down` --labs, `msctl labs` and the cost in `msctl status`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest

from msctl.cli import main
from msctl.local import emulator

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def local_lab(runner, tmp_path):
    """The project's config on a fresh local emulator (stopped afterwards)."""
    config = tmp_path / "config" / "lab.yaml"
    config.parent.mkdir()
    shutil.copy(ROOT / "config" / "lab.yaml", config)
    (tmp_path / "lab").symlink_to(ROOT / "lab")
    state_dir = tmp_path / "state"
    assert runner.invoke(main, ["local", "start", "--state-dir", str(state_dir)]).exit_code == 0
    yield ["-c", str(config), "--state-dir", str(state_dir)], state_dir
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])


def aws(state_dir: Path, service: str):
    return boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url=emulator.status(state_dir).endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def as_json(result) -> dict:
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_up_refuses_and_creates_nothing_when_the_elastic_ips_are_all_in_use(runner, local_lab):
    args, state_dir = local_lab
    ec2 = aws(state_dir, "ec2")
    for _ in range(5):
        ec2.allocate_address(Domain="vpc")

    up = runner.invoke(main, ["up", *args])
    assert up.exit_code == 1, up.output
    assert (
        "Error: region us-east-1 has 5 of 5 Elastic IPs in use; the lab needs 1 more: release "
        "one or request an increase (Service Quotas code L-0263D0A3)"
    ) in up.output
    assert (
        "quota preflight: the local emulator has no quotas; checked against AWS's documented "
        "defaults" in up.output
    )
    tagged = aws(state_dir, "resourcegroupstaggingapi").get_resources(
        TagFilters=[{"Key": "msctl:lab"}]
    )["ResourceTagMappingList"]
    assert tagged == []
    assert ec2.describe_vpcs(Filters=[{"Name": "tag-key", "Values": ["msctl:lab"]}])["Vpcs"] == []
    assert len(ec2.describe_addresses()["Addresses"]) == 5

    ec2.release_address(AllocationId=ec2.describe_addresses()["Addresses"][0]["AllocationId"])
    assert runner.invoke(main, ["up", *args, "--only", "nat"]).exit_code == 0


def test_labs_from_one_config_listed_with_their_costs_and_removed_together(runner, local_lab):
    args, state_dir = local_lab
    up = runner.invoke(main, ["up", *args, "--labs", "alice,bob", "--only", "nat"])
    assert up.exit_code == 0, up.output
    assert "✓ alice: apply done (" in up.output and "✓ bob: apply done (" in up.output
    assert "2 labs: 2 built" in up.output

    doc = as_json(runner.invoke(main, ["labs", *args, "--output", "json"]))
    assert [(lab["name"], lab["status"]) for lab in doc["labs"]] == [
        ("alice", "partial"),
        ("bob", "partial"),
    ]
    for lab in doc["labs"]:
        assert lab["hourly_usd"] == pytest.approx(0.045 + 0.005), lab  # NAT gateway + its IP
        assert lab["cost_so_far_usd"] is not None and lab["found_in"] == ["tags"]
    assert doc["prices"]["source"] == "built-in table"
    table = runner.invoke(main, ["labs", *args])
    assert table.exit_code == 0, table.output
    assert "2 lab(s), about $0.1000/hour in all" in table.output
    assert "prices: built-in table (Price List API unreachable: " in table.output
    assert "cost so far: the hourly cost of what exists now" in table.output

    status = runner.invoke(main, ["status", *args, "--set", "lab=alice", "--output", "json"])
    cost = json.loads(status.output)["cost"]
    assert cost["hourly_usd"] == pytest.approx(0.05) and cost["cost_so_far_usd"] is not None
    assert cost["prices"]["label"].startswith("prices: built-in table")
    shown = runner.invoke(main, ["status", *args, "--set", "lab=alice"])
    assert "cost: about $0.0500/hour, about $0.00 so far (an estimate, since " in shown.output

    down = runner.invoke(main, ["down", *args, "--labs", "alice,bob", "--yes"])
    assert down.exit_code == 0, down.output
    assert "✓ alice: destroy done (" in down.output and "nothing of it remains" in down.output
    assert "2 labs: 2 removed" in down.output
    assert as_json(runner.invoke(main, ["labs", *args, "--output", "json"]))["labs"] == []


def test_a_class_built_and_removed_side_by_side_leaves_the_account_as_found(runner, local_lab):
    """Three whole labs up and down in parallel: their downs list the same services while
    the others delete (a resource gone between listing and reading is skipped), and the
    region's API Gateway logging setting, held by one lab's role, is handed on one lab at a
    time and finally reset: no role, no setting left."""
    args, state_dir = local_lab
    up = runner.invoke(main, ["up", *args, "--labs", "alice,bob,carol", "--yes"])
    assert up.exit_code == 0, up.output
    apigw, iam = aws(state_dir, "apigateway"), aws(state_dir, "iam")
    holder = apigw.get_account()["cloudwatchRoleArn"]
    assert holder.rsplit("/", 1)[-1] in {
        f"{n}-apigateway-cloudwatch" for n in ("alice", "bob", "carol")
    }

    down = runner.invoke(main, ["down", *args, "--labs", "alice,bob,carol", "--yes"])
    assert down.exit_code == 0, down.output
    assert "3 labs: 3 removed" in down.output
    assert not apigw.get_account().get("cloudwatchRoleArn")
    assert iam.list_roles()["Roles"] == []
    assert as_json(runner.invoke(main, ["labs", *args, "--output", "json"]))["labs"] == []


def test_one_failed_lab_fails_the_command_and_the_others_still_run(runner, local_lab, monkeypatch):
    from msctl.steps.vpc import VpcStep

    reconcile = VpcStep.reconcile

    def broken_for_bob(self, run):
        if run.ctx.lab == "bob":
            raise RuntimeError("bob's VPC can't be built")
        return reconcile(self, run)

    monkeypatch.setattr(VpcStep, "reconcile", broken_for_bob)
    args, _ = local_lab
    up = runner.invoke(
        main, ["up", *args, "--labs", "alice,bob,carol", "--only", "vpc", "--output", "json"]
    )
    assert up.exit_code == 1, up.output
    doc = json.loads(up.output[up.output.index("{") :])
    assert {name: lab["ok"] for name, lab in doc["labs"].items()} == {
        "alice": True,
        "bob": False,
        "carol": True,
    }
    assert "bob's VPC can't be built" in doc["labs"]["bob"]["summary"]


def test_bad_labs_and_state_options_are_usage_errors(runner, local_lab):
    args, _ = local_lab
    bad = runner.invoke(main, ["up", *args, "--labs", "alice,Bob_2"])
    assert bad.exit_code == 2 and "--set lab: lab: 'Bob_2' is not a valid name" in bad.output
    empty = runner.invoke(main, ["down", *args, "--labs", " , "])
    assert empty.exit_code == 2 and "--labs: give one or more lab names" in empty.output
    state = runner.invoke(main, ["status", *args, "--state", "ftp://x"])
    assert state.exit_code == 2, state.output
    assert "Error: --state ftp://x: " in state.output
