"""The region's API Gateway account setting and the CloudWatch logging role it names.

API Gateway writes access logs with the account-level role (`get_account().cloudwatchRoleArn`);
without one, enabling access logs fails. The setting serves every REST API in the account and
region, so msctl changes it only when it is unset (or names a role that no longer exists):
then it creates `<lab>-apigateway-cloudwatch` and sets it. When it already names a working
role, msctl uses that and changes nothing.

On `down` the account is left as msctl found it: if the setting names this lab's role, it is
reset to unset (UpdateAccount replacing /cloudwatchRoleArn with an empty value, as Terraform's
provider resets it) and the role is deleted with the step's other resources.

Only API Gateway acting for this account, in this region, may assume the role
(`aws:SourceAccount` and `aws:SourceArn`, against the cross-service confused deputy).
"""

from __future__ import annotations

import json

from ..aws.tags import as_list
from ..resources.base import absent
from ..resources.compute import ROLE
from .iam import trust_fixes, trust_policy
from .run import Fix, StepRun

PRINCIPAL = "apigateway.amazonaws.com"
# The actions of AWS's managed AmazonAPIGatewayPushToCloudWatchLogs. The setting serves every
# REST API in the region, and AWS tests the role when it is set, so it isn't scoped to this
# lab's log group.
POLICY_NAME = "push-to-cloudwatch-logs"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogGroups",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
                "logs:GetLogEvents",
                "logs:FilterLogEvents",
            ],
            "Resource": "*",
        }
    ],
}
# UpdateAccount answers these while a new role is not yet usable by API Gateway.
ROLE_NOT_READY = (
    "does not have required permissions",
    "could not successfully write to CloudWatch Logs",
    "is not authorized to assume",
)
ROLE_PROPAGATION_TIMEOUT = 120


def log_role_name(lab: str) -> str:
    return f"{lab}-apigateway-cloudwatch"


def log_role_trust(partition: str, region: str, account: str) -> dict:
    """API Gateway of this account and region (the setting is the region's) only."""
    return trust_policy(PRINCIPAL, account, f"arn:{partition}:apigateway:{region}::/*")


def _role_exists(iam, arn: str, account: str) -> bool:
    """Whether the setting names a role that exists (one of another account can't be
    checked, and isn't ours to replace)."""
    parts = arn.split(":")
    if len(parts) < 6 or parts[4] != account:
        return True
    return ROLE.read(iam, parts[5].rsplit("/", 1)[-1]) is not None


def ensure_logging_role(run: StepRun, account: str) -> None:
    apigw = run.clients.apigateway
    iam = run.clients.iam
    name = log_role_name(run.ctx.lab)
    trust = log_role_trust(apigw.meta.partition, run.clients.region, account)
    current = apigw.get_account().get("cloudwatchRoleArn") or ""
    ours = ROLE.read(iam, name)
    if current and current != (ours or {}).get("Arn") and _role_exists(iam, current, account):
        run.shared.append(("apigateway-account", "cloudwatch role", current))
        return  # the account already logs through a role of its own

    def put_policy() -> None:
        iam.put_role_policy(
            RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(POLICY)
        )

    def create() -> dict:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="API Gateway access logs to CloudWatch Logs (account setting)",
            Tags=as_list(run.tags(name)),
        )["Role"]
        put_policy()
        return role

    def fixes(role: dict) -> list[Fix]:
        fixes = trust_fixes(iam, role, trust)
        if absent(lambda: iam.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)) is None:
            fixes.append(Fix(f"inline policy {POLICY_NAME}", put_policy))
        return fixes

    run.ensure(ROLE, name, find=lambda: ours, create=create, fixes=fixes)
    role = run.got(ROLE, name)
    role_arn = role["Arn"] if role else None
    run.setting(
        "apigateway-account",
        "cloudwatch role",
        ok=current == role_arn,
        detail=f"{current or 'unset'} -> {name}",
        action="update" if role else "create",
        apply=lambda: run.retry(
            lambda: apigw.update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role_arn}]
            ),
            codes=("BadRequestException",),
            match=lambda exc: any(m in str(exc) for m in ROLE_NOT_READY),
            reason="the new role is not yet usable by API Gateway",
            timeout=ROLE_PROPAGATION_TIMEOUT,
        ),
    )


def release_logging_role(run: StepRun) -> None:
    """Reset the account setting if it names this lab's role (msctl set it when it found it
    unset), so that the role can go: the account is left as msctl found it."""
    apigw = run.clients.apigateway
    name = log_role_name(run.ctx.lab)
    role = run.lookup(ROLE, name)
    current = apigw.get_account().get("cloudwatchRoleArn") or ""
    if role is None or current != role["Arn"]:
        return
    # An empty value resets it (Terraform's provider does the same; the emulator needs it).
    reset = {"op": "replace", "path": "/cloudwatchRoleArn", "value": ""}
    run.setting(
        "apigateway-account",
        "cloudwatch role",
        ok=False,
        detail=f"{name} -> unset, as before msctl set it",
        action="delete",
        apply=lambda: apigw.update_account(patchOperations=[reset]),
    )
