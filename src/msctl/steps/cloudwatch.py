"""cloudwatch: the dashboard, alarms and the alarm topic (seed 7.1, 7.3).

The log groups of seed 7.1 belong to the steps whose services write to them (lambda:
/aws/lambda/<function>, ecs: each service's log group, apigw: the access log group); each
creates its own with `cloudwatch.log_retention_days`. This step doesn't create them again;
its verify checks that every one exists with that retention, so `status` shows them.

The dashboard (seed 7.3) shows API Gateway requests and latency, Lambda invocations and
errors per function, ECS CPU and memory per service, RDS connections and CPU, all wired to
the names the other steps create. CloudWatch dashboards can't be tagged: a text widget in
the body carries the lab's mark, and a same-named dashboard without it isn't the lab's.

Alarms, one per thing that can break:
- API 5XX rate: `5XXError` Average > 0.05 over 5 minutes. API Gateway publishes 5XXError as
  0 or 1 per request, so its Average is the fraction of requests that failed: > 0.05 is a
  5XX rate above 5%, with no metric math (which is harder to compare and to read back).
- Lambda Errors Sum > 0 over 5 minutes, per function.
- ECS CPUUtilization Average > 80% per service; RDS CPUUtilization > 80%;
  RDS DatabaseConnections > 50.
Missing data (no traffic) is not breaching. Every alarm notifies the SNS topic `<lab>-alarms`
(an alarm without an action alerts nobody: AWS FSBP CloudWatch.15). With
`cloudwatch.alarm_email` set, the topic has that email subscription (confirmed by the
recipient from the email AWS sends; pending until then); other email subscriptions are
removed. The topic isn't encrypted: CloudWatch can't publish to a topic encrypted with the
AWS managed key, and a customer managed key costs a dollar a month.
"""

from __future__ import annotations

import json

from ..aws.tags import as_list
from ..engine.model import Check, is_pending
from ..resources import Resource, mark
from ..resources.base import pages
from ..resources.compute import LOG_GROUP
from ..resources.monitoring import ALARM, DASHBOARD, TOPIC
from .base import LabStep
from .run import Fix, StepRun

PERIOD = 300
WIDGET_WIDTH = 12
WIDGET_HEIGHT = 6
NOTE_HEIGHT = 2


class CloudWatchStep(LabStep):
    name = "cloudwatch"
    requires = ("lambda", "ecs", "apigw", "rds")
    reads_only = requires  # alarms and widgets name their resources; nothing refers back
    services = ("cloudwatch", "sns", "logs")
    description = "dashboard, alarms and the alarm topic"
    kinds = (TOPIC, DASHBOARD, ALARM)

    def names(self, config):
        return [
            (TOPIC, topic_name(config.lab)),
            (DASHBOARD, config.cloudwatch.dashboard),
            *((ALARM, spec["AlarmName"]) for spec in alarm_specs(config)),
        ]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.cloudwatch
        cw = run.clients.cloudwatch
        body = dashboard_body(run.config, run.clients.region)
        run.ensure(
            DASHBOARD,
            cfg.dashboard,
            create=lambda: _put_dashboard(cw, cfg.dashboard, body),
            fixes=lambda found: _dashboard_fixes(cw, found, body),
        )
        topic_arn = self._topic(run)
        actions = [topic_arn]
        names = []
        for spec in alarm_specs(run.config):
            names.append(spec["AlarmName"])
            run.ensure(
                ALARM,
                spec["AlarmName"],
                create=lambda s=spec: _put_alarm(run, s, actions),
                fixes=lambda found, s=spec: _alarm_fixes(run, found, s, actions),
            )
        return {"dashboard": cfg.dashboard, "alarm_names": names, "topic_arn": topic_arn}

    def _topic(self, run: StepRun) -> str:
        """The alarm topic, and its email subscription when the config names an email."""
        sns = run.clients.sns
        name = topic_name(run.ctx.lab)
        email = run.config.cloudwatch.alarm_email
        topic_arn = run.ensure(
            TOPIC,
            name,
            create=lambda: sns.create_topic(Name=name, Tags=as_list(run.tags(name))),
        )
        subscriptions = [] if is_pending(topic_arn) else _email_subscriptions(sns, topic_arn)
        subscribed = [s for s in subscriptions if email and s["Endpoint"].lower() == email.lower()]
        if email:
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
                detail="not the configured cloudwatch.alarm_email: unsubscribe",
                action="delete",
                apply=lambda a=arn: sns.unsubscribe(SubscriptionArn=a),
            )
        return topic_arn

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        logs = run.client(LOG_GROUP)
        days = run.config.cloudwatch.log_retention_days
        for name, owner in log_groups(run.config):
            group = LOG_GROUP.read(logs, name)
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
    """The seed's four widget pairs, wired to the lab's names, and the ownership note (a pure
    function)."""
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
    # A dashboard can't be tagged: this note's mark is what makes it the lab's (followed by
    # a space, so that the mark ends where the step name does).
    note = {
        "type": "text",
        "x": 0,
        "y": (len(widgets) + 1) // 2 * WIDGET_HEIGHT,
        "width": 2 * WIDGET_WIDTH,
        "height": NOTE_HEIGHT,
        "properties": {
            "markdown": f"Built by msctl for lab {config.lab}: "
            f"{mark(config.lab, CloudWatchStep.name)} (`msctl down` removes it)"
        },
    }
    return {
        "widgets": [
            *(
                _widget(title, metrics, stat, region, i)
                for i, (title, metrics, stat) in enumerate(widgets)
            ),
            note,
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


def _email_subscriptions(sns, topic_arn: str) -> list[dict]:
    subs = pages(sns.list_subscriptions_by_topic, "Subscriptions", TopicArn=topic_arn)
    return [s for s in subs if s.get("Protocol") == "email"]


# ---------------------------------------------------------------- create and fix


def _put_dashboard(cw, name: str, body: dict) -> Resource:
    cw.put_dashboard(DashboardName=name, DashboardBody=json.dumps(body))
    return DASHBOARD.read(cw, name) or {"DashboardName": name}


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
