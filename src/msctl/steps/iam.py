"""iam: a role per Lambda function and the two ECS task roles, least privilege (seed 3.1, 4.4).

The seed gives one Lambda role AmazonDynamoDBFullAccess; msctl grants instead exactly what
each function's code does, on exactly the lab's resources, in one inline policy per role:

- each Lambda function's role: the item operations its handler uses on the tables it uses
  (`FUNCTION_TABLES`; TransactWriteItems is authorized as its parts' actions), objects under
  `notifications/` in the static bucket for the notifications function only, writing to
  its own log group (msctl creates the groups, so no CreateLogGroup), and X-Ray segments.
  The authorizer only reads (a session, its user); the notifications function has no table.
- ECS task execution role: pulling the two images and writing to the services' log groups.
- ECS task role (the services' own credentials): what the X-Ray sidecar sends, describing
  the lab's DB instance (exactly that one: the services find its endpoint themselves, so
  their rollout needn't wait for RDS), and reading the RDS-managed master secret, which the
  services fetch themselves because RDS rotates it (encrypted with the AWS managed key, so
  no kms:Decrypt grant is needed).

Every trust policy names one service principal acting for this account only
(`aws:SourceAccount`: AWS's guard against the cross-service confused deputy). The ECS task
role also names the source, the region's ECS (`aws:SourceArn`, as AWS's ECS guide shows for
task roles); the Lambda roles can't: AWS documents no source ARN for an execution role.

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

# The tables the lab's functions use, by the partition key their handlers read and write.
TABLE_KEYS = {"users": "userId", "sessions": "sessionId"}
# What each handler in lab/functions calls, per table (grep for get_item, put_item, ...): no
# Query and no index is used; a transact_write_items needs the PutItem or DeleteItem of its
# parts. The authorizer reads the session and then its user (for the role). labcommon's
# fallback for a call without the authorizer's context (it reads the session and the user
# itself) gets no grant: every route of the users and notifications functions is guarded by
# the authorizer, and only API Gateway may invoke them.
FUNCTION_TABLES = {
    "auth": {"users": ["GetItem", "PutItem"], "sessions": ["DeleteItem", "GetItem", "PutItem"]},
    "users": {
        "users": ["DeleteItem", "GetItem", "Scan", "UpdateItem"],
        "sessions": ["DeleteItem", "Scan"],
    },
    "notifications": {},
    "authorizer": {"sessions": ["GetItem"], "users": ["GetItem"]},
}
NOTIFICATION_FUNCTIONS = ("notifications",)  # the ones that read and write objects in S3
XRAY_WRITE = ["xray:PutTraceSegments", "xray:PutTelemetryRecords"]
XRAY_DAEMON = [*XRAY_WRITE, "xray:GetSamplingRules", "xray:GetSamplingTargets"]
LOG_WRITE = ["logs:CreateLogStream", "logs:PutLogEvents"]
ECR_PULL = [
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
]


# ---------------------------------------------------------------- policy documents


def trust_policy(service: str, account: str, source_arn: str | None = None) -> dict:
    """Only `service` acting for `account` (and for `source_arn`, if given) may assume the
    role: the cross-service confused deputy guard AWS recommends."""
    condition: dict = {"StringEquals": {"aws:SourceAccount": account}}
    if source_arn:
        condition["ArnLike"] = {"aws:SourceArn": source_arn}
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
                "Condition": condition,
            }
        ],
    }


def lab_tables(cfg) -> dict[str, str]:
    """{"users": table name, "sessions": table name}: the configured tables with the
    partition keys the handlers use, so the order of dynamodb.tables doesn't matter."""
    found = {}
    for use, key in TABLE_KEYS.items():
        found[use] = next((t.name for t in cfg.dynamodb.tables if t.partition_key == key), None)
        if found[use] is None:
            raise StepError(
                f"no table in dynamodb.tables has partition key {key!r}",
                hint="the lab's functions need a users table (userId) and a sessions table "
                "(sessionId)",
            )
    return found


def log_group_arn(partition: str, region: str, account: str, group: str) -> str:
    """The ARN that covers the log streams of one log group."""
    return f"arn:{partition}:logs:{region}:{account}:log-group:{group}:*"


def lambda_log_group(function_name: str) -> str:
    return f"/aws/lambda/{function_name}"


def function_policy(
    key: str,
    *,
    partition: str,
    region: str,
    account: str,
    table_arns: dict[str, str],
    bucket_arn: str,
    function_name: str,
) -> dict:
    """The policy of one function's role; `table_arns` maps "users"/"sessions" to ARNs."""
    statements = [
        _statement(
            f"{use.capitalize()}Table", [f"dynamodb:{a}" for a in actions], [table_arns[use]]
        )
        for use, actions in FUNCTION_TABLES[key].items()
    ]
    if key in NOTIFICATION_FUNCTIONS:
        statements += [
            _statement(
                "NotificationObjects",
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                [f"{bucket_arn}/{NOTIFICATIONS_PREFIX}*"],
            ),
            {
                **_statement("ListNotifications", ["s3:ListBucket"], [bucket_arn]),
                "Condition": {"StringLike": {"s3:prefix": [f"{NOTIFICATIONS_PREFIX}*"]}},
            },
        ]
    return _policy(
        *statements,
        _statement(
            "FunctionLogs",
            LOG_WRITE,
            [log_group_arn(partition, region, account, lambda_log_group(function_name))],
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


def task_policy(secret_arn: str, db_instance_arn: str) -> dict:
    return _policy(
        _statement("XRayDaemon", XRAY_DAEMON, ["*"]),
        _statement("DatabaseInstance", ["rds:DescribeDBInstances"], [db_instance_arn]),
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
    reads_only = ("dynamodb", "s3", "rds")  # ARNs in the policies
    services = ("iam", "sts")
    description = "a role per Lambda function and the ECS task roles, least privilege"
    kinds = (ROLE,)  # policies detached and deleted first

    def names(self, config):
        cfg = config.iam
        roles = [*cfg.lambda_roles.values(), cfg.task_execution_role, cfg.task_role]
        return [(ROLE, n) for n in roles]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config
        partition, account = _caller(run)
        region = run.clients.region
        tables = run.outputs_of("dynamodb")["tables"]
        s3 = run.outputs_of("s3")
        db = run.outputs_of("rds")
        secret_arn, db_arn = db["secret_arn"], db["arn"]
        if secret_arn is None:
            raise StepError(
                f"DB instance {cfg.rds.identifier} has no RDS-managed master user secret",
                hint="the rds step creates it with ManageMasterUserPassword; "
                "run `msctl up --only rds` to repair the instance",
            )
        table_arns = {use: tables.get(name) for use, name in lab_tables(cfg).items()}
        where = {"partition": partition, "region": region, "account": account}

        def lambda_role(key: str):
            return (
                trust_policy("lambda.amazonaws.com", account),
                lambda: function_policy(
                    key,
                    **where,
                    table_arns=table_arns,
                    bucket_arn=s3["bucket_arn"],
                    function_name=cfg.lambda_.functions[key].name,
                ),
                [*table_arns.values(), s3["bucket_arn"]],
            )

        roles = {name: lambda_role(key) for key, name in cfg.iam.lambda_roles.items()}
        roles[cfg.iam.task_execution_role] = (
            trust_policy("ecs-tasks.amazonaws.com", account),
            lambda: task_execution_policy(
                **where,
                repositories=list(cfg.ecr.repositories.values()),
                log_groups=[s.log_group for s in cfg.ecs.services.values()],
            ),
            [],
        )
        roles[cfg.iam.task_role] = (
            trust_policy(
                "ecs-tasks.amazonaws.com", account, f"arn:{partition}:ecs:{region}:{account}:*"
            ),
            lambda: task_policy(secret_arn, db_arn),
            [secret_arn, db_arn],
        )
        arns = {name: self._role(run, name, *spec) for name, spec in roles.items()}
        return {
            "lambda_role_arns": {k: arns[n] for k, n in cfg.iam.lambda_roles.items()},
            "task_execution_role_arn": arns[cfg.iam.task_execution_role],
            "task_role_arn": arns[cfg.iam.task_role],
        }

    def _role(self, run: StepRun, role_name: str, trust: dict, policy, inputs: list) -> str:
        iam = run.clients.iam
        run.ensure(
            ROLE,
            role_name,
            create=lambda: iam.create_role(
                RoleName=role_name,
                AssumeRolePolicyDocument=json.dumps(trust),
                Description=f"msctl lab {run.ctx.lab}: {role_name}",
                Tags=as_list(run.tags(role_name)),
            )["Role"],
            fixes=lambda role: trust_fixes(iam, role, trust),
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


def trust_fixes(iam, role: Resource, trust: dict) -> list[Fix]:
    current = role.get("AssumeRolePolicyDocument") or {"Statement": []}
    if normalize(current) == normalize(trust):
        return []
    statement = trust["Statement"][0]
    account = statement["Condition"]["StringEquals"]["aws:SourceAccount"]
    return [
        Fix(
            f"trust policy -> only {statement['Principal']['Service']} for account {account}",
            lambda: iam.update_assume_role_policy(
                RoleName=role["RoleName"], PolicyDocument=json.dumps(trust)
            ),
        )
    ]
