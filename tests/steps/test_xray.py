"""xray: reported `unsupported` where the emulator lacks the calls (the installed moto does),
never as a success; and, against an X-Ray that answers like AWS's, the whole lifecycle."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from msctl.context import Target
from msctl.engine.model import Status
from msctl.steps.xray import (
    UNSUPPORTED,
    XrayStep,
    filter_expression,
    rule_name,
    sampling_rule,
)

from .conftest import Lab, assert_lifecycle

REGION = "us-east-1"
ACCOUNT = "123456789012"


def moto_implements_xray_groups() -> bool:
    """The truth for the installed moto, asked directly."""
    try:
        boto3.client("xray", region_name=REGION).get_groups()
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise
    return True


@pytest.fixture
def xray_lab(lab):
    lab.steps.setdefault("xray", XrayStep())
    return lab


class FakeXray:
    """X-Ray's group, sampling-rule and tag calls answered in memory the way AWS answers
    them, before the request reaches moto (which doesn't implement them)."""

    def __init__(self):
        self.groups: dict[str, dict] = {}
        self.rules: dict[str, dict] = {}
        self.tags: dict[str, list[dict]] = {}
        self.calls: list[str] = []

    def install(self, lab: Lab) -> FakeXray:
        lab.ctx.session.events.register("before-call.xray", self)
        return self

    def __call__(self, model, params, **_kwargs):
        op = model.name
        self.calls.append(op)
        body = json.loads(params.get("body") or b"{}")
        answer = getattr(self, op)(body)
        return AWSResponse(f"https://xray.{REGION}.amazonaws.com", 200, {}, None), {
            **answer,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }

    def GetGroups(self, _body):
        return {"Groups": list(self.groups.values())}

    def CreateGroup(self, body):
        name = body["GroupName"]
        arn = f"arn:aws:xray:{REGION}:{ACCOUNT}:group/{name}/ABCDEF"
        self.groups[name] = {
            "GroupName": name,
            "GroupARN": arn,
            "FilterExpression": body["FilterExpression"],
            "InsightsConfiguration": {"InsightsEnabled": False, "NotificationsEnabled": False},
        }
        self.tags[arn] = body.get("Tags", [])
        return {"Group": self.groups[name]}

    def _group(self, body):
        return next(
            g
            for g in self.groups.values()
            if body.get("GroupARN") in (None, g["GroupARN"])
            and body.get("GroupName") in (None, g["GroupName"])
        )

    def UpdateGroup(self, body):
        group = self._group(body)
        group["FilterExpression"] = body["FilterExpression"]
        return {"Group": group}

    def DeleteGroup(self, body):
        del self.groups[self._group(body)["GroupName"]]
        return {}

    def GetSamplingRules(self, _body):
        return {"SamplingRuleRecords": [{"SamplingRule": r} for r in self.rules.values()]}

    def CreateSamplingRule(self, body):
        rule = dict(body["SamplingRule"])
        rule["RuleARN"] = f"arn:aws:xray:{REGION}:{ACCOUNT}:sampling-rule/{rule['RuleName']}"
        rule.setdefault("Attributes", {})
        self.rules[rule["RuleName"]] = rule
        self.tags[rule["RuleARN"]] = body.get("Tags", [])
        return {"SamplingRuleRecord": {"SamplingRule": rule}}

    def UpdateSamplingRule(self, body):
        update = body["SamplingRuleUpdate"]
        rule = self.rules[update["RuleName"]]
        rule.update({k: v for k, v in update.items() if k not in ("RuleName", "RuleARN")})
        return {"SamplingRuleRecord": {"SamplingRule": rule}}

    def DeleteSamplingRule(self, body):
        return {"SamplingRuleRecord": {"SamplingRule": self.rules.pop(body["RuleName"])}}

    def ListTagsForResource(self, body):
        return {"Tags": self.tags.get(body["ResourceARN"], [])}


# ---------------------------------------------------------------- the local emulator


def test_xray_on_the_installed_moto_is_the_truth(xray_lab):
    if moto_implements_xray_groups():
        assert_lifecycle(xray_lab, "xray", {("xray-group", "microservices")})
        return
    for action in ("plan", "apply", "verify"):
        res = xray_lab.run(action, ["xray"]).results["xray"]
        assert res.status is Status.UNSUPPORTED, (action, res.status, res.error)
        assert res.reason == UNSUPPORTED
        assert res.changes == [] and res.outputs == {}
    # nothing can exist where the calls don't: destroy has nothing to remove
    res = xray_lab.run("destroy", ["xray"]).results["xray"]
    assert res.status is Status.NOCHANGE and res.changes == []
    assert any(e.kind == "note" and UNSUPPORTED in e.message for e in xray_lab.events)


def test_a_404_from_aws_itself_is_a_failure_not_unsupported(xray_lab):
    """Unsupported is only ever the local emulator's answer; on AWS an error fails the step."""
    if moto_implements_xray_groups():
        pytest.skip("the installed moto implements X-Ray groups")
    xray_lab.ctx.target = Target("aws", REGION, None)
    res = xray_lab.run("apply", ["xray"], expect_ok=False).results["xray"]
    assert res.status is Status.FAILED
    assert "GetGroups" in res.error


# ---------------------------------------------------------------- an X-Ray like AWS's


def test_xray_lifecycle_against_an_xray_like_aws(xray_lab):
    fake = FakeXray().install(xray_lab)
    lab_name = xray_lab.config.lab
    outputs = assert_lifecycle(
        xray_lab,
        "xray",
        {("xray-group", "microservices"), ("sampling-rule", f"{lab_name}-sampling")},
    )
    assert outputs == {
        "group_arn": f"arn:aws:xray:{REGION}:{ACCOUNT}:group/microservices/ABCDEF",
        "sampling_rule": "microservices-sampling",
    }
    assert fake.groups == {} and fake.rules == {}
    assert "CreateGroup" in fake.calls and "DeleteSamplingRule" in fake.calls


def test_group_and_rule_as_configured_and_repaired(xray_lab):
    fake = FakeXray().install(xray_lab)
    xray_lab.run("apply", ["xray"])
    (group,) = fake.groups.values()
    expression = group["FilterExpression"]
    assert 'service("microservices-api/prod")' in expression
    for fn in ("auth", "users", "notifications", "authorizer"):
        assert f'service("microservices-{fn}")' in expression
    assert expression.count(" OR ") == 4
    (rule,) = fake.rules.values()
    assert {k: v for k, v in rule.items() if k not in ("RuleARN", "Attributes")} == {
        "RuleName": "microservices-sampling",
        "FixedRate": 0.05,
        "ReservoirSize": 1,
        "Priority": 9000,
        "ServiceName": "*",
        "ResourceARN": "*",
        "Host": "*",
        "HTTPMethod": "*",
        "URLPath": "/api/*",
        "ServiceType": "*",
        "Version": 1,
    }
    for arn in (group["GroupARN"], rule["RuleARN"]):
        tags = {t["Key"]: t["Value"] for t in fake.tags[arn]}
        assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "xray"

    rule["FixedRate"] = 1.0
    group["FilterExpression"] = "responsetime > 5"
    plan = xray_lab.run("plan", ["xray"])
    assert sorted((c.action, c.kind) for c in xray_lab.changes(plan, "xray")) == [
        ("update", "sampling-rule"),
        ("update", "xray-group"),
    ]
    xray_lab.run("apply", ["xray"])
    assert rule["FixedRate"] == 0.05 and group["FilterExpression"] == expression
    assert xray_lab.changes(xray_lab.run("plan", ["xray"]), "xray") == []


def test_a_same_named_group_of_someone_else_is_refused_and_left_alone(xray_lab):
    fake = FakeXray().install(xray_lab)
    fake.CreateGroup({"GroupName": "microservices", "FilterExpression": "ok", "Tags": []})
    res = xray_lab.run("apply", ["xray"], expect_ok=False).results["xray"]
    assert res.status is Status.FAILED and "exists but isn't lab microservices's" in res.error
    xray_lab.run("destroy", ["xray"])
    assert list(fake.groups) == ["microservices"]


def test_names_and_expressions(lab_config):
    assert rule_name("microservices") == "microservices-sampling"
    assert len(rule_name("a" * 32)) == 32
    assert filter_expression(lab_config).startswith('service("microservices-api/prod") OR ')
    assert sampling_rule(lab_config)["FixedRate"] == lab_config.xray.sampling_rate
