"""What the lab costs while it exists (us-east-1 on-demand list prices, USD per hour).

Estimates for the confirmation before `up --target aws` (`billable`) and for anything
`down` leaves behind (`resource_hourly`, per kind of resource the sweep finds).
Per-request services (Lambda, API Gateway, DynamoDB on-demand, S3, CloudFront) cost next to
nothing while idle and are listed at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LabConfig

HOURS_PER_MONTH = 730
NAT_GATEWAY = 0.045
PUBLIC_IPV4 = 0.005
ALB = 0.0225
FARGATE_VCPU = 0.04048
FARGATE_GB = 0.004445
RDS_INSTANCE = {"db.t3.micro": 0.018, "db.t4g.micro": 0.016, "db.t3.small": 0.036}
GP2_GB_MONTH = 0.115
SECRET_MONTH = 0.40
DASHBOARD_MONTH = 3.0
HOSTED_ZONE_MONTH = 0.50
ALARM_MONTH = 0.10
SNAPSHOT_GB_MONTH = 0.095

# Resources billed by the hour whatever their size, by the kind names the sweep reports.
PRICE_BY_KIND: dict[str, float] = {
    "nat-gateway": NAT_GATEWAY,
    "elastic-ip": PUBLIC_IPV4,
    "load-balancer": ALB + 2 * PUBLIC_IPV4,
    "secret": SECRET_MONTH / HOURS_PER_MONTH,
    "dashboard": DASHBOARD_MONTH / HOURS_PER_MONTH,
    "hosted-zone": HOSTED_ZONE_MONTH / HOURS_PER_MONTH,
    "alarm": ALARM_MONTH / HOURS_PER_MONTH,
}


@dataclass(frozen=True)
class Billable:
    kind: str
    name: str
    hourly: float
    note: str = ""


def rds_hourly(instance_class: str | None, storage_gb: float) -> float:
    """An instance (0 when its class is unknown to msctl) plus its gp2 storage."""
    return RDS_INSTANCE.get(instance_class or "", 0.0) + storage_gb * GP2_GB_MONTH / HOURS_PER_MONTH


def fargate_hourly(cpu_units: float, memory_mib: float, tasks: int) -> float:
    per_task = cpu_units / 1024 * FARGATE_VCPU + memory_mib / 1024 * FARGATE_GB
    return per_task * tasks


def resource_hourly(kind: str, **detail) -> float:
    """The estimated USD/hour of one resource of `kind` (0 for what bills per request).

    `detail` sizes what is priced by size: db-instance (instance_class, allocated_storage),
    ecs-service (cpu, memory, tasks), db-snapshot (allocated_storage)."""
    if kind == "db-instance":
        return rds_hourly(detail.get("instance_class"), detail.get("allocated_storage") or 0)
    if kind == "ecs-service":
        return fargate_hourly(
            float(detail.get("cpu") or 0), float(detail.get("memory") or 0), detail.get("tasks", 0)
        )
    if kind == "db-snapshot":
        return (detail.get("allocated_storage") or 0) * SNAPSHOT_GB_MONTH / HOURS_PER_MONTH
    return PRICE_BY_KIND.get(kind, 0.0)


def billable(config: LabConfig) -> list[Billable]:
    rds = config.rds
    items = [
        Billable("NAT gateway", config.vpc.nat_gateway, NAT_GATEWAY, "plus $0.045/GB processed"),
        Billable("Elastic IP", f"{config.vpc.nat_gateway}-eip", PUBLIC_IPV4),
        Billable("Load balancer", config.alb.name, ALB + 2 * PUBLIC_IPV4, "plus LCUs"),
        Billable(
            "RDS instance",
            rds.identifier,
            rds_hourly(rds.instance_class, rds.allocated_storage),
            "" if rds.instance_class in RDS_INSTANCE else "instance price unknown to msctl",
        ),
        Billable(
            "Secrets Manager secret", f"{rds.identifier} master", SECRET_MONTH / HOURS_PER_MONTH
        ),
        Billable(
            "CloudWatch dashboard", config.cloudwatch.dashboard, DASHBOARD_MONTH / HOURS_PER_MONTH
        ),
    ]
    for name, service in config.ecs.services.items():
        items.append(
            Billable(
                "Fargate tasks",
                f"{service.service} x{service.desired_count}",
                fargate_hourly(service.cpu, service.memory, service.desired_count),
                f"{name}, scales up to {config.ecs.autoscaling.max_capacity}",
            )
        )
    if config.route53.domain:
        items.append(
            Billable("Route 53 zone", config.route53.domain, HOSTED_ZONE_MONTH / HOURS_PER_MONTH)
        )
    return items


def total(items: list[Billable]) -> float:
    return sum(item.hourly for item in items)
