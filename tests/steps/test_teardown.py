"""`down` by ownership, against moto: the walk deletes, step by step, everything tagged for
the lab and the step (also what an older config or an interrupted run left, also without a
state file); the final check reports, with its id and hourly cost, whatever of the lab is
still there; and nothing that isn't the lab's is ever changed or deleted."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from rich.console import Console

from msctl import leftovers, report
from msctl.aws.tags import LAB, as_list, ec2_spec
from msctl.cli import main
from msctl.engine.model import Status
from msctl.engine.step import StepError
from msctl.resources import KINDS, kind_of_arn
from msctl.resources.data import TABLE
from msctl.resources.ec2 import NAT_GATEWAY

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]


def client(service: str, **kwargs):
    return boto3.client(service, region_name=REGION, **kwargs)


def tagged_for(lab) -> set[tuple[str, str]]:
    """(kind, id) of everything the final check finds for the lab."""
    found = leftovers.check(lab.ctx)
    assert found.problems == []
    return {(i.kind, i.id) for i in found.remaining + found.kept}


# ---------------------------------------------------------------- what older runs leave


def make_orphans(lab, vpc_id: str, ecs_sg: str) -> set[tuple[str, str]]:
    """What an older config (entries renamed since) or an interrupted run leaves: tagged for
    the lab and its step, under names the current config doesn't have."""

    def tags(step: str, name: str) -> dict[str, str]:
        return lab.ctx.tags(step, name)

    ec2 = client("ec2")
    eip = ec2.allocate_address(
        Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", tags("nat", "old-nat-eip"))
    )["AllocationId"]
    sg = ec2.create_security_group(
        GroupName="old-sg",
        Description="an older config's group",
        VpcId=vpc_id,
        TagSpecifications=ec2_spec("security-group", tags("sg", "old-sg")),
    )["GroupId"]
    # It names a group of the lab, and is named by one: the walk revokes before deleting.
    for group, source in ((sg, ecs_sg), (ecs_sg, sg)):
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 9000,
                    "ToPort": 9000,
                    "UserIdGroupPairs": [{"GroupId": source}],
                }
            ],
        )
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam = client("iam")
    iam.create_role(
        RoleName="microservices-old-role",
        AssumeRolePolicyDocument=json.dumps(trust),
        Tags=as_list(tags("iam", "microservices-old-role")),
    )
    iam.put_role_policy(
        RoleName="microservices-old-role",
        PolicyName="least-privilege",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            }
        ),
    )
    client("ecr").create_repository(
        repositoryName="microservices/old", tags=as_list(tags("ecr", "microservices/old"))
    )
    client("logs").create_log_group(
        logGroupName="/ecs/microservices-old", tags=tags("ecs", "/ecs/microservices-old")
    )
    api = client("apigateway").create_rest_api(
        name="microservices-old-api", tags=tags("apigw", "microservices-old-api")
    )["id"]
    client("dynamodb").create_table(
        TableName="microservices-old",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=as_list(tags("dynamodb", "microservices-old")),
    )
    return {
        ("elastic-ip", eip),
        ("security-group", sg),
        ("iam-role", "microservices-old-role"),
        ("ecr-repository", "microservices/old"),
        ("log-group", "/ecs/microservices-old"),
        ("rest-api", api),
        ("table", "microservices-old"),
    }


def orphan_nat(lab, allocation_id: str | None = None) -> tuple[str, str]:
    """A second NAT gateway (and Elastic IP) tagged for the lab's nat step, in a network of
    its own: what a create retried without its idempotency token leaves."""
    ec2 = client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    if allocation_id is None:
        allocation_id = ec2.allocate_address(
            Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", lab.ctx.tags("nat", "old-eip"))
        )["AllocationId"]
    nat = ec2.create_nat_gateway(
        SubnetId=subnet_id,
        AllocationId=allocation_id,
        TagSpecifications=ec2_spec("natgateway", lab.ctx.tags("nat", "old-nat")),
    )["NatGateway"]["NatGatewayId"]
    return nat, allocation_id


def test_the_walk_removes_renamed_entries_and_orphans_without_a_state_file(lab):
    lab.run("apply", None)
    vpc_id = lab.state.outputs("vpc")["vpc_id"]
    ecs_sg = lab.state.outputs("sg")["group_ids"]["microservices-ecs-sg"]
    orphans = make_orphans(lab, vpc_id, ecs_sg)
    built = tagged_for(lab)
    assert orphans <= built
    assert {k for k, _ in built} >= {"vpc", "nat-gateway", "db-instance", "distribution", "alarm"}

    lab.state.delete()  # the state file is lost: the walk finds everything by its tags
    result = lab.run("destroy", None)
    assert all(r.ok for r in result.results.values()), result
    assert tagged_for(lab) == set()
    assert leftovers.check(lab.ctx).ok
    changes = [e.message for e in lab.events if e.kind == "change"]
    assert "delete ingress-rule old-sg group references (revoke before deleting groups)" in changes
    assert any(c.startswith("delete table microservices-old") for c in changes)

    again = lab.run("destroy", None)  # safe to run twice
    assert {r.status for r in again.results.values()} == {Status.NOCHANGE}


def test_a_second_nat_gateway_goes_before_the_addresses(lab):
    nat, eip = orphan_nat(lab)
    lab.events.clear()
    lab.run("destroy", ["nat"])
    changes = [e.message for e in lab.events if e.kind == "change" and e.step == "nat"]
    assert changes == [f"delete nat-gateway old-nat ({nat})", f"delete elastic-ip old-eip ({eip})"]
    assert tagged_for(lab) == set()


def test_what_cant_be_deleted_is_reported_with_its_id_and_cost(lab, monkeypatch):
    nat, eip = orphan_nat(lab)

    def refuse(_run, resource):
        raise StepError(f"simulated: AWS refused to delete {resource['NatGatewayId']}")

    monkeypatch.setattr(NAT_GATEWAY, "delete", refuse)
    result = lab.run("destroy", ["nat"], expect_ok=False)
    assert result.results["nat"].status is Status.FAILED
    assert "simulated: AWS refused" in result.results["nat"].error
    found = leftovers.check(lab.ctx)
    assert not found.ok
    # The walk stopped at the NAT gateway: its address stays too (released only after it).
    assert {(r.kind, r.id, r.hourly) for r in found.remaining} == {
        ("nat-gateway", nat, 0.045),
        ("elastic-ip", eip, 0.005),
    }
    out = io.StringIO()
    report.print_leftovers(Console(file=out, width=100, soft_wrap=True), found)
    lines = out.getvalue().splitlines()
    assert (
        lines[0]
        == "Error: 2 resource(s) of lab microservices remain, about $0.0500/hour ($1.20/day):"
    )
    assert f"  nat-gateway {nat} (old-nat) in us-east-1: $0.0450/hour" in lines
    assert lines[-1] == "  next: fix what is named above and run `msctl down` again"
    assert report.leftovers_to_json(found)["ok"] is False


def test_resources_in_deleted_states_are_not_the_labs(lab):
    """The tagging API still lists deleted NAT gateways and inactive task definitions."""
    nat, eip = orphan_nat(lab)
    ecs = client("ecs")
    arn = ecs.register_task_definition(
        family="microservices-old",
        containerDefinitions=[{"name": "app", "image": "nginx", "memory": 128}],
        tags=[{"key": LAB, "value": "microservices"}, {"key": "msctl:step", "value": "ecs"}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.deregister_task_definition(taskDefinition=arn)
    client("ec2").delete_nat_gateway(NatGatewayId=nat)
    assert tagged_for(lab) == {("elastic-ip", eip)}


def test_arns_map_to_kinds():
    cases = {
        "arn:aws:ec2:us-east-1:1:natgateway/nat-1": ("nat-gateway", "nat-1"),
        "arn:aws:ec2:us-east-1:1:elastic-ip/eipalloc-1": ("elastic-ip", "eipalloc-1"),
        "arn:aws:ecs:us-east-1:1:cluster/c": ("ecs-cluster", "arn:aws:ecs:us-east-1:1:cluster/c"),
        "arn:aws:lambda:us-east-1:1:function:f": ("lambda-function", "f"),
        "arn:aws:logs:us-east-1:1:log-group:/ecs/x:*": ("log-group", "/ecs/x"),
        "arn:aws:logs:us-east-1:1:log-group:/ecs/x": ("log-group", "/ecs/x"),
        "arn:aws:rds:us-east-1:1:subgrp:g": ("db-subnet-group", "g"),
        "arn:aws:rds:us-east-1:1:db:d": ("db-instance", "d"),
        "arn:aws:s3:::b": ("bucket", "b"),
        "arn:aws:dynamodb:us-east-1:1:table/t": ("table", "t"),
        "arn:aws:cloudfront::1:distribution/E1": ("distribution", "E1"),
        "arn:aws:iam::1:role/path/r": ("iam-role", "r"),
        "arn:aws:cloudwatch:us-east-1:1:alarm:a": ("alarm", "a"),
        "arn:aws:sns:us-east-1:1:topic": ("sns-topic", "arn:aws:sns:us-east-1:1:topic"),
    }
    for arn, (kind, ident) in cases.items():
        found = kind_of_arn(arn)
        assert found is not None and found.name == kind, arn
        assert found.id_from_arn(arn) == ident, arn
    assert kind_of_arn("arn:aws:kinesis:us-east-1:1:stream/s") is None
    assert kind_of_arn("arn:aws:elasticloadbalancing:us-east-1:1:listener/app/a/1/2") is None
    # Every kind a step creates is listed somewhere: by the tagging API or by its own scan.
    assert all(k.scanned or k.tagging_type for k in KINDS.values())


# ---------------------------------------------------------------- msctl down


@pytest.fixture
def emulator_lab(tmp_path):
    state_dir = tmp_path / "state"
    args = ["-c", str(ROOT / "config" / "lab.yaml"), "--state-dir", str(state_dir)]
    runner = CliRunner()
    started = runner.invoke(main, ["local", "start", "--state-dir", str(state_dir)])
    assert started.exit_code == 0, started.output
    from msctl.local import emulator

    endpoint = emulator.status(state_dir).endpoint
    creds = {
        "endpoint_url": endpoint,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    yield runner, args, creds
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])


def test_down_exits_1_while_anything_of_the_lab_remains(emulator_lab, monkeypatch):
    runner, args, creds = emulator_lab
    boto3.client("dynamodb", region_name=REGION, **creds).create_table(
        TableName="microservices-old",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=[
            {"Key": LAB, "Value": "microservices"},
            {"Key": "msctl:step", "Value": "dynamodb"},
            {"Key": "msctl:name", "Value": "microservices-old"},
        ],
    )

    def refuse(_run, _resource):
        raise StepError("simulated refusal")

    with monkeypatch.context() as m:
        m.setattr(TABLE, "delete", refuse)
        stuck = runner.invoke(main, ["down", *args, "--yes"])
    assert stuck.exit_code == 1, stuck.output
    assert "Traceback" not in stuck.output
    assert "Error: step dynamodb failed: simulated refusal" in stuck.output
    assert "Error: 1 resource(s) of lab microservices remain, about $0.0000/hour" in stuck.output
    assert "  table microservices-old in us-east-1: $0.0000/hour" in stuck.output

    down = runner.invoke(main, ["down", *args, "--yes"])
    assert down.exit_code == 0, down.output
    assert "delete table microservices-old" in down.output
    assert "nothing tagged for lab microservices remains" in down.output

    again = runner.invoke(main, ["down", *args, "--yes", "--output", "json"])
    assert again.exit_code == 0, again.output
    doc = json.loads(again.output)
    assert doc["ok"] is True and doc["leftovers"]["remaining"] == []
