"""alb against moto: the load balancer, target groups, listeners and rules as AWS reports
them (each rule also wants the lab's origin secret, kept in Secrets Manager and nowhere in
msctl's files), drift repair of rules, the optional HTTPS listener, and foreign resources."""

from __future__ import annotations

import json

import boto3
import pytest

from msctl.engine.model import Status
from msctl.local.alb import LoadBalancer

from .conftest import assert_lifecycle

ALB = "microservices-alb"
PRODUCTS_TG = "microservices-products-tg"
ORDERS_TG = "microservices-orders-tg"
ORIGIN_SECRET = "microservices/alb-origin"
FORBIDDEN = {
    "Type": "fixed-response",
    "FixedResponseConfig": {
        "StatusCode": "403",
        "ContentType": "application/json",
        "MessageBody": '{"error":"Forbidden"}',
    },
}


@pytest.fixture
def aws(aws, monkeypatch):
    """The ALB needs no AWS-managed IAM policies: not loading them saves ~2 s per test."""
    monkeypatch.delenv("MOTO_IAM_LOAD_MANAGED_POLICIES")
    yield


@pytest.fixture
def elb():
    return boto3.client("elbv2", region_name="us-east-1")


@pytest.fixture
def sm():
    return boto3.client("secretsmanager", region_name="us-east-1")


def origin_value(sm) -> str:
    return sm.get_secret_value(SecretId=ORIGIN_SECRET)["SecretString"]


def reconfigure(lab, config) -> None:
    lab.config = config
    lab.ctx.config = config


def with_certificate(lab_config, arn: str | None):
    return lab_config.model_copy(
        update={"alb": lab_config.alb.model_copy(update={"certificate_arn": arn})}
    )


def routes(elb, listener_arn: str) -> dict[str, tuple[str, list[str], dict[str, list[str]]]]:
    """{priority: (target group name, path patterns, {header: values})} of a listener's
    non-default rules."""
    names = {
        tg["TargetGroupArn"]: tg["TargetGroupName"]
        for tg in elb.describe_target_groups()["TargetGroups"]
    }
    result = {}
    for rule in elb.describe_rules(ListenerArn=listener_arn)["Rules"]:
        if rule["IsDefault"]:
            continue
        (action,) = rule["Actions"]
        assert action["Type"] == "forward"
        patterns, headers = [], {}
        for condition in rule["Conditions"]:
            if condition["Field"] == "path-pattern":
                patterns += condition.get("PathPatternConfig", {}).get("Values") or []
            else:
                assert condition["Field"] == "http-header"
                config = condition["HttpHeaderConfig"]
                headers[config["HttpHeaderName"]] = config["Values"]
        result[rule["Priority"]] = (names[action["TargetGroupArn"]], patterns, headers)
    return result


def seed_routes(sm) -> dict:
    origin = {"X-Lab-Origin": [origin_value(sm)]}
    return {"10": (PRODUCTS_TG, ["/products*"], origin), "20": (ORDERS_TG, ["/orders*"], origin)}


def default_actions(elb, listener_arn: str) -> list[dict]:
    (listener,) = elb.describe_listeners(ListenerArns=[listener_arn])["Listeners"]
    return [
        {k: v for k, v in a.items() if k in ("Type", "FixedResponseConfig")}
        for a in listener["DefaultActions"]
    ]


def test_alb_lifecycle(lab, elb, sm):
    outputs = assert_lifecycle(
        lab,
        "alb",
        {
            ("secret", ORIGIN_SECRET),
            ("load-balancer", ALB),
            ("target-group", PRODUCTS_TG),
            ("target-group", ORDERS_TG),
            ("listener", f"{ALB}:80"),
        },
    )
    assert set(outputs["target_group_arns"]) == {"products", "orders"}
    assert outputs["dns_name"] and outputs["https_listener_arn"] is None
    assert outputs["origin_secret_arn"].startswith("arn:aws:secretsmanager:")
    assert elb.describe_load_balancers()["LoadBalancers"] == []
    assert elb.describe_target_groups()["TargetGroups"] == []
    assert sm.list_secrets()["SecretList"] == []


def test_alb_matches_the_seed(lab, elb, sm):
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    net = lab.state.outputs("vpc")
    alb_sg = lab.state.outputs("sg")["group_ids"]["microservices-alb-sg"]

    (lb,) = elb.describe_load_balancers(Names=[ALB])["LoadBalancers"]
    assert lb["LoadBalancerArn"] == out["arn"] and lb["DNSName"] == out["dns_name"]
    assert (lb["Scheme"], lb["Type"], lb["IpAddressType"]) == (
        "internet-facing",
        "application",
        "ipv4",
    )
    assert lb["State"]["Code"] == "active"
    assert {az["SubnetId"] for az in lb["AvailabilityZones"]} == set(net["public_subnet_ids"])
    assert lb["SecurityGroups"] == [alb_sg]
    tags = {
        t["Key"]: t["Value"]
        for t in elb.describe_tags(ResourceArns=[lb["LoadBalancerArn"]])["TagDescriptions"][0][
            "Tags"
        ]
    }
    assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "alb"

    for service, name in (("products", PRODUCTS_TG), ("orders", ORDERS_TG)):
        (tg,) = elb.describe_target_groups(Names=[name])["TargetGroups"]
        assert tg["TargetGroupArn"] == out["target_group_arns"][service]
        assert (tg["Protocol"], tg["Port"], tg["TargetType"], tg["VpcId"]) == (
            "HTTP",
            8080,
            "ip",
            net["vpc_id"],
        )
        assert tg["HealthCheckPath"] == "/health"
        assert tg["Matcher"]["HttpCode"] == "200"
        attributes = elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])
        delay = {a["Key"]: a["Value"] for a in attributes["Attributes"]}[
            "deregistration_delay.timeout_seconds"
        ]
        assert delay == "10"

    (listener,) = elb.describe_listeners(LoadBalancerArn=out["arn"])["Listeners"]
    assert listener["ListenerArn"] == out["listener_arn"]
    assert (listener["Protocol"], listener["Port"]) == ("HTTP", 80)
    assert default_actions(elb, out["listener_arn"]) == [FORBIDDEN]
    assert json.loads(FORBIDDEN["FixedResponseConfig"]["MessageBody"]) == {"error": "Forbidden"}
    assert routes(elb, out["listener_arn"]) == seed_routes(sm)


def test_changes_made_by_hand_are_fixed_by_the_next_apply(lab, elb, sm):
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    listener = out["listener_arn"]
    rules = {r["Priority"]: r for r in elb.describe_rules(ListenerArn=listener)["Rules"]}
    # products' rule now forwards to orders; orders' rule is gone; an extra rule appears.
    elb.modify_rule(
        RuleArn=rules["10"]["RuleArn"],
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/products*"]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": out["target_group_arns"]["orders"]}],
    )
    elb.delete_rule(RuleArn=rules["20"]["RuleArn"])
    elb.create_rule(
        ListenerArn=listener,
        Priority=99,
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/debug*"]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": out["target_group_arns"]["products"]}],
    )
    plan = lab.run("plan", ["alb"])
    assert sorted((c.action, c.name) for c in lab.changes(plan, "alb")) == [
        ("create", f"{ALB}:80 priority 20"),
        ("delete", f"{ALB}:80 priority 99"),
        ("update", f"{ALB}:80 priority 10"),
    ]
    checks = lab.run("verify", ["alb"], expect_ok=False).results["alb"].checks
    assert sorted(c.name for c in checks if not c.ok) == [
        f"listener-rule {ALB}:80 priority 10",
        f"listener-rule {ALB}:80 priority 20",
        f"listener-rule {ALB}:80 priority 99",
    ]
    lab.run("apply", ["alb"])
    assert routes(elb, listener) == seed_routes(sm)
    assert lab.changes(lab.run("plan", ["alb"]), "alb") == []

    # The listener forwards by default; products' health check and deregistration delay changed.
    products = out["target_group_arns"]["products"]
    elb.modify_listener(
        ListenerArn=out["listener_arn"],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": products}],
    )
    elb.modify_target_group(TargetGroupArn=products, HealthCheckPath="/")
    elb.modify_target_group_attributes(
        TargetGroupArn=products,
        Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "300"}],
    )
    plan = lab.run("plan", ["alb"])
    assert sorted((c.action, c.kind, c.name) for c in lab.changes(plan, "alb")) == [
        ("update", "listener", f"{ALB}:80"),
        ("update", "target-group", PRODUCTS_TG),
        ("update", "target-group", PRODUCTS_TG),
    ]
    lab.run("apply", ["alb"])
    assert default_actions(elb, out["listener_arn"]) == [FORBIDDEN]
    (tg,) = elb.describe_target_groups(TargetGroupArns=[products])["TargetGroups"]
    assert tg["HealthCheckPath"] == "/health"
    assert lab.changes(lab.run("plan", ["alb"]), "alb") == []


def test_https_listener_follows_certificate_arn(lab, lab_config, elb, sm):
    acm = boto3.client("acm", region_name="us-east-1")
    cert = acm.request_certificate(DomainName="api.example.com", ValidationMethod="DNS")[
        "CertificateArn"
    ]
    reconfigure(lab, with_certificate(lab_config, cert))
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    assert out["https_listener_arn"]
    (https,) = elb.describe_listeners(ListenerArns=[out["https_listener_arn"]])["Listeners"]
    assert (https["Protocol"], https["Port"]) == ("HTTPS", 443)
    assert https["SslPolicy"] == "ELBSecurityPolicy-TLS13-1-2-2021-06"
    assert [c["CertificateArn"] for c in https["Certificates"]] == [cert]
    assert default_actions(elb, out["https_listener_arn"]) == [FORBIDDEN]
    assert routes(elb, out["https_listener_arn"]) == seed_routes(sm)
    assert lab.changes(lab.run("plan", ["alb"]), "alb") == []

    reconfigure(lab, with_certificate(lab_config, None))
    plan = lab.run("plan", ["alb"])
    assert [(c.action, c.name) for c in lab.changes(plan, "alb")] == [("delete", f"{ALB}:443")]
    lab.run("apply", ["alb"])
    ports = [lst["Port"] for lst in elb.describe_listeners(LoadBalancerArn=out["arn"])["Listeners"]]
    assert ports == [80]
    assert lab.state.outputs("alb")["https_listener_arn"] is None


def test_foreign_load_balancer_is_neither_adopted_nor_deleted(lab, elb):
    lab.run("apply", ["sg"])
    subnets = lab.state.outputs("vpc")["public_subnet_ids"]
    elb.create_load_balancer(Name=ALB, Subnets=subnets, Tags=[{"Key": "team", "Value": "other"}])
    result = lab.run("apply", ["alb"], expect_ok=False)
    assert result.results["alb"].status is Status.FAILED
    assert "isn't lab microservices's" in result.results["alb"].error
    lab.run("destroy", ["alb"])
    assert [lb["LoadBalancerName"] for lb in elb.describe_load_balancers()["LoadBalancers"]] == [
        ALB
    ]


def test_the_origin_secret_is_the_labs_own_and_in_no_file_of_msctls(lab, elb, sm, tmp_path):
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    value = origin_value(sm)
    assert len(value) == 64 and int(value, 16) >= 0  # 256 random bits, hex
    secret = sm.describe_secret(SecretId=ORIGIN_SECRET)
    assert secret["ARN"] == out["origin_secret_arn"]
    tags = {t["Key"]: t["Value"] for t in secret["Tags"]}
    assert (tags["msctl:lab"], tags["msctl:step"]) == ("microservices", "alb")
    lab.run("apply", ["alb"])
    assert origin_value(sm) == value  # made once

    lab.recorder.calls.clear()
    lab.run("destroy", ["alb"])
    deletes = [op for _, op in lab.recorder.mutating() if op.startswith("Delete")]
    assert deletes.index("DeleteSecret") > deletes.index("DeleteLoadBalancer")
    assert sm.list_secrets()["SecretList"] == []
    files = [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    events = [f"{e.kind} {e.step} {e.message}" for e in lab.events]
    assert files and not [text for text in [*files, *events] if value in text]


def test_rules_without_the_origin_secret_are_fixed_and_a_new_secret_is_followed(lab, elb, sm):
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    listener, groups = out["listener_arn"], out["target_group_arns"]
    rules = {r["Priority"]: r for r in elb.describe_rules(ListenerArn=listener)["Rules"]}
    path = {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/orders*"]}}
    forward = [{"Type": "forward", "TargetGroupArn": groups["orders"]}]
    # One rule forwards without the header, one wants another value.
    elb.modify_rule(
        RuleArn=rules["10"]["RuleArn"],
        Conditions=[{"Field": "path-pattern", "PathPatternConfig": {"Values": ["/products*"]}}],
        Actions=[{"Type": "forward", "TargetGroupArn": groups["products"]}],
    )
    other = {"HttpHeaderName": "X-Lab-Origin", "Values": ["0" * 64]}
    elb.modify_rule(
        RuleArn=rules["20"]["RuleArn"],
        Conditions=[path, {"Field": "http-header", "HttpHeaderConfig": other}],
        Actions=forward,
    )
    plan = lab.run("plan", ["alb"])
    assert sorted((c.action, c.name, c.detail) for c in lab.changes(plan, "alb")) == [
        ("update", f"{ALB}:80 priority 10", f"/products* with X-Lab-Origin -> {PRODUCTS_TG}"),
        ("update", f"{ALB}:80 priority 20", f"/orders* with X-Lab-Origin -> {ORDERS_TG}"),
    ]
    lab.run("apply", ["alb"])
    assert routes(elb, listener) == seed_routes(sm)

    # The secret deleted by hand: the next apply makes a new one and moves the rules to it.
    before = origin_value(sm)
    sm.delete_secret(SecretId=ORIGIN_SECRET, ForceDeleteWithoutRecovery=True)
    plan = lab.run("plan", ["alb"])
    assert sorted((c.action, c.kind) for c in lab.changes(plan, "alb")) == [
        ("create", "secret"),
        ("update", "listener-rule"),
        ("update", "listener-rule"),
    ]
    lab.run("apply", ["alb"])
    assert origin_value(sm) != before
    assert routes(elb, listener) == seed_routes(sm)
    assert lab.changes(lab.run("plan", ["alb"]), "alb") == []


def test_the_local_alb_emulation_forwards_only_what_carries_the_origin_secret(lab, elb, sm):
    """The rules as the step makes them, read by the local data plane's ALB emulation."""
    lab.run("apply", ["alb"])
    out = lab.state.outputs("alb")
    lb = LoadBalancer.load(elb, out["dns_name"])
    for service, arn in out["target_group_arns"].items():
        lb.register(arn, f"http://{service}.local")
    forged = [("X-Authorized-User-Id", "victim"), ("X-Authorized-Role", "admin")]
    for path in ("/orders", "/products/1", "/health", "/"):
        for headers in (forged, [*forged, ("X-Lab-Origin", "guess")]):
            kind, answer = lb.route(path, headers)
            assert (kind, answer["status"], json.loads(answer["body"])) == (
                "fixed",
                403,
                {"error": "Forbidden"},
            )
    origin = [("X-Lab-Origin", origin_value(sm))]
    assert lb.route("/orders/3", [*forged, *origin]) == ("forward", "http://orders.local")
    assert lb.route("/products", origin) == ("forward", "http://products.local")
    assert lb.route("/other", origin)[0] == "fixed"
