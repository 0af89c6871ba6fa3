"""iam: the Lambda role and the two ECS task roles, least privilege (seed 3.1, 4.4).

The seed gives the Lambda role AmazonDynamoDBFullAccess; msctl grants instead exactly what
the lab's code does, on exactly the lab's resources, in one inline policy per role:

- Lambda role: the item operations the handlers use on the two tables (TransactWriteItems
  is authorized as its PutItem parts), objects under `notifications/` in the static bucket,
  writing to the functions' own log groups (msctl creates the groups, so no
  CreateLogGroup), and X-Ray segments.
- ECS task execution role: pulling the two images and writing to the services' log groups.
- ECS task role (the services' own credentials): what the X-Ray sidecar sends, and reading
  the RDS-managed master secret, which the services fetch themselves because RDS rotates it
  (encrypted with the AWS managed key, so no kms:Decrypt grant is needed).

The only `"Resource": "*"` grants are the actions AWS defines no resource for
(`WILDCARD_ACTIONS`). Managed policies and inline policies not in this file are removed.

The policy documents are built by pure functions so tests (and reviewers) can read them.
"""

from __future__ import annotations

import json
from typing import Any

from ..aws.tags import as_list
from ..engine.model import Pending, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.compute import ROLE
from .base import LabStep
from .run import Fix, StepRun

POLICY_NAME = "least-privilege"
NOTIFICATIONS_PREFIX = "notifications/"

# Actions that support no resource-level permissions: AWS requires "Resource": "*".
WILDCARD_ACTIONS = frozenset(
    {
        "xray:PutTraceSegments",
        "xray:PutTelemetryRecords",
        "xray:GetSamplingRules",
        "xray:GetSamplingTargets",
        "ecr:GetAuthorizationToken",
    }
)

# What the handlers in lab/functions call (grep for get_item, put_item, ...): no Query
# and no index is used; transact_write_items needs the PutItem of its Put parts.
DYNAMODB_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Scan",
]
XRAY_WRITE = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
XRAY_DAEMON = [*XRAY_WRITE, "xray:GetSamplingRules", "xray:GetSamplingTargets"]
LOG_WRITE = ["logs:CreateLogStream", "logs:PutLogEvents"]
ECR_PULL = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]


# ---------------------------------------------------------------- policy documents


def trust_policy(service: str) -> dict:
    """Only `service` (lambda.amazonaws.com, ecs-tasks.amazonaws.com) may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def log_group_arn(partition: str, region: str, account: str, group: str) -> str:
    """The ARN that covers the log streams of one log group."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"


def lambda_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def lambda_policy(
    *,
    partition: str,
    region: str,
    account: str,
    table_arns: list[str],
    bucket_arn: str,
    function_names: list[str],
) -> dict:
    return _policy(
        _statement("Tables", DYNAMODB_ACTIONS, sorted(table_arns)),
        _statement(
            "NotificationObjects",
            ["s3:GetObject", "s3:PutObject"],
            [f"{bucket_arn}/{NOTIFICATIONS_PREFIX}*"],
        ),
        {
            **_statement("ListNotifications", ["s3:ListBucket"], [bucket_arn]),
            "Condition": {"StringLike": {"s3:prefix": [f"{NOTIFICATIONS_PREFIX}*"]}},
        },
        _statement(
            "FunctionLogs",
            LOG_WRITE,
            [
                log_group_arn(partition, region, account, lambda_log_group(name))
                for name in sorted(function_names)
            ],
        ),
        _statement("Tracing", XRAY_WRITE, ["*"]),
    )


def task_execution_policy(
    *,
    partition: str,
    region: str,
    account: str,
    repositories: list[str],
    log_groups: list[str],
) -> dict:
    return _policy(
        _statement("RegistryLogin", ["ecr:GetAuthorizationToken"], ["*"]),
        _statement(
            "PullImages",
            ECR_PULL,
            [
                f"arn:{partition}:ecr:{region}:{account}:repository/{repo}"
                for repo in sorted(repositories)
            ],
        ),
        _statement(
            "ServiceLogs",
            LOG_WRITE,
            [log_group_arn(partition, region, account, group) for group in sorted(log_groups)],
        ),
    )


def task_policy(secret_arn: str) -> dict:
    return _policy(
        _statement("XRayDaemon", XRAY_DAEMON, ["*"]),
        _statement("DatabaseSecret", ["secretsmanager:GetSecretValue"], [secret_arn]),
    )


def _policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _statement(sid: str, actions: list[str], resources: list[str]) -> dict:
    return {"Sid": sid, "Effect": "Allow", "Action": list(actions), "Resource": list(resources)}


def normalize(document: str | dict) -> Any:
    """A policy document in a canonical form: parsed, single values as lists, lists and
    statements sorted. Two documents that grant the same are equal after this."""
    document = json.loads(document if isinstance(document, str) else json.dumps(document))

    def canon(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canon(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            return sorted((canon(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
        return value

    statements = document.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    out = []
    for statement in statements:
        s = dict(statement)
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            if isinstance(s.get(key), str):
                s[key] = [s[key]]
        for values in (s.get("Condition") or {}).values():
            for k, v in values.items():
                if isinstance(v, str):
                    values[k] = [v]
        out.append(canon(s))
    return {
        "Version": document.get("Version"),
        "Statement": sorted(out, key=lambda v: json.dumps(v, sort_keys=True)),
    }


# ---------------------------------------------------------------- the step


class IamStep(LabStep):
    name = "iam"
    requires = ("dynamodb", "s3", "rds")
    services = ("iam", "sts")
    description = "Lambda role and ECS task roles, least privilege"
    kinds = (ROLE,)  # policies detached and deleted first

    def names(self, config):
        cfg = config.iam
        return [(ROLE, n) for n in (cfg.lambda_role, cfg.task_execution_role, cfg.task_role)]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config
        partition, account = _caller(run)
        region = run.clients.region
        tables = run.outputs_of("dynamodb")["tables"]
        s3 = run.outputs_of("s3")
        secret_arn = run.outputs_of("rds")["secret_arn"]
        if secret_arn is None:
            raise StepError(
                f"DB instance {cfg.rds.identifier} has no RDS-managed master user secret",
                hint="the rds step creates it with ManageMasterUserPassword; "
                "run `msctl up --only rds` to repair the instance",
            )
        table_arns = list(tables.values())

        roles = {
            cfg.iam.lambda_role: (
                "lambda.amazonaws.com",
                lambda: lambda_policy(
                    partition=partition,
                    region=region,
                    account=account,
                    table_arns=table_arns,
                    bucket_arn=s3["bucket_arn"],
                    function_names=[f.name for f in cfg.lambda_.functions.values()],
                ),
                [*table_arns, s3["bucket_arn"]],
            ),
            cfg.iam.task_execution_role: (
                "ecs-tasks.amazonaws.com",
                lambda: task_execution_policy(
                    partition=partition,
                    region=region,
                    account=account,
                    repositories=list(cfg.ecr.repositories.values()),
                    log_groups=[s.log_group for s in cfg.ecs.services.values()],
                ),
                [],
            ),
            cfg.iam.task_role: (
                "ecs-tasks.amazonaws.com",
                lambda: task_policy(secret_arn),
                [secret_arn],
            ),
        }
        arns = {}
        for role_name, (service, policy, inputs) in roles.items():
            arns[role_name] = self._role(run, role_name, service, policy, inputs)
        return {
            "lambda_role_arn": arns[cfg.iam.lambda_role],
            "task_execution_role_arn": arns[cfg.iam.task_execution_role],
            "task_role_arn": arns[cfg.iam.task_role],
        }

    def _role(self, run: StepRun, role_name: str, service: str, policy, inputs: list) -> str:
        iam = run.clients.iam
        trust = trust_policy(service)
        run.ensure(
            ROLE,
            role_name,
            create=lambda: iam.create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"msctl lab {run.ctx.lab}: {role_name}",
                Tags=as_list(run.tags(role_name)),
            )["Role"],
            fixes=lambda role: _trust_fixes(iam, role, trust),
        )
        role = run.got(ROLE, role_name)
        if role is None:  # under plan: the role's create puts its policy
            return Pending(f"ARN of role {role_name}")
        arn = role["Arn"]
        # The policy's inputs (table ARNs, the secret) may not exist yet under plan.
        desired = None if is_pending(*inputs) else policy()
        current = _inline_policies(iam, role_name)
        if desired is not None:
            present = POLICY_NAME in current
            run.setting(
                "role-policy",
                f"{role_name} {POLICY_NAME}",
                ok=present and normalize(current[POLICY_NAME]) == normalize(desired),
                detail="differs from the least-privilege policy" if present else "put",
                action="update" if present else "create",
                apply=lambda: iam.put_role_policy(
                    RoleName=role_name,
                    PolicyName=POLICY_NAME,
                    PolicyDocument=json.dumps(desired),
                ),
            )
        for extra in sorted(set(current) - {POLICY_NAME}):
            run.setting(
                "role-policy",
                f"{role_name} {extra}",
                ok=False,
                detail="inline policy not in config: delete",
                action="delete",
                apply=lambda p=extra: iam.delete_role_policy(RoleName=role_name, PolicyName=p),
            )
        for attached in _attached_policies(iam, role_name):
            run.setting(
                "managed-policy",
                f"{role_name} {attached['PolicyName']}",
                ok=False,
                detail="managed policy not in config: detach",
                action="delete",
                apply=lambda p=attached: iam.detach_role_policy(
                    RoleName=role_name, PolicyArn=p["PolicyArn"]
                ),
            )
        return arn


# ---------------------------------------------------------------- lookups


def _caller(run: StepRun) -> tuple[str, str]:
    """(partition, account) of the credentials in use."""
    identity = run.clients.sts.get_caller_identity()
    return identity["Arn"].split(":")[1], identity["Account"]


def _inline_policies(iam, role_name: str) -> dict[str, Any]:
    names = [
        n
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=role_name)
        for n in page["PolicyNames"]
    ]
    return {
        n: iam.get_role_policy(RoleName=role_name, PolicyName=n)["PolicyDocument"] for n in names
    }


def _attached_policies(iam, role_name: str) -> list[dict]:
    return [
        p
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=role_name)
        for p in page["AttachedPolicies"]
    ]


# ---------------------------------------------------------------- fix and delete


def _trust_fixes(iam, role: Resource, trust: dict) -> list[Fix]:
    current = role.get("AssumeRolePolicyDocument") or {"Statement": []}
    if normalize(current) == normalize(trust):
        return []
    principal = trust["Statement"][0]["Principal"]["Service"]
    return [
        Fix(
            f"trust policy -> only {principal}",
            lambda: iam.update_assume_role_policy(
                RoleName=role["RoleName"], PolicyDocument=json.dumps(trust)
            ),
        )
    ]
