"""What the lab costs while it exists (us-east-1 on-demand list prices, USD per hour).

Estimates for the confirmation before `up --target aws` and for anything `down` leaves
behind. Per-request services (Lambda, API Gateway, DynamoDB on-demand, S3, CloudFront) cost
next to nothing while idle and are listed at 0.
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


@dataclass(frozen=True)
class Billable:
    kind: str
    name: str
    hourly: float
    note: str = ""


def billable(config: LabConfig) -> list[Billable]:
    rds = config.rds
    items = [
        Billable("NAT gateway", config.vpc.nat_gateway, NAT_GATEWAY, "plus $0.045/GB processed"),
        Billable("Elastic IP", f"{config.vpc.nat_gateway}-eip", PUBLIC_IPV4),
        Billable("Load balancer", config.alb.name, ALB + 2 * PUBLIC_IPV4, "plus LCUs"),
        Billable(
            "RDS instance",
            rds.identifier,
            RDS_INSTANCE.get(rds.instance_class, 0.0)
            + rds.allocated_storage * GP2_GB_MONTH / HOURS_PER_MONTH,
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
        per_task = service.cpu / 1024 * FARGATE_VCPU + service.memory / 1024 * FARGATE_GB
        items.append(
            Billable(
                "Fargate tasks",
                f"{service.service} x{service.desired_count}",
                per_task * service.desired_count,
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
