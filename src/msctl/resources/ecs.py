"""ECS: cluster, services, task definitions, the services' scalable targets, and tasks.

A scalable target's tags are its cluster's (the one in its resource id): AWS tags targets at
registration, but the local emulator keeps no tags for them (and 500s on reading them), and
a cluster's name is unique in the account. Their scaling policies (and the policies' alarms)
go with them.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from .. import costs
from ..aws.errors import is_code
from ..aws.waiters import Wait
from .base import Kind, Resource, absent, first

SCALING_NAMESPACE = "ecs"
SCALABLE_DIMENSION = "ecs:service:DesiredCount"
SERVICE_DELETE_TIMEOUT = 900  # tasks drain (the target groups' deregistration delay) first
CLUSTER_DELETE_TIMEOUT = 600
SERVICE_DELETE_EXPECTED = 60  # seconds, typically: the lab's deregistration delay is short


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
        return costs.fargate_hourly(
            float(size.get("cpu") or 0), float(size.get("memory") or 0), tasks
        )

    def delete(self, run, resource: Resource) -> Wait:
        """Scale to 0 (the tasks drain from the target group), delete; then (returned) the
        wait until it is gone."""
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
        return Wait(
            f"service {name} to be deleted",
            lambda: service_gone(ecs, cluster, name),
            SERVICE_DELETE_TIMEOUT,
            SERVICE_DELETE_EXPECTED,
        )


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

    def find(self, client, name: str, lab: str) -> Resource | None:
        """The family's latest ACTIVE revision (familyPrefix is only a prefix; the local
        emulator answers a bare family name with its latest revision, even an INACTIVE one)."""
        arns = [
            arn
            for page in client.get_paginator("list_task_definitions").paginate(
                familyPrefix=name, status="ACTIVE"
            )
            for arn in page.get("taskDefinitionArns", [])
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == name
        ]
        latest = max(arns, key=lambda arn: int(arn.rsplit(":", 1)[-1]), default=None)
        return self.read(client, latest) if latest else None

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


class _AutoScaling:
    """The Application Auto Scaling client, with the ECS client its targets' owners are read
    from."""

    def __init__(self, aas, ecs):
        self._aas = aas
        self.ecs = ecs

    def __getattr__(self, name: str):
        return getattr(self._aas, name)


class ScalableTarget(Kind):
    """A service's desired count, service/<cluster>/<service>: its tags are its cluster's."""

    name = "scalable-target"
    service = "application-autoscaling"
    id_key = "ResourceId"
    arn_key = "ScalableTargetARN"
    tagging_type = "application-autoscaling:scalable-target"
    scanned = True

    def client(self, ctx):
        return _AutoScaling(super().client(ctx), CLUSTER.client(ctx))

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_scalable_targets(
            ServiceNamespace=SCALING_NAMESPACE,
            ResourceIds=[ident],
            ScalableDimension=SCALABLE_DIMENSION,
        )["ScalableTargets"]
        return next((t for t in found if t.get("ResourceId") == ident), None)

    def tags(self, client, resource: Resource) -> dict[str, str]:
        parts = resource.get("ResourceId", "").split("/")
        if len(parts) != 3 or parts[0] != "service":
            return {}
        cluster = CLUSTER.read(client.ecs, parts[1])
        return CLUSTER.tags(client.ecs, cluster) if cluster else {}

    def scan(self, client, lab: str):
        for page in client.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace=SCALING_NAMESPACE
        ):
            yield from page.get("ScalableTargets", [])

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return resource["ResourceId"]

    def delete(self, run, resource: Resource) -> None:
        """Its scaling policies (and their alarms) first: AWS deletes them with the target,
        the local emulator keeps them."""
        aas = self.client(run.ctx)
        target = {k: resource[k] for k in ("ServiceNamespace", "ResourceId", "ScalableDimension")}
        for policy in aas.describe_scaling_policies(**target)["ScalingPolicies"]:
            aas.delete_scaling_policy(PolicyName=policy["PolicyName"], **target)
        aas.deregister_scalable_target(**target)


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
