"""Quota preflight: before `up` creates anything, check that the account's quotas leave room
for what the lab will create that doesn't exist yet.

Each quota: AWS's Service Quotas value (GetServiceQuota) against what exists now (the
service's own describe calls), plus what the lab needs. A quota Service Quotas can't tell
(no permission, a code it doesn't know, the local emulator) is taken at AWS's documented
default, and a note says so. The limits can be given (`limits`), e.g. by a test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.config import Config

from .aws.errors import describe
from .resources.compute import LOAD_BALANCER
from .resources.data import DB_INSTANCE
from .resources.ec2 import ELASTIC_IP, LIVE_NAT_STATES, NAT_GATEWAY, VPC

if TYPE_CHECKING:
    from .context import Context


@dataclass(frozen=True)
class Quota:
    key: str
    what: str
    service: str  # the Service Quotas service code
    code: str  # the Service Quotas quota code
    default: float  # AWS's documented default
    remedy: str


# From AWS's quota pages (Amazon VPC, Amazon EC2, Elastic Load Balancing, Amazon RDS and
# Amazon ECS endpoints and quotas in the General Reference).
QUOTAS = {
    q.key: q
    for q in (
        Quota("vpc", "VPCs", "vpc", "L-F678F1CE", 5, "delete one"),
        Quota("eip", "Elastic IPs", "ec2", "L-0263D0A3", 5, "release one"),
        Quota("nat", "NAT gateways", "vpc", "L-FE5A380F", 5, "delete one"),  # per AZ
        Quota("alb", "Application Load Balancers", "elasticloadbalancing", "L-53DA6B97", 50, "delete one"),
        Quota("rds", "DB instances", "rds", "L-7B6409FD", 40, "delete one"),
        Quota("fargate", "Fargate On-Demand vCPUs", "fargate", "L-3032A538", 6, "stop some tasks"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Need:
    key: str
    amount: float
    where: str  # "region us-east-1" or "availability zone us-east-1a"


@dataclass(frozen=True)
class Finding:
    need: Need
    limit: float
    used: float

    @property
    def quota(self) -> Quota:
        return QUOTAS[self.need.key]

    @property
    def ok(self) -> bool:
        return self.used + self.need.amount <= self.limit

    @property
    def message(self) -> str:
        q = self.quota
        return (
            f"{self.need.where} has {self.used:g} of {self.limit:g} {q.what} in use; the lab "
            f"needs {self.need.amount:g} more: {q.remedy} or request an increase "
            f"(Service Quotas code {q.code})"
        )


class QuotaExceeded(Exception):
    """The account has no room for the lab: one line per full quota."""

    def __init__(self, findings: list[Finding]):
        self.findings = findings
        super().__init__("\n".join(f.message for f in findings))


# ---------------------------------------------------------------- what the lab needs


def needs(ctx: Context, selected: list[str]) -> list[Need]:
    """What the selected steps will create that doesn't exist yet, per quota."""
    config, lab, region = ctx.config, ctx.lab, f"region {ctx.clients.region}"
    ec2 = ctx.clients.ec2
    found: list[Need] = []

    def missing(find: Callable[[], object]) -> bool:
        try:
            return find() is None
        except Exception:  # can't tell: count it, the safe side
            return True

    if "vpc" in selected and missing(lambda: VPC.find(ec2, config.vpc.name, lab)):
        found.append(Need("vpc", 1, region))
    if "nat" in selected:
        eip = f"{config.vpc.nat_gateway}-eip"
        if missing(lambda: ELASTIC_IP.find(ec2, eip, lab)):
            found.append(Need("eip", 1, region))
        if missing(lambda: NAT_GATEWAY.find(ec2, config.vpc.nat_gateway, lab)):
            az = config.vpc.public_subnets[0].az
            found.append(Need("nat", 1, f"availability zone {az}"))
    if "alb" in selected and missing(
        lambda: LOAD_BALANCER.find(ctx.clients.elbv2, config.alb.name, lab)
    ):
        found.append(Need("alb", 1, region))
    if "rds" in selected and missing(
        lambda: DB_INSTANCE.find(ctx.clients.rds, config.rds.identifier, lab)
    ):
        found.append(Need("rds", 1, region))
    if "ecs" in selected:
        running = _services(ctx)
        vcpus = sum(
            s.desired_count * s.cpu / 1024
            for s in config.ecs.services.values()
            if s.service not in running
        )
        if vcpus:
            found.append(Need("fargate", vcpus, region))
    return found


def _services(ctx: Context) -> set[str]:
    """The names of the lab's ECS services that exist (ACTIVE) already."""
    names = [s.service for s in ctx.config.ecs.services.values()]
    try:
        described = ctx.clients.ecs.describe_services(
            cluster=ctx.config.ecs.cluster, services=names
        )
    except Exception:
        return set()
    return {s["serviceName"] for s in described.get("services", []) if s.get("status") == "ACTIVE"}


def merge(many: list[list[Need]]) -> list[Need]:
    """The needs of several labs built together, added up per quota and place."""
    total: dict[tuple[str, str], float] = {}
    for lab_needs in many:
        for need in lab_needs:
            total[(need.key, need.where)] = total.get((need.key, need.where), 0) + need.amount
    return [Need(key, amount, where) for (key, where), amount in total.items()]


# ---------------------------------------------------------------- what exists


def usage(ctx: Context, need: Need) -> float:
    ec2 = ctx.clients.ec2
    if need.key == "vpc":
        return sum(len(p["Vpcs"]) for p in ec2.get_paginator("describe_vpcs").paginate())
    if need.key == "eip":
        return len(
            ec2.describe_addresses(Filters=[{"Name": "domain", "Values": ["vpc"]}])["Addresses"]
        )
    if need.key == "nat":
        az = need.where.rsplit(" ", 1)[-1]
        pages = ec2.get_paginator("describe_nat_gateways").paginate()
        subnets = [
            n["SubnetId"]
            for p in pages
            for n in p["NatGateways"]
            if n.get("State") in LIVE_NAT_STATES
        ]
        if not subnets:
            return 0
        found = ec2.describe_subnets(SubnetIds=sorted(set(subnets)))["Subnets"]
        zone = {s["SubnetId"]: s["AvailabilityZone"] for s in found}
        return sum(1 for s in subnets if zone.get(s) == az)
    if need.key == "alb":
        pages = ctx.clients.elbv2.get_paginator("describe_load_balancers").paginate()
        return sum(1 for p in pages for lb in p["LoadBalancers"] if lb.get("Type") == "application")
    if need.key == "rds":
        pages = ctx.clients.rds.get_paginator("describe_db_instances").paginate()
        return sum(len(p["DBInstances"]) for p in pages)
    if need.key == "fargate":
        return _fargate_vcpus(ctx)
    raise ValueError(need.key)


def _fargate_vcpus(ctx: Context) -> float:
    ecs = ctx.clients.ecs
    total = 0.0
    for page in ecs.get_paginator("list_clusters").paginate():
        for cluster in page["clusterArns"]:
            arns = [
                arn
                for p in ecs.get_paginator("list_tasks").paginate(
                    cluster=cluster, launchType="FARGATE"
                )
                for arn in p["taskArns"]
            ]
            for first in range(0, len(arns), 100):
                tasks = ecs.describe_tasks(cluster=cluster, tasks=arns[first : first + 100])
                total += sum(float(t.get("cpu") or 0) / 1024 for t in tasks["tasks"])
    return total


# ---------------------------------------------------------------- the check

# Service Quotas is a lookup: an endpoint that doesn't implement it (an AWS-compatible
# emulator) answers 5xx, which the lab's 8 attempts would back off on for minutes.
QUOTAS_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5)


def limit(sq, quota: Quota) -> tuple[float, str]:
    """The quota's value from Service Quotas (the applied value, else AWS's default for the
    account: some quotas have only that), else AWS's documented default and why."""
    codes = {"ServiceCode": quota.service, "QuotaCode": quota.code}
    why = ""
    for ask in (sq.get_service_quota, sq.get_aws_default_service_quota):
        try:
            return ask(**codes)["Quota"]["Value"], ""
        except Exception as exc:
            why = why or describe(exc)[0]
    return quota.default, (
        f"Service Quotas can't tell {quota.what} ({quota.code}: {why}); checked against AWS's "
        f"documented default of {quota.default:g}"
    )


def check(
    ctx: Context,
    lab_needs: list[Need],
    *,
    local: bool,
    limits: dict[str, float] | None = None,
    note: Callable[[str], None] = lambda _n: None,
) -> None:
    """Raise QuotaExceeded if any quota has no room for what the lab needs. `note` hears of
    each quota taken at its documented default (and of usage that couldn't be counted)."""
    limits = limits or {}
    if local and lab_needs:
        note(
            "quota preflight: the local emulator has no quotas; checked against AWS's "
            "documented defaults"
        )
    full = []
    sq = None if local else ctx.session.client("service-quotas", config=QUOTAS_CONFIG)
    unanswered = ""  # once Service Quotas answers neither call, it isn't asked again
    for need in lab_needs:
        quota = QUOTAS[need.key]
        if need.key in limits:
            value = limits[need.key]
        elif local or unanswered:
            value = quota.default
        else:
            value, why = limit(sq, quota)
            if why:
                unanswered = why
                note(f"quota preflight: {why}; the quotas after it are at their defaults too")
        try:
            used = usage(ctx, need)
        except Exception as exc:
            note(f"quota preflight: can't count {quota.what} in use: {describe(exc)[0]}")
            continue
        finding = Finding(need, value, used)
        if not finding.ok:
            full.append(finding)
    if full:
        raise QuotaExceeded(full)
