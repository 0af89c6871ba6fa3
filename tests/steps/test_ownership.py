"""msctl touches only what is its own. A resource is the lab's only if it carries the lab's
`msctl:lab` tag (or, where AWS can't tag, the lab's mark): a same-named resource of another
lab, or of no lab, stops `up` with an error naming it, and `down` leaves it alone and says
so. Each case runs on moto and under the strict AWS layer."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest

from msctl.config import LabConfig, load_config
from msctl.engine.model import Status
from tests.support.inventory import inventory
from tests.support.strict import Faults, StrictAws, scaled_sleeps

from .conftest import ROOT, Lab

REGION = "us-east-1"


def client(service: str):
    return boto3.client(service, region_name=REGION)


def look(config):
    return inventory(client, config)


@pytest.fixture(params=["moto", "strict"])
def strict(request, monkeypatch):
    """Install the strict layer on a lab's session (a no-op on plain moto)."""
    if request.param == "moto":
        return lambda lab: lab
    scaled_sleeps(monkeypatch, 0.05)

    def install(lab):
        StrictAws(seed=11, faults=Faults.busy()).install(lab.ctx.session)
        return lab

    return install


def other_lab(tmp_path, strict) -> Lab:
    """Lab `other`, from a config that spells out every name of lab microservices (names
    derive from the lab's name only when the config doesn't give them)."""
    seed = load_config(ROOT / "config" / "lab.yaml")
    spelled = {**seed.model_dump(by_alias=True), "lab": "other", "base_dir": seed.base_dir}
    return strict(Lab(LabConfig.model_validate(spelled), tmp_path / "other"))


def failures(result) -> dict[str, str]:
    return {name: r.error for name, r in result.results.items() if r.status is Status.FAILED}


def notes(lab) -> list[str]:
    return [e.message for e in lab.events if e.kind == "note"]


def test_another_labs_down_and_up_leave_this_lab_whole(aws, lab, tmp_path, strict):
    lab.run("apply", None)
    before = look(lab.config)
    assert {"table", "function", "role", "dashboard", "log-group"} <= set(before)
    other = other_lab(tmp_path, strict)

    down = other.run("destroy", None)
    assert {r.status for r in down.results.values()} == {Status.NOCHANGE}
    assert look(lab.config) == before
    said = notes(other)
    assert (
        "table microservices-users (microservices-users) isn't lab other's "
        "(it is tagged msctl:lab=microservices): left alone" in said
    )
    assert any(n.startswith("dashboard microservices-dashboard ") for n in said), said

    up = other.run("apply", ["dynamodb", "ecr"], expect_ok=False)
    failed = failures(up)
    assert set(failed) == {"dynamodb", "ecr"}
    assert failed["dynamodb"] == (
        "table microservices-users (microservices-users) exists but isn't lab other's: it is "
        "tagged msctl:lab=microservices"
    )
    assert look(lab.config) == before


def make_function(name: str) -> None:
    iam = client("iam")
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
    role = iam.create_role(
        RoleName="someone-elses-role", AssumeRolePolicyDocument=json.dumps(trust)
    )
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as z:
        z.writestr("handler.py", "def lambda_handler(e, c):\n    return 1\n")
    client("lambda").create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="handler.lambda_handler",
        Code={"ZipFile": code.getvalue()},
    )


FOREIGN = {
    # kind: (the step that wants the name, how someone else made it, how to see it is there)
    "table": (
        ["dynamodb"],
        "microservices-users",
        lambda name: client("dynamodb").create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "userId", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "userId", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        ),
        lambda name: client("dynamodb").describe_table(TableName=name)["Table"]["TableName"],
    ),
    "iam-role": (
        ["iam"],
        "microservices-lambda-auth-role",
        lambda name: client("iam").create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
        ),
        lambda name: client("iam").get_role(RoleName=name)["Role"]["RoleName"],
    ),
    "lambda-function": (
        ["lambda"],
        "microservices-auth",
        make_function,
        lambda name: client("lambda").get_function(FunctionName=name)["Configuration"]["Runtime"],
    ),
    "log-group": (
        ["lambda"],
        "/aws/lambda/microservices-users",
        lambda name: client("logs").create_log_group(logGroupName=name),
        lambda name: client("logs").describe_log_groups(logGroupNamePrefix=name)["logGroups"][0][
            "logGroupName"
        ],
    ),
}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
def test_a_foreign_resource_stops_up_and_survives_down(aws, lab, strict, kind):
    steps, name, make, read = FOREIGN[kind]
    make(name)
    seen = read(name)
    strict(lab)

    up = lab.run("apply", steps, expect_ok=False)
    failed = failures(up)
    assert failed[steps[-1]].startswith(f"{kind} {name} ("), failed
    assert failed[steps[-1]].endswith(
        "exists but isn't lab microservices's: it has no msctl:lab tag"
    )

    down = lab.run("destroy", None)
    assert all(r.ok for r in down.results.values())
    assert any(n.startswith(f"{kind} {name} (") and n.endswith("left alone") for n in notes(lab))
    assert read(name) == seen  # still there, unchanged


def test_a_same_named_security_group_elsewhere_is_never_touched(aws, lab, strict):
    ec2 = client("ec2")
    default_vpc = ec2.create_vpc(CidrBlock="172.31.0.0/16")["Vpc"]["VpcId"]
    foreign = ec2.create_security_group(
        GroupName="microservices-alb-sg", Description="someone else's", VpcId=default_vpc
    )["GroupId"]
    strict(lab)
    lab.run("apply", ["sg"])
    ours = lab.state.outputs("sg")["group_ids"]["microservices-alb-sg"]
    assert ours != foreign
    lab.run("destroy", ["vpc"])
    left = ec2.describe_security_groups(GroupIds=[foreign])["SecurityGroups"]
    assert [g["GroupName"] for g in left] == ["microservices-alb-sg"]
    assert (
        ec2.describe_security_groups(Filters=[{"Name": "group-id", "Values": [ours]}])[
            "SecurityGroups"
        ]
        == []
    )
