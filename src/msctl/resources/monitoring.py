"""Observability: the CloudWatch dashboard and alarms, the alarm topic, X-Ray groups and
sampling rules.

A dashboard can't be tagged: the lab's carries `mark()` in a text widget of its body. The
local emulator doesn't implement X-Ray's group and rule calls (a bare 404): there, none
exist.
"""

from __future__ import annotations

from .. import costs
from ..aws.tags import as_dict
from .base import Kind, Resource, absent, first, marked, only_one, pages


class Dashboard(Kind):
    name = "dashboard"
    service = "cloudwatch"
    id_key = name_key = "DashboardName"
    arn_key = "DashboardArn"
    missing = ("ResourceNotFound",)
    scanned = True
    hourly = costs.DASHBOARD_MONTH / costs.HOURS_PER_MONTH

    def describe(self, client, ident: str) -> Resource | None:
        found = client.get_dashboard(DashboardName=ident)
        return {
            k: found[k] for k in ("DashboardName", "DashboardArn", "DashboardBody") if k in found
        }

    def tags(self, client, resource: Resource) -> dict[str, str]:
        if "DashboardBody" not in resource:
            resource = self.read(client, resource["DashboardName"]) or {}
        return marked(resource.get("DashboardBody"))

    def scan(self, client, lab: str):
        for page in client.get_paginator("list_dashboards").paginate():
            yield from page.get("DashboardEntries", [])

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_dashboards(DashboardNames=[resource["DashboardName"]])


class Alarm(Kind):
    name = "alarm"
    service = "cloudwatch"
    id_key = name_key = "AlarmName"
    arn_key = "AlarmArn"
    tagging_type = "cloudwatch:alarm"
    hourly = costs.ALARM_MONTH / costs.HOURS_PER_MONTH

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_alarms(AlarmNames=[ident])
        return first([*found.get("MetricAlarms", []), *found.get("CompositeAlarms", [])])

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return as_dict(client.list_tags_for_resource(ResourceARN=resource["AlarmArn"]).get("Tags"))

    def id_from_arn(self, arn: str) -> str:
        return arn.split(":", 6)[6]

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_alarms(AlarmNames=[resource["AlarmName"]])


class Topic(Kind):
    name = "sns-topic"
    service = "sns"
    id_key = arn_key = "TopicArn"
    tagging_type = "sns"

    def describe(self, client, ident: str) -> Resource | None:
        return {"TopicArn": ident, **client.get_topic_attributes(TopicArn=ident)["Attributes"]}

    def tags(self, client, resource: Resource) -> dict[str, str]:
        listed = client.list_tags_for_resource(ResourceArn=resource["TopicArn"])
        return as_dict(listed.get("Tags"))

    def find(self, client, name: str, lab: str) -> Resource | None:
        topics = [
            t for t in pages(client.list_topics, "Topics") if t["TopicArn"].endswith(f":{name}")
        ]
        return only_one(topics, f"SNS topics named {name}")

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return resource["TopicArn"].rsplit(":", 1)[-1]

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_topic(TopicArn=resource["TopicArn"])


class XrayKind(Kind):
    service = "xray"
    scanned = True

    def tags(self, client, resource: Resource) -> dict[str, str]:
        arn = self.arn(resource)
        return as_dict(list(pages(client.list_tags_for_resource, "Tags", ResourceARN=arn)))

    def find(self, client, name: str, lab: str) -> Resource | None:
        # Unlike `scan`, errors go through: the xray step tells the emulator's gap from
        # a real failure.
        found = [r for r in self.all(client) if r.get(self.name_key) == name]
        return only_one(found, f"X-Ray {self.name}s named {name}")

    def all(self, client) -> list[Resource]:
        raise NotImplementedError

    def scan(self, client, lab: str):
        # On the local emulator the calls 404 (not implemented): nothing exists there.
        found = absent(lambda: self.all(client)) or []
        return [r for r in found if r.get(self.name_key) != "Default"]


class XrayGroup(XrayKind):
    name = "xray-group"
    tagging_type = "xray:group"
    id_key = arn_key = "GroupARN"
    name_key = "GroupName"

    def all(self, client) -> list[Resource]:
        return list(pages(client.get_groups, "Groups"))

    def describe(self, client, ident: str) -> Resource | None:
        return client.get_group(GroupARN=ident)["Group"]

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_group(GroupARN=resource["GroupARN"])


class SamplingRule(XrayKind):
    name = "sampling-rule"
    tagging_type = "xray:sampling-rule"
    id_key = name_key = "RuleName"
    arn_key = "RuleARN"

    def all(self, client) -> list[Resource]:
        records = pages(client.get_sampling_rules, "SamplingRuleRecords")
        return [r["SamplingRule"] for r in records]

    def describe(self, client, ident: str) -> Resource | None:
        return first([r for r in self.all(client) if r.get("RuleName") == ident])

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_sampling_rule(RuleName=resource["RuleName"])


DASHBOARD = Dashboard()
ALARM = Alarm()
TOPIC = Topic()
XRAY_GROUP = XrayGroup()
SAMPLING_RULE = SamplingRule()
