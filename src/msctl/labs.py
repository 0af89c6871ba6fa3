"""`msctl labs`: every lab in the account and region, from its tags (and from the state
backend when it is remote), with what it costs.

A lab's resources are found as `down` finds them (resources/inventory.py, for every lab at
once); created is the oldest creation time among them; the cost so far is an estimate: the
hourly cost of what exists now times the hours since then.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .aws.errors import describe
from .aws.tags import LAB
from .pricing import Prices, for_context
from .resources import Item
from .resources.inventory import owned

if TYPE_CHECKING:
    from .context import Context

# What every built lab has (on AWS and on the local emulator): all of them is "built",
# some is "partial", none (a state object only) is "absent".
CORE_KINDS = (
    "vpc",
    "nat-gateway",
    "table",
    "db-instance",
    "lambda-function",
    "load-balancer",
    "ecs-service",
    "rest-api",
    "distribution",
)
# The fields AWS gives a resource's creation time under (datetime, or epoch milliseconds).
CREATED_KEYS = (
    "CreateTime",
    "CreatedTime",
    "CreationDateTime",
    "InstanceCreateTime",
    "CreateDate",
    "CreatedDate",
    "CreationDate",
    "createdAt",
    "createdDate",
    "creationTime",
)
ESTIMATE = "cost so far: the hourly cost of what exists now times the hours since created"


@dataclass
class LabCost:
    name: str
    status: str = "absent"
    created: datetime.datetime | None = None
    resources: int = 0
    hourly: float = 0.0
    found_in: list[str] = field(default_factory=list)

    def so_far(self, now: datetime.datetime | None = None) -> float | None:
        if self.created is None:
            return None
        now = now or datetime.datetime.now(datetime.UTC)
        hours = max((now - self.created).total_seconds(), 0) / 3600
        return self.hourly * hours

    def as_json(self, now: datetime.datetime | None = None) -> dict:
        so_far = self.so_far(now)
        return {
            "name": self.name,
            "status": self.status,
            "created": self.created.isoformat() if self.created else None,
            "resources": self.resources,
            "hourly_usd": round(self.hourly, 4),
            "cost_so_far_usd": None if so_far is None else round(so_far, 4),
            "found_in": self.found_in,
        }


def created_at(item: Item) -> datetime.datetime | None:
    live = item.live or {}
    for key in CREATED_KEYS:
        value = live.get(key)
        if isinstance(value, datetime.datetime):
            return value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        if isinstance(value, int | float) and value > 0:  # epoch ms (logs) or s
            seconds = value / 1000 if value > 10**11 else value
            return datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return None


def summarize(name: str, items: list[Item], prices: Prices) -> LabCost:
    """One lab's status, creation time and hourly cost from its live resources."""
    live = [i for i in items if i.live is not None]
    row = LabCost(name, resources=len(live))
    row.hourly = sum(prices.cost(i) for i in live)
    times = [t for t in (created_at(i) for i in live) if t is not None]
    row.created = min(times) if times else None
    kinds = {i.kind for i in live}
    if kinds:
        row.status = "built" if set(CORE_KINDS) <= kinds else "partial"
    return row


def lab_cost(ctx: Context, lab: str, prices: Prices) -> LabCost:
    """This lab's cost (for `msctl status`)."""
    return summarize(lab, owned(ctx, lab).items, prices)


def all_labs(
    ctx: Context, prices: Prices, state_url: str | None = None
) -> tuple[list[LabCost], list[str]]:
    """Every lab with resources tagged in the context's account and region, and every lab
    the remote state backend holds. Returns the labs (by name) and what couldn't be listed."""
    inventory = owned(ctx, None)
    by_lab: dict[str, list[Item]] = {}
    for item in inventory.items:
        by_lab.setdefault(item.tags.get(LAB, ""), []).append(item)
    rows = {name: summarize(name, items, prices) for name, items in by_lab.items() if name}
    for row in rows.values():
        row.found_in.append("tags")
    problems = list(inventory.problems)
    if state_url:
        try:
            for name in backend_labs(ctx, state_url):
                rows.setdefault(name, LabCost(name)).found_in.append("state")
        except Exception as exc:
            problems.append(f"could not list the state backend {state_url}: {describe(exc)[0]}")
    return sorted(rows.values(), key=lambda r: r.name), problems


def backend_labs(ctx: Context, url: str) -> list[str]:
    """The lab of each `<prefix>/<lab>.json` in an s3://bucket/prefix backend."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    start = f"{prefix}/" if prefix else ""
    found = []
    for page in ctx.clients.s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=start
    ):
        for obj in page.get("Contents", []):
            rest = obj["Key"][len(start) :]
            if rest.endswith(".json") and "/" not in rest:
                found.append(rest.removesuffix(".json"))
    return found


def listing(ctx: Context, backend: str | None) -> dict:
    """`msctl labs`' document: every lab, its cost, and the prices' source."""
    prices = for_context(ctx)
    rows, problems = all_labs(ctx, prices, backend)
    return {
        **empty(ctx.clients.region, ctx.target.name),
        "prices": {**prices.as_json(), "label": prices.label},
        "estimate": ESTIMATE,
        "labs": [row.as_json() for row in rows],
        "problems": problems,
    }


def empty(region: str, target: str) -> dict:
    return {"region": region, "target": target, "prices": None, "labs": [], "problems": []}


def status_cost(ctx: Context, on_notice) -> dict | None:
    """`msctl status`' cost: what the lab costs an hour now and so far (an estimate)."""
    try:
        prices = for_context(ctx)
        found = lab_cost(ctx, ctx.lab, prices)
    except Exception as exc:  # the cost is a nicety: status stands without it
        on_notice(f"! could not work out the lab's cost: {describe(exc)[0]}")
        return None
    return {**found.as_json(), "prices": {**prices.as_json(), "label": prices.label}}
