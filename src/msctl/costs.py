"""What the lab costs while it exists (us-east-1 on-demand list prices, USD per hour).

The built-in table: the fallback when AWS's Price List API doesn't answer (pricing.py).
Estimates for the confirmation before `up --target aws` (`billable`); each resource kind
prices itself from these for what `down` finds left behind (resources/*.py, `Kind.cost`).
Per-request services (Lambda, API Gateway, DynamoDB on-demand, S3, CloudFront) cost next to
nothing while idle and are listed at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import LabConfig
from .config.names import admin_secret_name, origin_secret_name

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


def billable(config: LabConfig, prices=None) -> list[Billable]:
    """What `up` creates that bills by the hour, at `prices` (pricing.Prices; default: this
    table)."""
    if prices is None:
        from .pricing import Prices

        prices = Prices()
    rds = config.rds
    items = [
        Billable(
            "NAT gateway", config.vpc.nat_gateway, prices.nat_gateway, "plus $0.045/GB processed"
        ),
        Billable("Elastic IP", f"{config.vpc.nat_gateway}-eip", prices.public_ipv4),
        Billable(
            "Load balancer", config.alb.name, prices.alb + 2 * prices.public_ipv4, "plus LCUs"
        ),
        Billable(
            "RDS instance",
            rds.identifier,
            prices.rds_hourly(rds.instance_class, rds.allocated_storage),
            "" if rds.instance_class in prices.rds else "instance price unknown to msctl",
        ),
        Billable(
            "Secrets Manager secret", f"{rds.identifier} master", SECRET_MONTH / HOURS_PER_MONTH
        ),
        *(
            Billable("Secrets Manager secret", name, SECRET_MONTH / HOURS_PER_MONTH)
            for name in (admin_secret_name(config.lab), origin_secret_name(config.lab))
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
                prices.fargate_hourly(service.cpu, service.memory, service.desired_count),
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
