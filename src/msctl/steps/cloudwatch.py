"""cloudwatch: the dashboard, alarms and the alarm topic (seed 7.1, 7.3).

The log groups of seed 7.1 belong to the steps whose services write to them (lambda:
/aws/lambda/<function>, ecs: each service's log group, apigw: the access log group); each
creates its own with `cloudwatch.log_retention_days`. This step doesn't create them again;
its verify checks that every one exists with that retention, so `status` shows them.

The dashboard (seed 7.3) shows API Gateway requests and latency, Lambda invocations and
errors per function, ECS CPU and memory per service, RDS connections and CPU, all wired to
the names the other steps create. CloudWatch dashboards can't be tagged: the dashboard is
found by its configured name.

Alarms, one per thing that can break:
- API 5XX rate: `5XXError` Average > 0.05 over 5 minutes. API Gateway publishes 5XXError as
  0 or 1 per request, so its Average is the fraction of requests that failed: > 0.05 is a
  5XX rate above 5%, with no metric math (which is harder to compare and to read back).
- Lambda Errors Sum > 0 over 5 minutes, per function.
- ECS CPUUtilization Average > 80% per service; RDS CPUUtilization > 80%;
  RDS DatabaseConnections > 50.
Missing data (no traffic) is not breaching. With `cloudwatch.alarm_email` set, the alarms
notify the SNS topic `<lab>-alarms`, which has an email subscription (confirmed by the
recipient from the email AWS sends; pending until then). Without it there is no topic.
"""

from __future__ import annotations

import json

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.logs import find_log_group
from ..aws.tags import as_dict, as_list
from ..engine.model import Check, is_pending
from ..engine.step import Fix, Resource, Step, StepRun, claim, only_one

PERIOD = 300
WIDGET_WIDTH = 12
WIDGET_HEIGHT = 6


class CloudWatchStep(Step):
    name = "cloudwatch"
    requires = ("lambda", "ecs", "apigw", "rds")
    services = ("cloudwatch", "sns", "logs")
    description = "dashboard, alarms and the alarm email topic"

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.cloudwatch
        cw = run.clients.cloudwatch
        lab = run.ctx.lab

        body = dashboard_body(run.config, run.clients.region)
        run.ensure(
            "dashboard",
            cfg.dashboard,
            id_key="DashboardName",
            arn_key="DashboardArn",
            find=lambda: find_dashboard(cw, cfg.dashboard),
            create=lambda: _put_dashboard(cw, cfg.dashboard, body),
            fixes=lambda found: _dashboard_fixes(cw, found, body),
        )

        topic_arn = self._topic(run)
        actions = [topic_arn] if topic_arn else []
        names = []
        for spec in alarm_specs(run.config):
            name = spec["AlarmName"]
            names.append(name)
            run.ensure(
                "alarm",
                name,
                id_key="AlarmName",
                arn_key="AlarmArn",
                find=lambda n=name: find_alarm(cw, lab, n),
                create=lambda s=spec: _put_alarm(run, s, actions),
                fixes=lambda found, s=spec: _alarm_fixes(run, found, s, actions),
            )
        return {"dashboard": cfg.dashboard, "alarm_names": names, "topic_arn": topic_arn}

    def _topic(self, run: StepRun) -> str | None:
        """The alarm topic and its email subscription; no topic without an email."""
        sns = run.clients.sns
        lab = run.ctx.lab
        name = topic_name(lab)
        email = run.config.cloudwatch.alarm_email
        if not email:
            run.remove(
                "sns-topic",
                name,
                find=lambda: find_topic(sns, lab, name),
                delete=lambda topic: sns.delete_topic(TopicArn=topic["TopicArn"]),
            )
            return None
        topic_arn = run.ensure(
            "sns-topic",
            name,
            id_key="TopicArn",
            arn_key="TopicArn",
            find=lambda: find_topic(sns, lab, name),
            create=lambda: sns.create_topic(Name=name, Tags=as_list(run.tags(name))),
        )
        subscriptions = [] if is_pending(topic_arn) else _email_subscriptions(sns, topic_arn)
        subscribed = [s for s in subscriptions if s["Endpoint"].lower() == email.lower()]
        run.setting(
            "subscription",
            f"{name} email {email}",
            ok=bool(subscribed),
            detail="subscribe (AWS emails a confirmation link)",
            action="create",
            after=[topic_arn],
            apply=lambda: sns.subscribe(TopicArn=topic_arn, Protocol="email", Endpoint=email),
        )
        for sub in subscriptions:
            arn = sub["SubscriptionArn"]
            # A subscription pending confirmation has no ARN and can't be removed; AWS drops
            # it if it is never confirmed.
            if sub in subscribed or not arn.startswith("arn:"):
                continue
            run.setting(
                "subscription",
                f"{name} email {sub['Endpoint']}",
                ok=False,
                detail="not the configured alarm_email: unsubscribe",
                action="delete",
                apply=lambda a=arn: sns.unsubscribe(SubscriptionArn=a),
            )
        return topic_arn

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        logs = run.clients.logs
        days = run.config.cloudwatch.log_retention_days
        for name, owner in log_groups(run.config):
            group = find_log_group(logs, name)
            if group is None:
                checks.append(Check(f"log-group {name}", False, f"missing (the {owner} step)"))
                continue
            retention = group.get("retentionInDays")
            checks.append(
                Check(
                    f"log-group {name}",
                    retention == days,
                    f"retention {retention or 'never expire'} days"
                    + ("" if retention == days else f", expected {days} (the {owner} step)"),
                )
            )
        return checks

    def teardown(self, run: StepRun) -> None:
        cw = run.clients.cloudwatch
        sns = run.clients.sns
        lab = run.ctx.lab
        for spec in alarm_specs(run.config):
            name = spec["AlarmName"]
            run.remove(
                "alarm",
                name,
                find=lambda n=name: find_alarm(cw, lab, n, on_foreign=run),
                delete=lambda _a, n=name: cw.delete_alarms(AlarmNames=[n]),
            )
        dashboard = run.config.cloudwatch.dashboard
        run.remove(
            "dashboard",
            dashboard,
            find=lambda: find_dashboard(cw, dashboard),
            delete=lambda _d: cw.delete_dashboards(DashboardNames=[dashboard]),
        )
        name = topic_name(lab)
        run.remove(
            "sns-topic",
            name,
            find=lambda: find_topic(sns, lab, name, on_foreign=run),
            delete=lambda topic: sns.delete_topic(TopicArn=topic["TopicArn"]),
        )


# ---------------------------------------------------------------- what the config asks for


def topic_name(lab: str) -> str:
    return f"{lab}-alarms"


def log_groups(config) -> list[tuple[str, str]]:
    """(log group, the step that owns it) for every log group of the lab."""
    groups = [(f"/aws/lambda/{f.name}", "lambda") for f in config.lambda_.functions.values()]
    groups += [(s.log_group, "ecs") for s in config.ecs.services.values()]
    groups.append((config.apigw.access_log_group, "apigw"))
    return groups


def _metric(namespace: str, metric: str, **dimensions: str) -> list:
    row: list = [namespace, metric]
    for key, value in dimensions.items():
        row += [key, value]
    return row


def _widget(title: str, metrics: list[list], stat: str, region: str, index: int) -> dict:
    return {
        "type": "metric",
        "x": (index % 2) * WIDGET_WIDTH,
        "y": (index // 2) * WIDGET_HEIGHT,
        "width": WIDGET_WIDTH,
        "height": WIDGET_HEIGHT,
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": False,
            "stat": stat,
            "period": PERIOD,
            "metrics": metrics,
        },
    }


def dashboard_body(config, region: str) -> dict:
    """The seed's four widget pairs, wired to the lab's names (a pure function)."""
    api = {"ApiName": config.apigw.name, "Stage": config.apigw.stage}
    functions = [f.name for f in config.lambda_.functions.values()]
    cluster = config.ecs.cluster
    services = [s.service for s in config.ecs.services.values()]
    db = {"DBInstanceIdentifier": config.rds.identifier}
    widgets = [
        ("API Gateway requests", [_metric("AWS/ApiGateway", "Count", **api)], "Sum"),
        ("API Gateway latency (ms)", [_metric("AWS/ApiGateway", "Latency", **api)], "Average"),
        (
            "Lambda invocations",
            [_metric("AWS/Lambda", "Invocations", FunctionName=f) for f in functions],
            "Sum",
        ),
        (
            "Lambda errors",
            [_metric("AWS/Lambda", "Errors", FunctionName=f) for f in functions],
            "Sum",
        ),
        (
            "ECS CPU utilization (%)",
            [
                _metric("AWS/ECS", "CPUUtilization", ClusterName=cluster, ServiceName=s)
                for s in services
            ],
            "Average",
        ),
        (
            "ECS memory utilization (%)",
            [
                _metric("AWS/ECS", "MemoryUtilization", ClusterName=cluster, ServiceName=s)
                for s in services
            ],
            "Average",
        ),
        ("RDS connections", [_metric("AWS/RDS", "DatabaseConnections", **db)], "Average"),
        ("RDS CPU utilization (%)", [_metric("AWS/RDS", "CPUUtilization", **db)], "Average"),
    ]
    return {
        "widgets": [
            _widget(title, metrics, stat, region, i)
            for i, (title, metrics, stat) in enumerate(widgets)
        ]
    }


def _alarm(
    name: str,
    description: str,
    namespace: str,
    metric: str,
    dimensions: dict[str, str],
    statistic: str,
    threshold: float,
) -> dict:
    return {
        "AlarmName": name,
        "AlarmDescription": description,
        "Namespace": namespace,
        "MetricName": metric,
        "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
        "Statistic": statistic,
        "Period": PERIOD,
        "EvaluationPeriods": 1,
        "Threshold": float(threshold),
        "ComparisonOperator": "GreaterThanThreshold",
        "TreatMissingData": "notBreaching",
    }


def alarm_specs(config) -> list[dict]:
    """put_metric_alarm arguments (without actions and tags) for every alarm of the lab."""
    lab = config.lab
    api = {"ApiName": config.apigw.name, "Stage": config.apigw.stage}
    db = {"DBInstanceIdentifier": config.rds.identifier}
    specs = [
        _alarm(
            f"{lab}-api-5xx-rate",
            f"more than 5% of requests to {config.apigw.name}/{config.apigw.stage} "
            "answered 5XX in 5 minutes",
            "AWS/ApiGateway",
            "5XXError",
            api,
            "Average",
            0.05,
        )
    ]
    for key, function in config.lambda_.functions.items():
        specs.append(
            _alarm(
                f"{lab}-lambda-{key}-errors",
                f"Lambda function {function.name} raised errors in 5 minutes",
                "AWS/Lambda",
                "Errors",
                {"FunctionName": function.name},
                "Sum",
                0,
            )
        )
    for key, service in config.ecs.services.items():
        specs.append(
            _alarm(
                f"{lab}-ecs-{key}-cpu-high",
                f"ECS service {service.service} averaged more than 80% CPU for 5 minutes",
                "AWS/ECS",
                "CPUUtilization",
                {"ClusterName": config.ecs.cluster, "ServiceName": service.service},
                "Average",
                80,
            )
        )
    specs.append(
        _alarm(
            f"{lab}-rds-cpu-high",
            f"RDS instance {config.rds.identifier} averaged more than 80% CPU for 5 minutes",
            "AWS/RDS",
            "CPUUtilization",
            db,
            "Average",
            80,
        )
    )
    specs.append(
        _alarm(
            f"{lab}-rds-connections-high",
            f"RDS instance {config.rds.identifier} averaged more than 50 connections",
            "AWS/RDS",
            "DatabaseConnections",
            db,
            "Average",
            50,
        )
    )
    return specs


# ---------------------------------------------------------------- lookups


def find_dashboard(cw, name: str) -> Resource | None:
    try:
        found = cw.get_dashboard(DashboardName=name)
    except ClientError as exc:
        if is_code(exc, "ResourceNotFound", "ResourceNotFoundException"):
            return None
        raise
    return {k: found[k] for k in ("DashboardName", "DashboardArn", "DashboardBody") if k in found}


def find_alarm(cw, lab: str, name: str, on_foreign: StepRun | None = None) -> Resource | None:
    alarms = cw.describe_alarms(AlarmNames=[name], AlarmTypes=["MetricAlarm"])["MetricAlarms"]
    alarm = only_one([a for a in alarms if a["AlarmName"] == name], f"alarms named {name}")
    if alarm is None:
        return None
    tags = as_dict(cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags"))
    return claim(
        alarm,
        tags,
        lab=lab,
        kind="CloudWatch alarm",
        name=name,
        on_foreign=on_foreign,
        config_key="the cloudwatch section",
    )


def find_topic(sns, lab: str, name: str, on_foreign: StepRun | None = None) -> Resource | None:
    topics = []
    kwargs: dict = {}
    while True:
        page = sns.list_topics(**kwargs)
        topics += [t for t in page.get("Topics", []) if t["TopicArn"].endswith(f":{name}")]
        if not page.get("NextToken"):
            break
        kwargs = {"NextToken": page["NextToken"]}
    topic = only_one(topics, f"SNS topics named {name}")
    if topic is None:
        return None
    tags = as_dict(sns.list_tags_for_resource(ResourceArn=topic["TopicArn"]).get("Tags"))
    return claim(
        topic,
        tags,
        lab=lab,
        kind="SNS topic",
        name=name,
        on_foreign=on_foreign,
        config_key="the cloudwatch section",
    )


def _email_subscriptions(sns, topic_arn: str) -> list[dict]:
    subs = []
    kwargs: dict = {"TopicArn": topic_arn}
    while True:
        page = sns.list_subscriptions_by_topic(**kwargs)
        subs += [s for s in page.get("Subscriptions", []) if s.get("Protocol") == "email"]
        if not page.get("NextToken"):
            return subs
        kwargs = {"TopicArn": topic_arn, "NextToken": page["NextToken"]}


# ---------------------------------------------------------------- create and fix


def _put_dashboard(cw, name: str, body: dict) -> Resource:
    cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
    return find_dashboard(cw, name) or {"DashboardName": name}


def _dashboard_fixes(cw, found: Resource, body: dict) -> list[Fix]:
    try:
        current = json.loads(found.get("DashboardBody") or "{}")
    except ValueError:
        current = None
    if current == body:
        return []
    return [
        Fix(
            "widgets",
            lambda: cw.put_dashboard(
                DashboardName=found["DashboardName"], DashboardBody=json.dumps(body)
            ),
        )
    ]


def _put_alarm(run: StepRun, spec: dict, actions: list[str]) -> Resource:
    cw = run.clients.cloudwatch
    cw.put_metric_alarm(
        **spec, AlarmActions=actions, ActionsEnabled=True, Tags=as_list(run.tags(spec["AlarmName"]))
    )
    return {"AlarmName": spec["AlarmName"]}


def _comparable(alarm: dict) -> dict:
    return {
        "AlarmDescription": alarm.get("AlarmDescription"),
        "Namespace": alarm.get("Namespace"),
        "MetricName": alarm.get("MetricName"),
        "Dimensions": sorted((d["Name"], d["Value"]) for d in alarm.get("Dimensions", [])),
        "Statistic": alarm.get("Statistic"),
        "Period": alarm.get("Period"),
        "EvaluationPeriods": alarm.get("EvaluationPeriods"),
        "Threshold": float(alarm.get("Threshold", 0)),
        "ComparisonOperator": alarm.get("ComparisonOperator"),
        "TreatMissingData": alarm.get("TreatMissingData"),
        "AlarmActions": sorted(alarm.get("AlarmActions", [])),
        "ActionsEnabled": alarm.get("ActionsEnabled", True),
    }


def _alarm_fixes(run: StepRun, found: Resource, spec: dict, actions: list[str]) -> list[Fix]:
    have = _comparable(found)
    want = _comparable({**spec, "AlarmActions": actions, "ActionsEnabled": True})
    differs = [k for k in want if have[k] != want[k]]
    if not differs:
        return []
    return [Fix(", ".join(differs), lambda: _put_alarm(run, spec, actions))]
