"""Every AWS resource type msctl knows, each declared once (see base.Kind).

Steps build their resources through these kinds (find, ownership) and `down` deletes through
them: nothing else calls a delete API.
"""

from __future__ import annotations

import re

from .base import Item, Kind, Resource, mark, marked, owner
from .compute import FUNCTION, LOAD_BALANCER, LOG_GROUP, REPOSITORY, ROLE, TARGET_GROUP
from .data import (
    BUCKET,
    DB_INSTANCE,
    DB_PARAMETER_GROUP,
    DB_SNAPSHOT,
    DB_SUBNET_GROUP,
    SECRET,
    TABLE,
)
from .ec2 import (
    ELASTIC_IP,
    INTERNET_GATEWAY,
    NAT_GATEWAY,
    ROUTE_TABLE,
    SECURITY_GROUP,
    SUBNET,
    VPC,
)
from .ecs import CLUSTER, SCALABLE_TARGET, SERVICE, TASK, TASK_DEFINITION
from .edge import CERTIFICATE, DISTRIBUTION, HOSTED_ZONE, ORIGIN_ACCESS_CONTROL, REST_API
from .monitoring import ALARM, DASHBOARD, SAMPLING_RULE, TOPIC, XRAY_GROUP

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        VPC,
        SUBNET,
        INTERNET_GATEWAY,
        ROUTE_TABLE,
        SECURITY_GROUP,
        ELASTIC_IP,
        NAT_GATEWAY,
        TABLE,
        BUCKET,
        DB_SUBNET_GROUP,
        DB_PARAMETER_GROUP,
        DB_INSTANCE,
        DB_SNAPSHOT,
        SECRET,
        ROLE,
        FUNCTION,
        LOG_GROUP,
        REPOSITORY,
        LOAD_BALANCER,
        TARGET_GROUP,
        CLUSTER,
        SERVICE,
        TASK_DEFINITION,
        SCALABLE_TARGET,
        TASK,
        REST_API,
        DISTRIBUTION,
        ORIGIN_ACCESS_CONTROL,
        CERTIFICATE,
        HOSTED_ZONE,
        DASHBOARD,
        ALARM,
        TOPIC,
        XRAY_GROUP,
        SAMPLING_RULE,
    )
}

# What the tagging API lists that goes with its parent (listeners with their load balancer,
# stages with their API): never a leftover of its own.
PARTS = {("elasticloadbalancing", "listener"), ("elasticloadbalancing", "listener-rule")}
_BY_TAGGING_TYPE = {k.tagging_type: k for k in KINDS.values() if k.tagging_type}


def arn_type(arn: str) -> tuple[str, str]:
    """(service, resource type) of an ARN: ("dynamodb", "table"), ("s3", "")."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "", ""
    resource = parts[5].lstrip("/")
    rtype = re.split(r"[:/]", resource, maxsplit=1)[0] if re.search(r"[:/]", resource) else ""
    return parts[2], rtype


def kind_of_arn(arn: str) -> Kind | None:
    service, rtype = arn_type(arn)
    return _BY_TAGGING_TYPE.get(f"{service}:{rtype}" if rtype else service)


__all__ = ["KINDS", "PARTS", "Item", "Kind", "Resource", "kind_of_arn", "mark", "marked", "owner"]
