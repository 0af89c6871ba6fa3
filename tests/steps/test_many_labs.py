"""Many labs in one account (moto): names from the lab's name make `--set lab=x` a complete,
independent lab; `down` of one leaves the other whole; `msctl labs` lists both with their
costs; the quota preflight stops `up` before it creates anything."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner

from msctl import lab as lab_status
from msctl import labs, leftovers
from msctl.cli import main
from msctl.config import load_config
from msctl.lab import Lab as LabApi
from msctl.preflight import QuotaExceeded
from msctl.pricing import Prices
from msctl.resources import KINDS
from msctl.resources import inventory as inventory_of
from msctl.resources.base import absent
from msctl.resources.compute import Repository
from tests.support.inventory import count, duplicates, inventory

from .conftest import ROOT, Lab

REGION = "us-east-1"
CONFIG = ROOT / "config" / "lab.yaml"


def client(service: str):
    return boto3.client(service, region_name=REGION)


def look(config):
    return inventory(client, config)


def lab_named(name: str, tmp_path: Path) -> Lab:
    return Lab(load_config(CONFIG, [f"lab={name}"]), tmp_path / name)


def labs_json(*args: str) -> dict:
    result = CliRunner().invoke(
        main, ["labs", "-c", str(CONFIG), "--target", "aws", "--output", "json", *args]
    )
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_two_labs_in_one_account_and_down_of_one_leaves_the_other_whole(aws, tmp_path):
    alice, bob = lab_named("alice", tmp_path), lab_named("bob", tmp_path)
    alice.run("apply", None)
    bob.run("apply", None)
    built_alice, built_bob = look(alice.config), look(bob.config)
    assert count(built_alice) > 40 and count(built_bob) > 40
    assert duplicates(built_alice) == {} and duplicates(built_bob) == {}
    kinds = {"vpc", "nat-gateway", "table", "db-instance", "function", "load-balancer"}
    assert kinds <= set(built_alice) and kinds <= set(built_bob)
    assert "alice-users" in built_alice["table"] and "bob-users" in built_bob["table"]

    rows, problems = labs.all_labs(alice.ctx, Prices())
    assert problems == []
    assert [(r.name, r.status) for r in rows] == [("alice", "built"), ("bob", "built")]
    assert all(r.hourly > 0.1 and r.created is not None for r in rows)

    listed = labs_json()
    assert [lab["name"] for lab in listed["labs"]] == ["alice", "bob"]
    for lab in listed["labs"]:
        assert lab["status"] == "built" and lab["hourly_usd"] > 0.1, lab
        assert lab["cost_so_far_usd"] is not None and lab["created"]
    assert listed["prices"]["source"] == "built-in table"
    assert listed["prices"]["label"].startswith(
        "prices: built-in table (Price List API unreachable: "
    )

    # A third lab, not built: the account's API Gateway logging role (alice's; bob's API
    # logs through it too) is a setting it would use, not something of it that exists.
    verified = lab_named("dave", tmp_path).run("verify", None, expect_ok=False).results
    shared = [c for r in verified.values() for c in r.checks if c.shared]
    assert [(c.name, c.ok) for c in shared] == [("apigateway-account cloudwatch role", True)]
    assert not lab_status.exists(verified.values())
    assert lab_status.exists(alice.run("verify", None).results.values())

    # The region's API Gateway logging setting: alice, built first, pointed it at her role;
    # bob's API logs through it, and bob has a role of his own.
    apigw, iam = client("apigateway"), client("iam")
    roles = {
        n: iam.get_role(RoleName=f"{n}-apigateway-cloudwatch")["Role"]["Arn"]
        for n in ("alice", "bob")
    }
    assert apigw.get_account()["cloudwatchRoleArn"] == roles["alice"]

    alice.run("destroy", None)
    left = leftovers.check(alice.ctx)
    assert left.remaining == [] and left.problems == [] and left.kept == []
    # ... handed to bob's role by alice's down: bob's API keeps its access logs.
    assert apigw.get_account()["cloudwatchRoleArn"] == roles["bob"]
    assert look(bob.config) == built_bob
    assert look(alice.config) == {}
    after = labs_json()["labs"]
    assert [(lab["name"], lab["status"]) for lab in after] == [("bob", "built")]
    assert after[0]["hourly_usd"] == listed["labs"][1]["hourly_usd"]

    bob.run("destroy", None)  # the last lab leaves the account as it found it
    assert not apigw.get_account().get("cloudwatchRoleArn")
    left = leftovers.check(bob.ctx)
    assert left.remaining == [] and left.problems == [] and left.kept == []
    assert iam.list_roles()["Roles"] == []


def up_on_moto(tmp_path: Path, **limits) -> tuple[LabApi, list[str]]:
    """`up` through the library on moto's AWS (the aws target: Service Quotas is asked)."""
    notes: list[str] = []
    lab = LabApi(load_config(CONFIG), "aws", tmp_path / "state", on_notice=notes.append)
    lab.quota_limits = limits or None
    return lab, notes


def nothing_tagged() -> bool:
    tagging = client("resourcegroupstaggingapi")
    tagged = tagging.get_resources(TagFilters=[{"Key": "msctl:lab"}])["ResourceTagMappingList"]
    vpcs = client("ec2").describe_vpcs(Filters=[{"Name": "tag-key", "Values": ["msctl:lab"]}])
    return tagged == [] and vpcs["Vpcs"] == []


def test_the_preflight_stops_up_when_the_elastic_ips_are_all_in_use(aws, tmp_path):
    ec2 = client("ec2")
    for _ in range(5):
        ec2.allocate_address(Domain="vpc")
    lab, notes = up_on_moto(tmp_path)
    with pytest.raises(QuotaExceeded) as refused:
        lab.up(confirm=lambda _c: pytest.fail("asked to confirm before the preflight"))
    assert str(refused.value) == (
        "region us-east-1 has 5 of 5 Elastic IPs in use; the lab needs 1 more: release one "
        "or request an increase (Service Quotas code L-0263D0A3)"
    )
    # moto's Service Quotas doesn't know these codes: the documented defaults, said once.
    asked = [n for n in notes if "Service Quotas" in n]
    assert len(asked) == 1, notes
    assert asked[0].startswith(
        "quota preflight: Service Quotas can't tell Elastic IPs (L-0263D0A3: "
    ) and asked[0].endswith(
        "checked against AWS's documented default of 5; the quotas after it are at their "
        "defaults too"
    ), asked
    assert nothing_tagged()


@pytest.mark.parametrize(
    ("limits", "make", "message"),
    [
        (
            {"vpc": 2},
            lambda: client("ec2").create_vpc(CidrBlock="10.9.0.0/16"),  # and the default VPC
            "region us-east-1 has 2 of 2 VPCs in use; the lab needs 1 more: delete one or "
            "request an increase (Service Quotas code L-F678F1CE)",
        ),
        (
            {"fargate": 0.5},
            lambda: None,
            "region us-east-1 has 0 of 0.5 Fargate On-Demand vCPUs in use; the lab needs 1 "
            "more: stop some tasks or request an increase (Service Quotas code L-3032A538)",
        ),
    ],
)
def test_injected_limits(aws, tmp_path, limits, make, message):
    make()
    lab, _notes = up_on_moto(tmp_path, **limits)
    with pytest.raises(QuotaExceeded) as refused:
        lab.up()
    assert str(refused.value) == message
    assert nothing_tagged()


def test_what_exists_already_needs_no_room(aws, tmp_path):
    lab = lab_named("microservices", tmp_path)
    lab.run("apply", ["nat", "alb"])
    ec2 = client("ec2")
    while len(ec2.describe_addresses()["Addresses"]) < 5:
        ec2.allocate_address(Domain="vpc")
    api, notes = up_on_moto(tmp_path)
    api.state_location = lab.state.path.parent
    needs = api.quota_needs(["nat", "alb"])
    assert {n.key for n in needs} == set()  # the EIP, NAT gateway, VPC and ALB exist
    api.check_quotas(needs)  # 5 of 5 in use, nothing more needed: fine
    rds = api.quota_needs(["rds"])
    assert [(n.key, n.amount) for n in rds] == [("rds", 1)]


def test_what_another_labs_down_deletes_during_this_ones_listing_is_skipped(
    aws, tmp_path, monkeypatch
):
    """`down --labs alice,bob` runs the labs side by side: a repository bob's `down` deletes
    between alice's listing and alice's read of its tags is not a failure of alice's (it
    was: "could not list ... RepositoryNotFoundException" and down exit 1)."""
    alice, bob = lab_named("alice", tmp_path), lab_named("bob", tmp_path)
    alice.run("apply", ["ecr"])
    bob.run("apply", ["ecr"])
    listing = Repository.scan

    def listed_then_bob_deletes(self, ecr, lab):
        repositories = list(listing(self, ecr, lab))
        for repository in repositories:
            if repository["repositoryName"].startswith("bob/"):
                absent(
                    lambda r=repository: ecr.delete_repository(
                        repositoryName=r["repositoryName"], force=True
                    )
                )
        return repositories

    monkeypatch.setattr(Repository, "scan", listed_then_bob_deletes)
    seen = inventory_of.owned(alice.ctx, None, kinds=[KINDS["ecr-repository"]])
    assert seen.problems == []
    assert sorted(i.label for i in seen.items) == ["alice/orders", "alice/products"]

    alice.run("destroy", ["ecr"])
    assert client("ecr").describe_repositories()["repositories"] == []
    left = leftovers.check(alice.ctx)
    assert left.remaining == [] and left.problems == []
