"""cloudwatch against moto: the dashboard names only resources the lab really has, alarms
with the right dimensions, the alarm topic with the email, and log-group retention checks."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest

from msctl.config import load_config
from msctl.engine import runner
from msctl.engine.model import Pending, Status
from msctl.resources import marked
from msctl.steps.base import LabStep
from msctl.steps.cloudwatch import CloudWatchStep, alarm_specs, dashboard_body, topic_name
from msctl.steps.run import StepRun

from .conftest import ROOT, Lab, assert_lifecycle
from .test_rds import VERSIONS, EngineCatalogue

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
EMAIL = "ops@example.com"


def client(service: str):
    return boto3.client(service, region_name=REGION)


# ---------------------------------------------------------------- stand-ins for unregistered steps


def _log_group(config, name: str) -> None:
    client("logs").create_log_group(logGroupName=name)
    client("logs").put_retention_policy(
        logGroupName=name, retentionInDays=config.cloudwatch.log_retention_days
    )


def _build_lambda(config) -> dict:
    iam = client("iam")
    role = iam.create_role(
        RoleName="fake-lambda-role",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    functions = {}
    for key, fn in config.lambda_.functions.items():
        _log_group(config, f"/aws/lambda/{fn.name}")
        arn = client("lambda").create_function(
            FunctionName=fn.name,
            Runtime=config.lambda_.runtime,
            Role=role,
            Handler="handler.lambda_handler",
            Code={"ZipFile": buf.getvalue()},
        )["FunctionArn"]
        functions[key] = {"name": fn.name, "arn": arn}
    return {"functions": functions}


def _build_ecs(config) -> dict:
    ecs = client("ecs")
    cluster_arn = ecs.create_cluster(clusterName=config.ecs.cluster)["cluster"]["clusterArn"]
    services, task_definitions = {}, {}
    for key, svc in config.ecs.services.items():
        _log_group(config, svc.log_group)
        td = ecs.register_task_definition(
            family=svc.family,
            containerDefinitions=[{"name": key, "image": "nginx", "memory": svc.memory}],
        )["taskDefinition"]["taskDefinitionArn"]
        services[key] = ecs.create_service(
            cluster=config.ecs.cluster, serviceName=svc.service, taskDefinition=td, desiredCount=0
        )["service"]["serviceArn"]
        task_definitions[key] = td
    return {"cluster_arn": cluster_arn, "services": services, "task_definitions": task_definitions}


def _build_apigw(config) -> dict:
    api = client("apigateway")
    api_id = api.create_rest_api(name=config.apigw.name)["id"]
    root = api.get_resources(restApiId=api_id)["items"][0]["id"]
    api.put_method(restApiId=api_id, resourceId=root, httpMethod="GET", authorizationType="NONE")
    api.put_integration(restApiId=api_id, resourceId=root, httpMethod="GET", type="MOCK")
    api.create_deployment(restApiId=api_id, stageName=config.apigw.stage)
    _log_group(config, config.apigw.access_log_group)
    stage = config.apigw.stage
    return {
        "rest_api_id": api_id,
        "stage": stage,
        "invoke_url": f"https://{api_id}.execute-api.{REGION}.amazonaws.com/{stage}",
        "execution_arn": f"arn:aws:execute-api:{REGION}:123456789012:{api_id}",
    }


def _build_rds(config) -> dict:
    db = client("rds").create_db_instance(
        DBInstanceIdentifier=config.rds.identifier,
        DBInstanceClass=config.rds.instance_class,
        Engine="postgres",
        AllocatedStorage=config.rds.allocated_storage,
        MasterUsername=config.rds.master_username,
        ManageMasterUserPassword=True,
    )["DBInstance"]
    return {
        "identifier": config.rds.identifier,
        "arn": db["DBInstanceArn"],
        "secret_arn": db.get("MasterUserSecret", {}).get("SecretArn", ""),
        "port": 5432,
        "db_name": config.rds.db_name,
        "endpoint_address": None,
    }


BUILDERS = {"lambda": _build_lambda, "ecs": _build_ecs, "apigw": _build_apigw, "rds": _build_rds}


def _outputs_only(config) -> dict:
    """What the four steps report (docs/steps.md), without building anything: for tests of
    the alarm topic and alarm repair, which read nothing of those resources."""
    arn = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:{{}}"
    stage = config.apigw.stage
    return {
        "lambda": {
            "functions": {
                k: {"name": f.name, "arn": arn.format("lambda", f"function:{f.name}")}
                for k, f in config.lambda_.functions.items()
            }
        },
        "ecs": {
            "cluster_arn": arn.format("ecs", f"cluster/{config.ecs.cluster}"),
            "services": {
                k: arn.format("ecs", f"service/{config.ecs.cluster}/{s.service}")
                for k, s in config.ecs.services.items()
            },
            "task_definitions": {
                k: arn.format("ecs", f"task-definition/{s.family}:1")
                for k, s in config.ecs.services.items()
            },
        },
        "apigw": {
            "rest_api_id": "abc123",
            "stage": stage,
            "invoke_url": f"https://abc123.execute-api.{REGION}.amazonaws.com/{stage}",
            "execution_arn": arn.format("execute-api", "abc123"),
        },
        "rds": {
            "identifier": config.rds.identifier,
            "arn": arn.format("rds", f"db:{config.rds.identifier}"),
            "secret_arn": arn.format("secretsmanager", "secret:rds!db-1a2b-AbCdEf"),
            "port": 5432,
            "db_name": config.rds.db_name,
            "endpoint_address": None,
        },
    }


def _fake_step(step_name: str, build) -> LabStep:
    """Stands in for a step: builds what that step would (names from the config, log groups
    with the configured retention) on its first apply."""

    class Fake(LabStep):
        name = step_name
        outputs: dict | None = None

        def reconcile(self, run: StepRun) -> dict:
            if self.outputs is None:
                if run.dry_run:
                    return {"pending": Pending(step_name)}
                self.outputs = build(run.config)
            return self.outputs

        def teardown(self, run: StepRun) -> None:
            pass

    return Fake()


def apply_dependencies(lab: Lab, step: str) -> None:
    """Apply everything `step` requires, with the registered steps, once; later runs reuse
    their outputs instead of reconciling the whole chain again (seconds per run on moto)."""
    deps = [s for s in runner.select(lab.steps, [step], "apply") if s != step]
    lab.run("apply", deps)
    for name in deps:
        lab.steps[name] = frozen = _fake_step(name, None)
        frozen.outputs = lab.state.outputs(name)


def install_steps(lab: Lab, real: bool) -> Lab:
    """real: the registered lambda, ecs, apigw and rds steps and their whole chain, applied
    once (a step not registered is built by BUILDERS). Otherwise stand-ins that only report
    outputs, for tests of cloudwatch's own behaviour."""
    canned = _outputs_only(lab.config)
    for name, build in BUILDERS.items():
        if not real:
            lab.steps[name] = _fake_step(name, lambda _config, n=name: canned[n])
        elif name not in lab.steps:
            lab.steps[name] = _fake_step(name, build)
    lab.steps.setdefault("cloudwatch", CloudWatchStep())
    if real:
        EngineCatalogue(VERSIONS).install(lab)  # the real rds step resolves "15" through it
        apply_dependencies(lab, "cloudwatch")
    return lab


def _cw_lab(lab: Lab, monkeypatch, real: bool) -> Lab:
    # moto reports this many running tasks per ECS service (read at CreateService); without
    # it the ecs step never sees its services steady.
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    return install_steps(lab, real)


@pytest.fixture
def cw_lab(lab, monkeypatch):
    """cloudwatch on the real steps it requires (and theirs) when registered."""
    return _cw_lab(lab, monkeypatch, real=True)


@pytest.fixture
def quick_cw_lab(lab, monkeypatch):
    """cloudwatch on stand-ins, for behaviour that doesn't depend on the chain."""
    return _cw_lab(lab, monkeypatch, real=False)


def use_config(lab: Lab, *overrides: str) -> None:
    config = load_config(ROOT / "config" / "lab.yaml", list(overrides))
    lab.config = config
    lab.ctx.config = config


# ---------------------------------------------------------------- reading back


def dashboard_metrics(name: str) -> list[tuple[str, str, dict[str, str]]]:
    """(namespace, metric, dimensions) of every metric on the dashboard, as CloudWatch has it."""
    body = json.loads(client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"])
    out = []
    for widget in metric_widgets(body):
        for row in widget["properties"]["metrics"]:
            row = [x for x in row if not isinstance(x, dict)]
            namespace, metric, rest = row[0], row[1], row[2:]
            out.append((namespace, metric, dict(zip(rest[::2], rest[1::2], strict=True))))
    return out


def metric_widgets(body: dict) -> list[dict]:
    return [w for w in body["widgets"] if w["type"] == "metric"]


def alarms(prefix: str) -> dict[str, dict]:
    found = client("cloudwatch").describe_alarms(AlarmNamePrefix=f"{prefix}-")["MetricAlarms"]
    return {a["AlarmName"]: a for a in found}


def topics(name: str) -> list[str]:
    return [
        t["TopicArn"]
        for t in client("sns").list_topics()["Topics"]
        if t["TopicArn"].endswith(f":{name}")
    ]


# ---------------------------------------------------------------- tests


def test_cloudwatch_lifecycle(cw_lab):
    specs = alarm_specs(cw_lab.config)
    outputs = assert_lifecycle(
        cw_lab,
        "cloudwatch",
        {("dashboard", "microservices-dashboard"), ("sns-topic", "microservices-alarms")}
        | {("alarm", s["AlarmName"]) for s in specs},
    )
    assert outputs["dashboard"] == "microservices-dashboard"
    assert outputs["alarm_names"] == [s["AlarmName"] for s in specs]
    assert all(n.startswith("microservices-") for n in outputs["alarm_names"])
    assert outputs["topic_arn"].endswith(":microservices-alarms")
    assert alarms(cw_lab.config.lab) == {} and topics("microservices-alarms") == []
    assert client("cloudwatch").list_dashboards()["DashboardEntries"] == []


def test_dashboard_and_alarms_name_only_what_the_lab_has(cw_lab):
    result = cw_lab.run("apply", ["cloudwatch"])
    config = cw_lab.config
    functions = {f["FunctionName"] for f in client("lambda").list_functions()["Functions"]}
    ecs = client("ecs")
    clusters = {
        c["clusterName"] for c in ecs.describe_clusters(clusters=[config.ecs.cluster])["clusters"]
    }
    services = {
        s["serviceName"]
        for s in ecs.describe_services(
            cluster=config.ecs.cluster,
            services=ecs.list_services(cluster=config.ecs.cluster)["serviceArns"],
        )["services"]
        if s["status"] == "ACTIVE"
    }
    databases = {
        d["DBInstanceIdentifier"] for d in client("rds").describe_db_instances()["DBInstances"]
    }
    apigw_id = cw_lab.state.outputs("apigw")["rest_api_id"]
    api = client("apigateway").get_rest_api(restApiId=apigw_id)
    stages = {s["stageName"] for s in client("apigateway").get_stages(restApiId=apigw_id)["item"]}

    def assert_exists(dims: dict[str, str]) -> None:
        for key, value in dims.items():
            assert (
                value
                in {
                    "FunctionName": functions,
                    "ClusterName": clusters,
                    "ServiceName": services,
                    "DBInstanceIdentifier": databases,
                    "ApiName": {api["name"]},
                    "Stage": stages,
                }[key]
            ), (key, value)

    metrics = dashboard_metrics(config.cloudwatch.dashboard)
    for _namespace, _metric, dims in metrics:
        assert_exists(dims)
    seen = {(ns, m) for ns, m, _ in metrics}
    assert seen == {
        ("AWS/ApiGateway", "Count"),
        ("AWS/ApiGateway", "Latency"),
        ("AWS/Lambda", "Invocations"),
        ("AWS/Lambda", "Errors"),
        ("AWS/ECS", "CPUUtilization"),
        ("AWS/ECS", "MemoryUtilization"),
        ("AWS/RDS", "DatabaseConnections"),
        ("AWS/RDS", "CPUUtilization"),
    }
    # every function and every service has its lines
    assert {d["FunctionName"] for _, m, d in metrics if m == "Invocations"} == functions
    assert {d["ServiceName"] for _, m, d in metrics if m == "MemoryUtilization"} == services
    body = json.loads(
        client("cloudwatch").get_dashboard(DashboardName=config.cloudwatch.dashboard)[
            "DashboardBody"
        ]
    )
    assert body == dashboard_body(config, REGION)
    assert {w["properties"]["region"] for w in metric_widgets(body)} == {REGION}

    found = alarms(config.lab)
    assert set(found) == set(result.results["cloudwatch"].outputs["alarm_names"])
    # Every alarm notifies the topic, email or not (AWS FSBP CloudWatch.15).
    (topic,) = topics("microservices-alarms")
    for alarm in found.values():
        assert_exists({d["Name"]: d["Value"] for d in alarm["Dimensions"]})
        assert alarm["AlarmActions"] == [topic] and alarm["ActionsEnabled"] is True
    five = found["microservices-api-5xx-rate"]
    assert (five["MetricName"], five["Statistic"], five["Threshold"]) == (
        "5XXError",
        "Average",
        0.05,
    )
    assert {d["Name"] for d in five["Dimensions"]} == {"ApiName", "Stage"}
    assert {
        d["Value"] for a in found.values() if a["MetricName"] == "Errors" for d in a["Dimensions"]
    } == functions
    assert {
        (d["Name"], d["Value"])
        for a in found.values()
        if a["Namespace"] == "AWS/ECS"
        for d in a["Dimensions"]
        if d["Name"] == "ServiceName"
    } == {("ServiceName", s) for s in services}
    rds = {a["MetricName"]: a for a in found.values() if a["Namespace"] == "AWS/RDS"}
    assert (
        rds["CPUUtilization"]["Threshold"] == 80 and rds["DatabaseConnections"]["Threshold"] == 50
    )
    tags = client("cloudwatch").list_tags_for_resource(ResourceARN=five["AlarmArn"])["Tags"]
    assert {"Key": "msctl:lab", "Value": "microservices"} in tags

    # verify checks every log group of the lab, and its retention
    checks = cw_lab.run("verify", ["cloudwatch"]).results["cloudwatch"].checks
    log_checks = {c.name: c for c in checks if c.name.startswith("log-group ")}
    assert set(log_checks) == {
        *(f"log-group /aws/lambda/{f}" for f in functions),
        "log-group /ecs/microservices-products",
        "log-group /ecs/microservices-orders",
        "log-group /aws/apigateway/microservices-api",
    }
    client("logs").put_retention_policy(
        logGroupName="/ecs/microservices-orders", retentionInDays=30
    )
    res = cw_lab.run("verify", ["cloudwatch"], expect_ok=False).results["cloudwatch"]
    assert [c.name for c in res.checks if not c.ok] == ["log-group /ecs/microservices-orders"]


def test_alarm_email_subscribes_to_the_topic_and_removing_it_unsubscribes(quick_cw_lab):
    cw_lab = quick_cw_lab
    use_config(cw_lab, f"cloudwatch.alarm_email={EMAIL}")
    cw_lab.run("apply", ["cloudwatch"])
    name = topic_name(cw_lab.config.lab)
    (topic,) = topics(name)
    subs = client("sns").list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", EMAIL)]
    assert all(a["AlarmActions"] == [topic] for a in alarms(cw_lab.config.lab).values())
    assert cw_lab.state.outputs("cloudwatch")["topic_arn"] == topic

    cw_lab.recorder.calls.clear()
    cw_lab.run("apply", ["cloudwatch"])
    assert cw_lab.recorder.mutating() == []  # no second subscription, nothing re-put

    use_config(cw_lab)  # alarm_email back to null: the topic and the alarms' action stay
    plan = cw_lab.run("plan", ["cloudwatch"])
    changes = {(c.action, c.kind, c.name) for c in cw_lab.changes(plan, "cloudwatch")}
    assert changes == {("delete", "subscription", f"{name} email {EMAIL}")}
    cw_lab.run("apply", ["cloudwatch"])
    assert topics(name) == [topic]
    assert client("sns").list_subscriptions()["Subscriptions"] == []
    assert all(a["AlarmActions"] == [topic] for a in alarms(cw_lab.config.lab).values())
    assert cw_lab.state.outputs("cloudwatch")["topic_arn"] == topic

    use_config(cw_lab, f"cloudwatch.alarm_email={EMAIL}")
    cw_lab.run("apply", ["cloudwatch"])
    cw_lab.run("destroy", ["cloudwatch"])
    assert topics(name) == [] and alarms(cw_lab.config.lab) == {}


def test_an_alarm_changed_by_hand_is_put_back(quick_cw_lab):
    cw_lab = quick_cw_lab
    cw_lab.run("apply", ["cloudwatch"])
    cw = client("cloudwatch")
    cw.put_metric_alarm(
        AlarmName="microservices-rds-cpu-high",
        Namespace="AWS/RDS",
        MetricName="CPUUtilization",
        Dimensions=[{"Name": "DBInstanceIdentifier", "Value": "microservices-db"}],
        Statistic="Average",
        Period=300,
        EvaluationPeriods=1,
        Threshold=95,
        ComparisonOperator="GreaterThanThreshold",
    )
    plan = cw_lab.run("plan", ["cloudwatch"])
    assert [(c.action, c.name) for c in cw_lab.changes(plan, "cloudwatch")] == [
        ("update", "microservices-rds-cpu-high")
    ]
    cw_lab.run("apply", ["cloudwatch"])
    assert alarms("microservices")["microservices-rds-cpu-high"]["Threshold"] == 80


def test_the_dashboard_body_carries_the_labs_mark(lab_config):
    body = json.dumps(dashboard_body(lab_config, REGION))
    assert marked(body) == {"msctl:lab": "microservices", "msctl:step": "cloudwatch"}


def test_a_same_named_dashboard_without_the_mark_is_refused_and_left_alone(quick_cw_lab):
    cw_lab = quick_cw_lab
    name = cw_lab.config.cloudwatch.dashboard
    foreign = json.dumps({"widgets": [{"type": "text", "properties": {"markdown": "ours"}}]})
    client("cloudwatch").put_dashboard(DashboardName=name, DashboardBody=foreign)
    res = cw_lab.run("apply", ["cloudwatch"], expect_ok=False).results["cloudwatch"]
    assert res.status is Status.FAILED
    assert f"dashboard {name}" in res.error and "isn't lab microservices's" in res.error
    cw_lab.run("destroy", ["cloudwatch"])
    body = client("cloudwatch").get_dashboard(DashboardName=name)["DashboardBody"]
    assert json.loads(body) == json.loads(foreign)
