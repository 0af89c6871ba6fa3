"""Prices of the billable kinds: from AWS's Price List API when it answers, else the
built-in table (costs.py). Every output that shows a price names the source (`Prices.label`).

The Price List API answers in us-east-1 only (whatever the lab's region: the filters pick
the region). One look-up per process and region: a run asks once (`prices()`).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace

from botocore.config import Config

from . import costs

PRICING_REGION = "us-east-1"
# One quick try: a price is a nicety, never worth a hang (no network, no permission).
PRICING_CONFIG = Config(retries={"max_attempts": 1}, connect_timeout=3, read_timeout=10)
BUILT_IN = "built-in table"
API = "AWS Price List API"

# What to ask for each price: (service code, filters, the usage type's ending).
QUERIES = {
    "nat_gateway": ("AmazonEC2", {"productFamily": "NAT Gateway"}, "NatGateway-Hours"),
    "public_ipv4": ("AmazonVPC", {}, "PublicIPv4:InUseAddress"),
    "alb": ("AWSELB", {"productFamily": "Load Balancer-Application"}, "LoadBalancerUsage"),
    "fargate_vcpu": ("AmazonECS", {}, "Fargate-vCPU-Hours:perCPU"),
    "fargate_gb": ("AmazonECS", {}, "Fargate-GB-Hours"),
}
HOURLY_UNITS = ("Hrs", "Hours", "hours", "hrs")


@dataclass(frozen=True)
class Prices:
    """USD per hour of each billable kind, and where they came from."""

    nat_gateway: float = costs.NAT_GATEWAY
    public_ipv4: float = costs.PUBLIC_IPV4
    alb: float = costs.ALB
    fargate_vcpu: float = costs.FARGATE_VCPU
    fargate_gb: float = costs.FARGATE_GB
    rds: dict[str, float] = field(default_factory=lambda: dict(costs.RDS_INSTANCE))
    source: str = BUILT_IN
    why: str = ""  # why the built-in table was used

    @property
    def label(self) -> str:
        """The line every output that shows a price carries."""
        return f"prices: {self.source}" + (f" ({self.why})" if self.why else "")

    def as_json(self) -> dict:
        return {"source": self.source, "note": self.why or None}

    # --- what each billable kind costs an hour
    def rds_hourly(self, instance_class: str | None, storage_gb: float) -> float:
        """An instance (0 when its class is unknown) plus its gp2 storage, as costs.py."""
        instance = self.rds.get(instance_class or "", 0.0)
        return instance + storage_gb * costs.GP2_GB_MONTH / costs.HOURS_PER_MONTH

    def fargate_hourly(self, cpu_units: float, memory_mib: float, tasks: int) -> float:
        per_task = cpu_units / 1024 * self.fargate_vcpu + memory_mib / 1024 * self.fargate_gb
        return per_task * tasks

    def cost(self, item) -> float:
        """An inventory item's hourly cost at these prices (its kind's own estimate for the
        kinds the Price List API isn't asked about)."""
        live = item.live or {}
        if item.kind == "nat-gateway":
            return self.nat_gateway
        if item.kind == "elastic-ip":
            return self.public_ipv4
        if item.kind == "load-balancer":
            return self.alb + 2 * self.public_ipv4
        if item.kind == "db-instance" and live:
            return self.rds_hourly(live.get("DBInstanceClass"), live.get("AllocatedStorage", 0))
        if item.kind == "ecs-service" and live:
            size = live.get("_size") or {}
            tasks = max(live.get("desiredCount", 0), live.get("runningCount", 0))
            return self.fargate_hourly(
                float(size.get("cpu") or 0), float(size.get("memory") or 0), tasks
            )
        return item.hourly


# ---------------------------------------------------------------- the Price List API


def hourly_price(price_list: list, usage_suffix: str) -> float | None:
    """The on-demand USD-per-hour price in a GetProducts answer (its PriceList: JSON strings)
    of the product whose usage type ends with `usage_suffix`; None when there is none."""
    for entry in price_list:
        product = json.loads(entry) if isinstance(entry, str) else entry
        usage = product.get("product", {}).get("attributes", {}).get("usagetype", "")
        if not usage.endswith(usage_suffix):
            continue
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and dimension.get("unit") in HOURLY_UNITS and float(usd) > 0:
                    return float(usd)
    return None


def fetch(client, region: str, instance_classes: tuple[str, ...] = ()) -> Prices:
    """Every price from the API (raises if any call fails or a price isn't there)."""
    found: dict = {}
    for key, (service, filters, suffix) in QUERIES.items():
        found[key] = _ask(client, service, {**filters, "regionCode": region}, suffix)
    rds = dict(costs.RDS_INSTANCE)
    for instance_class in instance_classes:
        rds[instance_class] = _ask(
            client,
            "AmazonRDS",
            {
                "regionCode": region,
                "instanceType": instance_class,
                "databaseEngine": "PostgreSQL",
                "deploymentOption": "Single-AZ",
            },
            f"InstanceUsage:{instance_class}",
        )
    return Prices(**found, rds=rds, source=API)


def _ask(client, service: str, filters: dict[str, str], suffix: str) -> float:
    terms = [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in filters.items()]
    price_list: list = []
    kwargs = {"ServiceCode": service, "Filters": terms, "FormatVersion": "aws_v1"}
    while True:
        page = client.get_products(**kwargs)
        price_list += page.get("PriceList", [])
        found = hourly_price(price_list, suffix)
        if found is not None:
            return found
        if not page.get("NextToken"):
            raise LookupError(f"no {suffix} price for {service} in {filters.get('regionCode')}")
        kwargs["NextToken"] = page["NextToken"]


_cache: dict[tuple, Prices] = {}
_lock = threading.Lock()


def prices(session, region: str, endpoint: str | None = None, instance_classes=()) -> Prices:
    """The prices for this run (asked once per process, region and endpoint): the API's,
    else the built-in table with the reason."""
    key = (region, endpoint, tuple(sorted(instance_classes)))
    with _lock:
        if key in _cache:
            return _cache[key]
        try:
            client = session.client(
                "pricing", region_name=PRICING_REGION, endpoint_url=endpoint, config=PRICING_CONFIG
            )
            found = fetch(client, region, tuple(instance_classes))
        except Exception as exc:  # any failure: the table, and say why
            found = replace(Prices(), why=f"Price List API unreachable: {_short(exc)}")
        _cache[key] = found
        return found


def _short(exc: Exception) -> str:
    from .aws.errors import describe

    text = describe(exc)[0] if not isinstance(exc, LookupError) else str(exc)
    text = text.split("<", 1)[0].splitlines()[0].rstrip(": ")  # no HTML error pages
    return text if len(text) <= 120 else text[:117] + "..."


def for_context(ctx, instance_classes=()) -> Prices:
    """The prices for a run's context (the local emulator's endpoint on the local target)."""
    endpoint = ctx.target.endpoint if ctx.target.is_local else None
    return prices(ctx.session, ctx.clients.region, endpoint, instance_classes)
