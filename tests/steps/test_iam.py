"""iam against moto: the roles, least privilege proven by parsing every policy, drift repair."""

from __future__ import annotations

import json

import boto3
import pytest

from msctl.engine.model import Pending
from msctl.steps.base import LabStep as Step
from msctl.steps.iam import (
    POLICY_NAME,
    WILDCARD_ACTIONS,
    IamStep,
    lambda_policy,
    normalize,
    task_execution_policy,
    task_policy,
    trust_policy,
)
from msctl.steps.run import StepRun

from .conftest import assert_lifecycle

ACCOUNT = "123456789012"  # moto's account
REGION = "us-east-1"
FULL_ACCESS = "arn:aws:iam::aws:policy/AmazonDynamoDBFullAccess"


# ---------------------------------------------------------------- harness shared with lambda


def _fake_outputs(config) -> dict[str, dict]:
    """What the dynamodb, s3 and rds steps report (docs/steps.md), with realistic ARNs."""
    bucket = f"{config.s3.bucket_prefix}-0a1b2c3d"
    return {
        "dynamodb": {
            "tables": {
                t.name: f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t.name}"
                for t in config.dynamodb.tables
            }
        },
        "s3": {
            "bucket": bucket,
            "bucket_arn": f"arn:aws:s3:::{bucket}",
            "bucket_regional_domain": f"{bucket}.s3.{REGION}.amazonaws.com",
        },
        "rds": {
            "identifier": config.rds.identifier,
            "arn": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{config.rds.identifier}",
            "secret_arn": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-1a2b-AbCdEf",
            "port": 5432,
            "db_name": config.rds.db_name,
            "endpoint_address": None,
        },
    }


def _fake_step(step_name: str, outputs: dict) -> Step:
    """A stand-in for a step that isn't registered yet: its outputs are Pending until applied."""

    class Fake(Step):
        name = step_name
        applied = False

        def reconcile(self, run: StepRun) -> dict:
            if run.dry_run and not self.applied:
                return {k: Pending(f"{step_name} {k}") for k in outputs}
            self.applied = True
            return outputs

        def teardown(self, run: StepRun) -> None:
            self.applied = False

    return Fake()


def install_steps(lab) -> None:
    """The real dynamodb/s3/rds steps when registered, else fakes; iam and lambda always."""
    from msctl.steps.lambda_ import LambdaStep

    for name, outputs in _fake_outputs(lab.config).items():
        if name not in lab.steps:
            lab.steps[name] = _fake_step(name, outputs)
    lab.steps.setdefault("iam", IamStep())
    lab.steps.setdefault("lambda", LambdaStep())


@pytest.fixture
def iam_lab(lab, monkeypatch):
    # AWS managed policies cost moto ~2 s per test to load and reset; only the tests that
    # attach one by hand load them (managed_lab).
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
    install_steps(lab)
    return lab


@pytest.fixture
def managed_lab(lab):
    install_steps(lab)
    return lab


def iam_client():
    return boto3.client("iam", region_name=REGION)


def role_names(config) -> list[str]:
    return [config.iam.lambda_role, config.iam.task_execution_role, config.iam.task_role]


def inline(role: str) -> dict:
    iam = iam_client()
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def statements(document) -> list[dict]:
    doc = json.loads(document) if isinstance(document, str) else document
    out = doc["Statement"] if isinstance(doc["Statement"], list) else [doc["Statement"]]
    for s in out:
        for key in ("Action", "Resource"):
            if isinstance(s.get(key), str):
                s[key] = [s[key]]
    return out


# ---------------------------------------------------------------- tests


def test_iam_lifecycle(iam_lab):
    names = role_names(iam_lab.config)
    outputs = assert_lifecycle(iam_lab, "iam", {("iam-role", n) for n in names})
    assert outputs["lambda_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names[0]}"
    assert outputs["task_execution_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names[1]}"
    assert outputs["task_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names[2]}"
    left = {r["RoleName"] for r in iam_client().list_roles()["Roles"]}
    assert left.isdisjoint(names)


def test_iam_plan_before_its_inputs_exist_lists_the_roles(iam_lab):
    plan = iam_lab.run("plan", ["iam"])
    changes = iam_lab.changes(plan, "iam")
    assert {(c.action, c.kind, c.name) for c in changes} == {
        ("create", "iam-role", n) for n in role_names(iam_lab.config)
    }


def test_iam_policies_grant_only_the_labs_resources(iam_lab):
    iam_lab.run("apply", ["iam"])
    cfg = iam_lab.config
    ctx = iam_lab.ctx
    tables = set(ctx.outputs_of("dynamodb")["tables"].values())
    bucket_arn = ctx.outputs_of("s3")["bucket_arn"]
    secret_arn = ctx.outputs_of("rds")["secret_arn"]
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:"
    lambda_logs = {f"{logs}/aws/lambda/{f.name}:*" for f in cfg.lambda_.functions.values()}
    ecs_logs = {f"{logs}{s.log_group}:*" for s in cfg.ecs.services.values()}
    repos = {
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{r}" for r in cfg.ecr.repositories.values()
    }
    allowed = {
        cfg.iam.lambda_role: tables | {bucket_arn, f"{bucket_arn}/notifications/*"} | lambda_logs,
        cfg.iam.task_execution_role: repos | ecs_logs,
        cfg.iam.task_role: {secret_arn},
    }
    trusted = {
        cfg.iam.lambda_role: "lambda.amazonaws.com",
        cfg.iam.task_execution_role: "ecs-tasks.amazonaws.com",
        cfg.iam.task_role: "ecs-tasks.amazonaws.com",
    }
    iam = iam_client()
    granted: dict[str, dict[str, set[str]]] = {}
    for role, principal in trusted.items():
        got = iam.get_role(RoleName=role)["Role"]
        trust = statements(got["AssumeRolePolicyDocument"])
        assert [(s["Effect"], s["Principal"], s["Action"]) for s in trust] == [
            ("Allow", {"Service": principal}, ["sts:AssumeRole"])
        ]
        tags = {t["Key"]: t["Value"] for t in got["Tags"]}
        assert tags["msctl:lab"] == cfg.lab and tags["msctl:step"] == "iam"
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
        policies = inline(role)
        assert list(policies) == [POLICY_NAME]
        granted[role] = {}
        for s in statements(policies[POLICY_NAME]):
            assert s["Effect"] == "Allow" and "NotAction" not in s and "NotResource" not in s
            for action in s["Action"]:
                service, _, verb = action.partition(":")
                assert "*" not in action and service and verb, action
                granted[role].setdefault(action, set()).update(s["Resource"])
            for resource in s["Resource"]:
                if resource == "*":
                    assert set(s["Action"]) <= WILDCARD_ACTIONS, s
                else:
                    assert resource in allowed[role], (role, resource)

    lam = granted[cfg.iam.lambda_role]
    assert "logs:CreateLogGroup" not in lam
    assert not any(
        a.startswith(("iam:", "sts:", "kms:")) for r in granted for a in granted[r]
    )  # the RDS secret uses the AWS managed key: no kms:Decrypt
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert lam[action] == tables
    assert lam["dynamodb:DeleteItem"] == tables and lam["dynamodb:Scan"] == tables
    assert lam["s3:PutObject"] == lam["s3:GetObject"] == {f"{bucket_arn}/notifications/*"}
    assert lam["s3:ListBucket"] == {bucket_arn}
    assert lam["logs:PutLogEvents"] == lam["logs:CreateLogStream"] == lambda_logs
    assert lam["xray:PutTraceSegments"] == {"*"}
    listing = next(
        s
        for s in statements(inline(cfg.iam.lambda_role)[POLICY_NAME])
        if "s3:ListBucket" in s["Action"]
    )
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["notifications/*"]}}

    execution = granted[cfg.iam.task_execution_role]
    assert execution["ecr:GetAuthorizationToken"] == {"*"}
    assert execution["ecr:BatchGetImage"] == repos
    assert execution["logs:PutLogEvents"] == ecs_logs
    # ECS injects no secret: the services read the rotating one with the task role
    assert not any(a.startswith("secretsmanager:") for a in execution)

    task = granted[cfg.iam.task_role]
    assert task == {
        "xray:PutTraceSegments": {"*"},
        "xray:PutTelemetryRecords": {"*"},
        "xray:GetSamplingRules": {"*"},
        "xray:GetSamplingTargets": {"*"},
        "secretsmanager:GetSecretValue": {secret_arn},
    }


@pytest.mark.managed_policies
def test_iam_detaches_full_access_removes_extra_policies_and_destroys(managed_lab):
    iam_lab = managed_lab
    iam_lab.run("apply", ["iam"])
    role = iam_lab.config.iam.lambda_role
    iam = iam_client()
    iam.attach_role_policy(RoleName=role, PolicyArn=FULL_ACCESS)
    hand_made = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_role_policy(RoleName=role, PolicyName="hand-made", PolicyDocument=json.dumps(hand_made))
    plan = iam_lab.run("plan", ["iam"])
    assert [(c.action, c.kind, c.name) for c in iam_lab.changes(plan, "iam")] == [
        ("delete", "role-policy", f"{role} hand-made"),
        ("delete", "managed-policy", f"{role} AmazonDynamoDBFullAccess"),
    ]
    checks = iam_lab.run("verify", ["iam"], expect_ok=False).results["iam"].checks
    assert {c.name for c in checks if not c.ok} == {
        f"role-policy {role} hand-made",
        f"managed-policy {role} AmazonDynamoDBFullAccess",
    }
    iam_lab.run("apply", ["iam"])
    assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    assert list(inline(role)) == [POLICY_NAME]
    assert iam_lab.changes(iam_lab.run("plan", ["iam"]), "iam") == []

    # AWS refuses to delete a role that has policies: destroy removes them first.
    for name in role_names(iam_lab.config):
        iam.attach_role_policy(RoleName=name, PolicyArn=FULL_ACCESS)
    iam.put_role_policy(RoleName=role, PolicyName="again", PolicyDocument=json.dumps(hand_made))
    iam_lab.run("destroy", ["iam"])
    left = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert left.isdisjoint(role_names(iam_lab.config))


def test_iam_repairs_trust_and_a_widened_policy(iam_lab):
    iam_lab.run("apply", ["iam"])
    cfg = iam_lab.config
    iam = iam_client()
    iam.update_assume_role_policy(
        RoleName=cfg.iam.task_role, PolicyDocument=json.dumps(trust_policy("ec2.amazonaws.com"))
    )
    widened = inline(cfg.iam.lambda_role)[POLICY_NAME]
    widened["Statement"][0]["Resource"] = "*"
    iam.put_role_policy(
        RoleName=cfg.iam.lambda_role, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(widened)
    )
    plan = iam_lab.run("plan", ["iam"])
    assert {(c.action, c.kind, c.name) for c in iam_lab.changes(plan, "iam")} == {
        ("update", "iam-role", cfg.iam.task_role),
        ("update", "role-policy", f"{cfg.iam.lambda_role} {POLICY_NAME}"),
    }
    iam_lab.run("apply", ["iam"])
    assert iam_lab.changes(iam_lab.run("plan", ["iam"]), "iam") == []
    trust = iam.get_role(RoleName=cfg.iam.task_role)["Role"]["AssumeRolePolicyDocument"]
    assert statements(trust)[0]["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}


def test_policy_builders_and_normalize():
    doc = lambda_policy(
        partition="aws",
        region=REGION,
        account=ACCOUNT,
        table_arns=["arn:aws:dynamodb:us-east-1:1:table/b", "arn:aws:dynamodb:us-east-1:1:table/a"],
        bucket_arn="arn:aws:s3:::bkt",
        function_names=["f2", "f1"],
    )
    reordered = json.loads(json.dumps(doc))
    reordered["Statement"].reverse()
    reordered["Statement"][0]["Action"] = reordered["Statement"][0]["Action"][::-1]
    assert normalize(json.dumps(reordered)) == normalize(doc)
    widened = json.loads(json.dumps(doc))
    widened["Statement"][0]["Action"].append("dynamodb:Query")
    assert normalize(widened) != normalize(doc)
    execution = task_execution_policy(
        partition="aws-cn",
        region="cn-north-1",
        account=ACCOUNT,
        repositories=["microservices/products"],
        log_groups=["/ecs/x"],
    )
    resources = {r for s in execution["Statement"] for r in s["Resource"]}
    assert f"arn:aws-cn:ecr:cn-north-1:{ACCOUNT}:repository/microservices/products" in resources
    assert f"arn:aws-cn:logs:cn-north-1:{ACCOUNT}:log-group:/ecs/x:*" in resources
    secret = "arn:aws-cn:secretsmanager:cn-north-1:1:secret:s"
    task = task_policy(secret)["Statement"]
    assert {a for s in task if s["Resource"] == ["*"] for a in s["Action"]} <= WILDCARD_ACTIONS
    assert [(s["Action"], s["Resource"]) for s in task if s["Resource"] != ["*"]] == [
        (["secretsmanager:GetSecretValue"], [secret])
    ]
