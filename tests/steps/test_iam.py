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
    function_policy,
    normalize,
    task_execution_policy,
    task_policy,
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
    iam = config.iam
    return [*iam.lambda_roles.values(), iam.task_execution_role, iam.task_role]


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
        for values in (s.get("Condition") or {}).values():
            for key, value in values.items():
                values[key] = [value] if isinstance(value, str) else value
    return out


def trusts(role: str) -> list[tuple]:
    """(effect, principal, actions, condition) of each statement of the role's trust policy."""
    got = iam_client().get_role(RoleName=role)["Role"]["AssumeRolePolicyDocument"]
    return [(s["Effect"], s["Principal"], s["Action"], s.get("Condition")) for s in statements(got)]


# ---------------------------------------------------------------- tests


def test_iam_lifecycle(iam_lab):
    names = role_names(iam_lab.config)
    outputs = assert_lifecycle(iam_lab, "iam", {("iam-role", n) for n in names})
    cfg = iam_lab.config.iam
    assert outputs["lambda_role_arns"] == {
        key: f"arn:aws:iam::{ACCOUNT}:role/{name}" for key, name in cfg.lambda_roles.items()
    }
    assert len(set(outputs["lambda_role_arns"].values())) == 4  # one role per function
    assert outputs["task_execution_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names[4]}"
    assert outputs["task_role_arn"] == f"arn:aws:iam::{ACCOUNT}:role/{names[5]}"
    left = {r["RoleName"] for r in iam_client().list_roles()["Roles"]}
    assert left.isdisjoint(names)


def test_iam_plan_before_its_inputs_exist_lists_the_roles(iam_lab):
    plan = iam_lab.run("plan", ["iam"])
    changes = iam_lab.changes(plan, "iam")
    assert {(c.action, c.kind, c.name) for c in changes} == {
        ("create", "iam-role", n) for n in role_names(iam_lab.config)
    }


def expected_grants(iam_lab) -> dict[str, dict[str, set[str]]]:
    """Every action each role may take, on exactly which resources: what the functions'
    code calls (lab/functions), the services' pulls and logs, the task's DB instance (to find
    its endpoint), secret and X-Ray."""
    cfg = iam_lab.config
    ctx = iam_lab.ctx
    tables = ctx.outputs_of("dynamodb")["tables"]
    users, sessions = tables["microservices-users"], tables["microservices-sessions"]
    bucket_arn = ctx.outputs_of("s3")["bucket_arn"]
    logs = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:"
    xray = {"xray:PutTraceSegments": {"*"}, "xray:PutTelemetryRecords": {"*"}}

    def function(key: str, grants: dict[str, set[str]]) -> dict[str, set[str]]:
        own_logs = {f"{logs}/aws/lambda/{cfg.lambda_.functions[key].name}:*"}
        return {**grants, "logs:CreateLogStream": own_logs, "logs:PutLogEvents": own_logs, **xray}

    roles = cfg.iam.lambda_roles
    ecs_logs = {f"{logs}{s.log_group}:*" for s in cfg.ecs.services.values()}
    repos = {
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{r}" for r in cfg.ecr.repositories.values()
    }
    return {
        roles["auth"]: function(
            "auth",
            {
                "dynamodb:GetItem": {users, sessions},
                "dynamodb:PutItem": {users, sessions},
                "dynamodb:DeleteItem": {sessions},
            },
        ),
        roles["users"]: function(
            "users",
            {
                "dynamodb:GetItem": {users},
                "dynamodb:UpdateItem": {users},
                "dynamodb:Scan": {users, sessions},
                "dynamodb:DeleteItem": {users, sessions},
            },
        ),
        # No table at all: the caller comes from the authorizer.
        roles["notifications"]: function(
            "notifications",
            {
                "s3:GetObject": {f"{bucket_arn}/notifications/*"},
                "s3:PutObject": {f"{bucket_arn}/notifications/*"},
                "s3:DeleteObject": {f"{bucket_arn}/notifications/*"},
                "s3:ListBucket": {bucket_arn},
            },
        ),
        # Reads only: the session, then its user (for the role).
        roles["authorizer"]: function("authorizer", {"dynamodb:GetItem": {sessions, users}}),
        cfg.iam.task_execution_role: {
            "ecr:GetAuthorizationToken": {"*"},
            "ecr:BatchCheckLayerAvailability": repos,
            "ecr:BatchGetImage": repos,
            "ecr:GetDownloadUrlForLayer": repos,
            "logs:CreateLogStream": ecs_logs,
            "logs:PutLogEvents": ecs_logs,
        },
        cfg.iam.task_role: {
            **xray,
            "xray:GetSamplingRules": {"*"},
            "xray:GetSamplingTargets": {"*"},
            "secretsmanager:GetSecretValue": {ctx.outputs_of("rds")["secret_arn"]},
            # Exactly the lab's instance: the services look up its endpoint themselves.
            "rds:DescribeDBInstances": {f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{cfg.rds.identifier}"},
        },
    }


def test_iam_policies_grant_only_the_labs_resources(iam_lab):
    iam_lab.run("apply", ["iam"])
    cfg = iam_lab.config
    iam = iam_client()
    granted: dict[str, dict[str, set[str]]] = {}
    for role in role_names(cfg):
        got = iam.get_role(RoleName=role)["Role"]
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
            if s["Resource"] == ["*"]:
                assert set(s["Action"]) <= WILDCARD_ACTIONS, s
    assert granted == expected_grants(iam_lab)
    # the RDS secret uses the AWS managed key: no kms:Decrypt; nothing of IAM or STS
    assert not any(a.startswith(("iam:", "sts:", "kms:")) for r in granted for a in granted[r])
    listing = next(
        s
        for s in statements(inline(cfg.iam.lambda_roles["notifications"])[POLICY_NAME])
        if "s3:ListBucket" in s["Action"]
    )
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["notifications/*"]}}


def test_every_role_trusts_one_service_for_this_account_only(iam_lab):
    iam_lab.run("apply", ["iam"])
    cfg = iam_lab.config.iam
    account = {"StringEquals": {"aws:SourceAccount": [ACCOUNT]}}
    for role in cfg.lambda_roles.values():
        assert trusts(role) == [
            ("Allow", {"Service": "lambda.amazonaws.com"}, ["sts:AssumeRole"], account)
        ]
    assert trusts(cfg.task_execution_role) == [
        ("Allow", {"Service": "ecs-tasks.amazonaws.com"}, ["sts:AssumeRole"], account)
    ]
    # AWS's ECS guide: the task role also by the region's ECS as the source
    ecs = {**account, "ArnLike": {"aws:SourceArn": [f"arn:aws:ecs:{REGION}:{ACCOUNT}:*"]}}
    assert trusts(cfg.task_role) == [
        ("Allow", {"Service": "ecs-tasks.amazonaws.com"}, ["sts:AssumeRole"], ecs)
    ]


@pytest.mark.managed_policies
def test_iam_detaches_full_access_removes_extra_policies_and_destroys(managed_lab):
    iam_lab = managed_lab
    iam_lab.run("apply", ["iam"])
    role = iam_lab.config.iam.lambda_roles["users"]
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
    before = {r: trusts(r) for r in (cfg.iam.task_role, cfg.iam.lambda_roles["auth"])}
    # Any service, or the right one for any account (as an older msctl left it): both drift.
    for role, service in ((cfg.iam.task_role, "ec2"), (cfg.iam.lambda_roles["auth"], "lambda")):
        unscoped = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": f"{service}.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                }
            ],
        }
        iam.update_assume_role_policy(RoleName=role, PolicyDocument=json.dumps(unscoped))
    reader = cfg.iam.lambda_roles["authorizer"]
    widened = inline(reader)[POLICY_NAME]
    widened["Statement"][0]["Resource"] = "*"
    iam.put_role_policy(RoleName=reader, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(widened))
    plan = iam_lab.run("plan", ["iam"])
    changes = iam_lab.changes(plan, "iam")
    assert {(c.action, c.kind, c.name) for c in changes} == {
        ("update", "iam-role", cfg.iam.task_role),
        ("update", "iam-role", cfg.iam.lambda_roles["auth"]),
        ("update", "role-policy", f"{reader} {POLICY_NAME}"),
    }
    assert f"trust policy -> only lambda.amazonaws.com for account {ACCOUNT}" in {
        c.detail for c in changes
    }
    iam_lab.run("apply", ["iam"])
    assert iam_lab.changes(iam_lab.run("plan", ["iam"]), "iam") == []
    assert {r: trusts(r) for r in before} == before


def test_policy_builders_and_normalize():
    doc = function_policy(
        "users",
        partition="aws",
        region=REGION,
        account=ACCOUNT,
        table_arns={
            "users": "arn:aws:dynamodb:us-east-1:1:table/b",
            "sessions": "arn:aws:dynamodb:us-east-1:1:table/a",
        },
        bucket_arn="arn:aws:s3:::bkt",
        function_name="f1",
    )
    reordered = json.loads(json.dumps(doc))
    reordered["Statement"].reverse()
    reordered["Statement"][0]["Action"] = reordered["Statement"][0]["Action"][::-1]
    assert normalize(json.dumps(reordered)) == normalize(doc)
    widened = json.loads(json.dumps(doc))
    widened["Statement"][0]["Action"].append("dynamodb:Query")
    assert normalize(widened) != normalize(doc)
    # Only the notifications function touches the bucket.
    assert not any(a.startswith("s3:") for st in doc["Statement"] for a in st["Action"])
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
    db = "arn:aws-cn:rds:cn-north-1:1:db:microservices-db"
    task = task_policy(secret, db)["Statement"]
    assert {a for s in task if s["Resource"] == ["*"] for a in s["Action"]} <= WILDCARD_ACTIONS
    assert [(s["Action"], s["Resource"]) for s in task if s["Resource"] != ["*"]] == [
        (["rds:DescribeDBInstances"], [db]),
        (["secretsmanager:GetSecretValue"], [secret]),
    ]
