"""The region's API Gateway account setting and the CloudWatch logging role it names.

API Gateway writes access logs with the account-level role (`get_account().cloudwatchRoleArn`);
without one, enabling access logs fails. The setting serves every REST API in the account and
region. When it names a role of the team's own, msctl uses that and changes nothing. Otherwise
each lab has its own `<lab>-apigateway-cloudwatch` role, and the setting is pointed at it when
it is unset (or names a role that no longer exists); while another lab's role holds it, the
lab's API logs through that one.

On `down` the account is left as msctl found it: if the setting names this lab's role, it is
handed to another lab's logging role (so their APIs keep their logs) or, with none left, reset
to unset (UpdateAccount replacing /cloudwatchRoleArn with an empty value, as Terraform's
provider resets it); the role is deleted with the step's other resources.

Only API Gateway acting for this account, in this region, may assume the role
(`aws:SourceAccount` and `aws:SourceArn`, against the cross-service confused deputy).
"""

from __future__ import annotations

import json
import threading

from ..aws.tags import STEP, as_list
from ..resources.base import absent, owner
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


LOG_ROLE_SUFFIX = "-apigateway-cloudwatch"
# Held while a lab hands the setting on and deletes its role (labs of one `msctl` run).
ACCOUNT_SETTING = threading.Lock()


def log_role_name(lab: str) -> str:
    return f"{lab}{LOG_ROLE_SUFFIX}"


def log_role_trust(partition: str, region: str, account: str) -> dict:
    """API Gateway of this account and region (the setting is the region's) only."""
    return trust_policy(PRINCIPAL, account, f"arn:{partition}:apigateway:{region}::/*")


def _holder(iam, arn: str, account: str) -> str | None:
    """Whose role the setting names: "" when none is named or it no longer exists, the msctl
    lab whose tag it carries, or None for a role of the team's own (or of another account),
    which msctl never replaces."""
    if not arn:
        return ""
    parts = arn.split(":")
    if len(parts) < 6 or parts[4] != account:
        return None
    role = ROLE.read(iam, parts[5].rsplit("/", 1)[-1])
    if role is None:
        return ""
    return owner(ROLE.tags(iam, role)) or None


def _other_labs_roles(run: StepRun) -> list[str]:
    """The ARNs of the other msctl labs' logging roles in this account, by name: the setting
    is handed to the first when this lab's role goes, so their APIs keep their logs."""
    iam = run.clients.iam
    ours = log_role_name(run.ctx.lab)
    found = []
    for page in iam.get_paginator("list_roles").paginate():
        for role in page.get("Roles", []):
            name = role["RoleName"]
            if not name.endswith(LOG_ROLE_SUFFIX) or name == ours:
                continue
            tags = ROLE.tags_if_there(iam, role)
            if tags and owner(tags) and tags.get(STEP) == run.step:
                found.append((name, role["Arn"]))
    return [arn for _name, arn in sorted(found)]


def ensure_logging_role(run: StepRun, account: str) -> None:
    apigw = run.clients.apigateway
    iam = run.clients.iam
    name = log_role_name(run.ctx.lab)
    trust = log_role_trust(apigw.meta.partition, run.clients.region, account)
    current = apigw.get_account().get("cloudwatchRoleArn") or ""
    ours = ROLE.read(iam, name)
    holder = "" if ours and current == ours["Arn"] else _holder(iam, current, account)
    if holder is None:
        run.shared.append(("apigateway-account", "cloudwatch role", current))
        return  # the account logs through a role of the team's own

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

    # This lab's own role even while another lab's holds the setting: that lab hands the
    # setting to it when it goes.
    run.ensure(ROLE, name, find=lambda: ours, create=create, fixes=fixes)
    if holder and holder != run.ctx.lab:
        run.shared.append(("apigateway-account", "cloudwatch role", f"{current} (lab {holder}'s)"))
        return
    role = run.got(ROLE, name)
    role_arn = role["Arn"] if role else None
    run.setting(
        "apigateway-account",
        "cloudwatch role",
        ok=current == role_arn,
        detail=f"{current or 'unset'} -> {name}",
        action="update" if role else "create",
        apply=lambda: _point_setting_at(run, role_arn),
    )


def _point_setting_at(run: StepRun, role_arn: str) -> None:
    """Set the account's logging role (an empty ARN unsets it; Terraform's provider resets it
    so too, and the emulator needs it), retrying while a new role isn't usable yet."""
    patch = [{"op": "replace", "path": "/cloudwatchRoleArn", "value": role_arn}]
    run.retry(
        lambda: run.clients.apigateway.update_account(patchOperations=patch),
        codes=("BadRequestException",),
        match=lambda exc: any(m in str(exc) for m in ROLE_NOT_READY),
        reason="the role is not yet usable by API Gateway",
        timeout=ROLE_PROPAGATION_TIMEOUT,
    )


def release_logging_role(run: StepRun, account: str) -> None:
    """If the setting names this lab's role, hand it to another lab's logging role (their
    APIs keep logging) or, with none left, reset it to unset as msctl found it; the role then
    goes with the step's other resources. Called again after the role is deleted, for a lab
    that handed the setting to this one meanwhile from another msctl process (the labs of
    one `down --labs` take turns: ACCOUNT_SETTING)."""
    apigw = run.clients.apigateway
    name = log_role_name(run.ctx.lab)
    ours = f"arn:{apigw.meta.partition}:iam::{account}:role/{name}"
    if (apigw.get_account().get("cloudwatchRoleArn") or "") != ours:
        return
    others = _other_labs_roles(run)
    if others:
        successor = others[0]
        detail = f"{name} -> {successor.rsplit('/', 1)[-1]}, another lab's: its API logs through it"
    else:
        successor, detail = "", f"{name} -> unset, as before msctl set it"
    run.setting(
        "apigateway-account",
        "cloudwatch role",
        ok=False,
        detail=detail,
        action="update" if successor else "delete",
        apply=lambda: _point_setting_at(run, successor),
    )
