"""xray: an X-Ray group that selects the lab's traces, and a sampling rule (seed 7.2).

Tracing itself is switched on where the traces start: the lambda, apigw and ecs steps.
This step adds the group (a named filter for the service map, traces and per-group metrics)
and a sampling rule for the API paths.

The group's filter expression selects every trace that passes through one of the lab's
services: `service("<api>/<stage>")`, the node API Gateway reports for the stage (every
request from CloudFront, including the ECS products/orders calls through the ALB, enters
there), or `service("<function>")` for each Lambda function (so direct invocations count too).
`service(name)` matches a trace when any node in it has that name; names are quoted exactly,
since X-Ray's filter language documents no wildcards in service names.

The local emulator (moto) doesn't implement X-Ray's group and sampling-rule calls: it answers
them with a bare HTTP 404. On the local target that answer becomes NotSupported, so the step
is reported `unsupported`, never as a success; on AWS every error is a real failure.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..aws.tags import as_list
from ..engine.step import NotSupported
from ..resources import Resource
from ..resources.monitoring import SAMPLING_RULE, XRAY_GROUP
from .base import LabStep
from .run import Fix, StepRun

RULE_NAME_MAX = 32
RULE_SETTINGS = {
    "ReservoirSize": 1,
    "Priority": 9000,
    "ServiceName": "*",
    "ServiceType": "*",
    "Host": "*",
    "HTTPMethod": "*",
    "ResourceARN": "*",
}
RULE_VERSION = 1
URL_PATH = "/api/*"  # the API paths CloudFront forwards (cloudfront.api_path_pattern)
UNSUPPORTED = "X-Ray groups and sampling rules are not implemented by the local emulator"


class XrayStep(LabStep):
    name = "xray"
    requires = ()
    services = ("xray",)
    description = "X-Ray group for the lab's traces and a sampling rule"
    kinds = (XRAY_GROUP, SAMPLING_RULE)

    def names(self, config):
        return [(XRAY_GROUP, config.xray.group), (SAMPLING_RULE, rule_name(config.lab))]

    def reconcile(self, run: StepRun) -> dict:
        try:
            return self._group_and_rule(run)
        except ClientError as exc:
            if emulator_lacks(run, exc):
                raise NotSupported(UNSUPPORTED) from exc
            raise

    def teardown(self, run: StepRun) -> None:
        try:
            super().teardown(run)
        except ClientError as exc:
            if not emulator_lacks(run, exc):
                raise
            # Nothing can have been created where the calls don't exist: nothing to remove.
            run.emit("note", f"{UNSUPPORTED}: nothing to remove")

    def _group_and_rule(self, run: StepRun) -> dict:
        cfg = run.config.xray
        xray = run.clients.xray
        expression = filter_expression(run.config)
        group_arn = run.ensure(
            XRAY_GROUP,
            cfg.group,
            create=lambda: xray.create_group(
                GroupName=cfg.group,
                FilterExpression=expression,
                Tags=as_list(run.tags(cfg.group)),
            )["Group"],
            fixes=lambda group: _group_fixes(xray, group, expression),
        )
        rule = sampling_rule(run.config)
        run.ensure(
            SAMPLING_RULE,
            rule["RuleName"],
            create=lambda: _create_rule(run, rule),
            fixes=lambda found: _rule_fixes(run, found, rule),
        )
        return {"group_arn": group_arn, "sampling_rule": rule["RuleName"]}


# ---------------------------------------------------------------- what the config asks for


def filter_expression(config) -> str:
    """Traces through the lab's API stage or any of its Lambda functions."""
    names = [f"{config.apigw.name}/{config.apigw.stage}"]
    names += sorted(f.name for f in config.lambda_.functions.values())
    return " OR ".join(f'service("{_quote(name)}")' for name in names)


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def rule_name(lab: str) -> str:
    """`<lab>-sampling`, shortened to X-Ray's 32-character limit for long lab names."""
    suffix = "-sampling"
    return f"{lab[: RULE_NAME_MAX - len(suffix)]}{suffix}"


def sampling_rule(config) -> dict[str, Any]:
    return {
        "RuleName": rule_name(config.lab),
        "FixedRate": config.xray.sampling_rate,
        "URLPath": URL_PATH,
        **RULE_SETTINGS,
        "Version": RULE_VERSION,
    }


# ---------------------------------------------------------------- emulator gaps


def emulator_lacks(run: StepRun, exc: ClientError) -> bool:
    """The local emulator's answer for an X-Ray call it doesn't implement: HTTP 404 with no
    X-Ray error code (moto answers "404"/"Not yet implemented" in-process, an HTML 404 page
    as a server). X-Ray's own errors always carry a code (InvalidRequestException, ...)."""
    if not run.ctx.target.is_local:
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = exc.response.get("Error", {}).get("Code")
    return status == 404 and code in ("404", "NotFound", "Not Found", "NotImplemented")


# ---------------------------------------------------------------- create and fix


def _group_fixes(xray, group: Resource, expression: str) -> list[Fix]:
    if group.get("FilterExpression") == expression:
        return []
    return [
        Fix(
            "filter expression",
            lambda: xray.update_group(GroupARN=group["GroupARN"], FilterExpression=expression),
        )
    ]


def _create_rule(run: StepRun, rule: dict[str, Any]) -> Resource:
    created = run.clients.xray.create_sampling_rule(
        SamplingRule=rule, Tags=as_list(run.tags(rule["RuleName"]))
    )
    return created["SamplingRuleRecord"]["SamplingRule"]


def _rule_fixes(run: StepRun, found: Resource, rule: dict[str, Any]) -> list[Fix]:
    if found.get("Version") != rule["Version"]:
        # Version can't be updated in place; a sampling rule holds no data: recreate it.
        def recreate():
            SAMPLING_RULE.delete(run, found)
            _create_rule(run, rule)

        return [Fix(f"version {found.get('Version')} -> {rule['Version']}", recreate, "replace")]
    differs = [k for k, v in rule.items() if k != "Version" and found.get(k) != v]
    if not differs:
        return []
    update = {k: v for k, v in rule.items() if k != "Version"}
    return [
        Fix(
            ", ".join(f"{k} {found.get(k)!r} -> {rule[k]!r}" for k in differs),
            lambda: run.clients.xray.update_sampling_rule(SamplingRuleUpdate=update),
        )
    ]
