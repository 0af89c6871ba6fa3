"""ECS: cluster, services, task definitions, the services' scalable targets, and tasks.

Scalable targets are this lab's when the cluster in their resource id is: AWS tags them at
registration, but the local emulator keeps no tags for them (and 500s on reading them), and
a cluster's name is unique in the account. Their scaling policies (and the policies' alarms)
go with them.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from .. import costs
from ..aws.errors import is_code
from ..aws.tags import LAB, STEP
from .base import Kind, Resource, absent, first

SCALING_NAMESPACE = "ecs"
SCALABLE_DIMENSION = "ecs:service:DesiredCount"
SERVICE_DELETE_TIMEOUT = 900  # tasks drain (the target groups' deregistration delay) first
CLUSTER_DELETE_TIMEOUT = 600


def ecs_tags(tags) -> dict[str, str]:
    """ECS's [{"key", "value"}] tags as a dict."""
    return {t.get("key"): t.get("value") for t in tags or []}


class Cluster(Kind):
    name = "ecs-cluster"
    service = "ecs"
    id_key = arn_key = "clusterArn"
    name_key = "clusterName"
    tagging_type = "ecs:cluster"

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_clusters(clusters=[ident], include=["SETTINGS", "TAGS"])
        return first(found["clusters"])

    def alive(self, resource: Resource) -> bool:
        return resource.get("status") not in ("INACTIVE", None)

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return ecs_tags(resource.get("tags"))

    def delete(self, run, resource: Resource) -> None:
        ecs = self.client(run.ctx)
        run.retry(
            lambda: ecs.delete_cluster(cluster=resource["clusterArn"]),
            codes=(
                "ClusterContainsServicesException",
                "ClusterContainsTasksException",
                "UpdateInProgressException",
            ),
            timeout=CLUSTER_DELETE_TIMEOUT,
            reason="the deleted services' tasks are still stopping",
        )


def describe_service(ecs, cluster: str, service: str, draining: bool = False) -> Resource | None:
    """The service if it is ACTIVE (or, with `draining`, still being deleted)."""
    try:
        found = ecs.describe_services(cluster=cluster, services=[service], include=["TAGS"])
    except ClientError as exc:
        if is_code(exc, "ClusterNotFoundException", "ServiceNotFoundException"):
            return None
        raise
    live = ("ACTIVE", "DRAINING") if draining else ("ACTIVE",)
    return first([s for s in found.get("services", []) if s.get("status") in live])


def service_gone(ecs, cluster: str, service: str) -> tuple[bool, str]:
    found = describe_service(ecs, cluster, service, draining=True)
    return found is None, found.get("status", "?") if found else "INACTIVE"


class Service(Kind):
    """Read by its ARN (which names its cluster); a DRAINING one is still on its way out."""

    name = "ecs-service"
    service = "ecs"
    id_key = arn_key = "serviceArn"
    name_key = "serviceName"
    tagging_type = "ecs:service"

    def describe(self, client, ident: str) -> Resource | None:
        found = describe_service(client, _cluster_of(ident), ident, draining=True)
        if found and found.get("taskDefinition"):
            size = absent(
                lambda: client.describe_task_definition(taskDefinition=found["taskDefinition"]),
                ("ClientException",),
            )
            found = {**found, "_size": (size or {}).get("taskDefinition", {})}
        return found

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return ecs_tags(resource.get("tags"))

    def cost(self, resource: Resource) -> float:
        size = resource.get("_size") or {}
        tasks = max(resource.get("desiredCount", 0), resource.get("runningCount", 0))
        return costs.fargate_hourly(float(size.get("cpu") or 0), float(size.get("memory") or 0), tasks)

    def delete(self, run, resource: Resource) -> None:
        """Scale to 0 (the tasks drain from the target group), delete, wait until gone."""
        ecs = self.client(run.ctx)
        cluster, name = resource["clusterArn"], resource["serviceName"]
        if resource.get("status") == "ACTIVE":
            try:
                if resource.get("desiredCount", 0) > 0:
                    ecs.update_service(cluster=cluster, service=name, desiredCount=0)
                ecs.delete_service(cluster=cluster, service=name, force=True)
            except ClientError as exc:
                if not is_code(exc, "ServiceNotFoundException", "ServiceNotActiveException"):
                    raise
        run.wait(
            f"service {name} to be deleted",
            lambda: service_gone(ecs, cluster, name),
            timeout=SERVICE_DELETE_TIMEOUT,
        )


def lab_clusters(ecs, lab: str) -> dict[str, dict[str, str]]:
    """The tags of each live cluster of the lab, by cluster name."""
    arns = [a for page in ecs.get_paginator("list_clusters").paginate() for a in page["clusterArns"]]
    found = {}
    for start in range(0, len(arns), 100):
        described = ecs.describe_clusters(clusters=arns[start : start + 100], include=["TAGS"])
        for cluster in described["clusters"]:
            tags = ecs_tags(cluster.get("tags"))
            if CLUSTER.alive(cluster) and tags.get(LAB) == lab:
                found[cluster["clusterName"]] = tags
    return found


def _cluster_of(arn: str) -> str:
    """arn:...:service/<cluster>/<name> (the old format, service/<name>, is the default)."""
    parts = arn.split(":", 5)[-1].split("/")
    return parts[1] if len(parts) > 2 else "default"


class TaskDefinition(Kind):
    """One revision; the lab's are ACTIVE until deregistered (an INACTIVE one can't start
    tasks and costs nothing)."""

    name = "task-definition"
    service = "ecs"
    id_key = arn_key = "taskDefinitionArn"
    name_key = "family"
    missing = ("ClientException",)  # DescribeTaskDefinition's answer for one that doesn't exist
    tagging_type = "ecs:task-definition"

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_task_definition(taskDefinition=ident, include=["TAGS"])
        return {**found["taskDefinition"], "tags": found.get("tags") or []}

    def alive(self, resource: Resource) -> bool:
        return resource.get("status") == "ACTIVE"

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return ecs_tags(resource.get("tags"))

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return f"{resource.get('family')}:{resource.get('revision')}"

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).deregister_task_definition(
            taskDefinition=resource["taskDefinitionArn"]
        )


class ScalableTarget(Kind):
    name = "scalable-target"
    service = "application-autoscaling"
    id_key = "ResourceId"
    arn_key = "ScalableTargetARN"
    tagging_type = "application-autoscaling:scalable-target"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_scalable_targets(
            ServiceNamespace=SCALING_NAMESPACE,
            ResourceIds=[ident],
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalableTargets"]
        return next((t for t in found if t.get("ResourceId") == ident), None)

    def scan(self, client, lab: str):
        for page in client.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace=SCALING_NAMESPACE
        ):
            yield from page.get("ScalableTargets", [])

    def owned(self, ctx, lab: str, step: str | None) -> list:
        """The targets of the lab's clusters' services (service/<cluster>/<service>)."""
        clusters = lab_clusters(ctx.clients.ecs, lab)
        items = []
        for target in self.scan(self.client(ctx), lab):
            parts = target.get("ResourceId", "").split("/")
            if len(parts) != 3 or parts[1] not in clusters:
                continue
            if step and clusters[parts[1]].get(STEP) != step:
                continue
            items.append(self.item(target, clusters[parts[1]], region=ctx.clients.region))
        return items

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return resource["ResourceId"]

    def delete(self, run, resource: Resource) -> None:
        # Its scaling policies (and their alarms) go with it.
        self.client(run.ctx).deregister_scalable_target(
            ServiceNamespace=resource["ServiceNamespace"],
            ResourceId=resource["ResourceId"],
            ScalableDimension=resource["ScalableDimension"],
        )


class Task(Kind):
    """A task carries its service's tags (propagateTags); it stops with its service."""

    name = "ecs-task"
    service = "ecs"
    id_key = arn_key = "taskArn"
    tagging_type = "ecs:task"

    def describe(self, client, ident: str) -> Resource | None:
        return first(client.describe_tasks(cluster=_cluster_of(ident), tasks=[ident])["tasks"])

    def alive(self, resource: Resource) -> bool:
        return resource.get("lastStatus") != "STOPPED"

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).stop_task(
            cluster=resource["clusterArn"], task=resource["taskArn"], reason="msctl down"
        )


CLUSTER = Cluster()
SERVICE = Service()
TASK_DEFINITION = TaskDefinition()
SCALABLE_TARGET = ScalableTarget()
TASK = Task()
