"""`down`'s final check: what is still tagged for the lab once the walk is done.

The walk deletes, step by step, everything of the step's kinds tagged for the lab and the
step. This looks again at everything tagged for the lab (every kind msctl knows, and what
the tagging API lists of types it doesn't) and reports it with its hourly cost: `down`
exits 1 while anything remains. What is kept on purpose (DB snapshots, which hold data; the
region's API Gateway logging role while the account setting names it) is listed, with its
cost, and doesn't fail `down`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .aws.tags import STEP
from .resources import KINDS
from .resources.inventory import owned
from .steps.run import StepRun

if TYPE_CHECKING:
    from .context import Context


@dataclass(frozen=True)
class Leftover:
    kind: str
    id: str
    name: str
    region: str
    hourly: float
    note: str = ""


@dataclass
class Leftovers:
    lab: str
    remaining: list[Leftover] = field(default_factory=list)
    kept: list[Leftover] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # listings that failed: not a full look

    @property
    def ok(self) -> bool:
        return not self.remaining and not self.problems

    @property
    def hourly(self) -> float:
        return sum(item.hourly for item in self.remaining)


def check(ctx: Context, steps: list[str] | None = None) -> Leftovers:
    """Everything still tagged for the lab (for these steps only, when given)."""
    inventory = owned(ctx, ctx.lab, unknown=steps is None)
    report = Leftovers(ctx.lab, problems=inventory.problems)
    run = StepRun(ctx, "down", dry_run=True, destroying=True)
    for item in inventory.items:
        if steps is not None and item.tags.get(STEP) not in steps:
            continue
        kind = KINDS.get(item.kind)
        kept = kind.keep(run, item.live) if kind and item.live is not None else ""
        note = item.note or ("msctl doesn't know this type: delete it yourself" if not kind else "")
        entry = Leftover(item.kind, item.id, item.name, item.region, item.hourly, kept or note)
        (report.kept if kept else report.remaining).append(entry)
    order = {name: i for i, name in enumerate(KINDS)}
    report.remaining.sort(key=lambda r: (order.get(r.kind, len(order)), r.id))
    return report


def at_risk(ctx: Context, steps: set[str]) -> list[str]:
    """What of the lab holds data that `down` would delete (for these steps): each table with
    its items, the database, the objects users put in the bucket."""
    from .resources.data import BUCKET, DB_INSTANCE, TABLE
    from .steps.s3 import SITE_PREFIX

    found = owned(ctx, ctx.lab, kinds=[TABLE, DB_INSTANCE, BUCKET])
    lost = []
    for item in sorted(found.items, key=lambda i: (i.kind, i.id)):
        if item.live is None or item.tags.get(STEP) not in steps:
            continue
        if item.kind == TABLE.name:
            lost.append(f"table {item.id}: {_count_items(ctx, item.id)}")
        elif item.kind == DB_INSTANCE.name:
            lost.append(f"database {item.id}: every product and order in it")
        elif item.kind == BUCKET.name:
            objects = _user_objects(ctx, item.id, SITE_PREFIX)
            if objects:
                lost.append(f"bucket {item.id}: {objects} object(s) besides the site")
    return lost


def _count_items(ctx: Context, table: str, cap: int = 100_000) -> str:
    ddb = ctx.clients.dynamodb
    count, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while count < cap:
        page = ddb.scan(**kwargs)
        count += page.get("Count", 0)
        if "LastEvaluatedKey" not in page:
            return f"{count} item(s)"
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return f"more than {cap} items"


def _user_objects(ctx: Context, bucket: str, site_prefix: str) -> int:
    pages = ctx.clients.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sum(
        1
        for page in pages
        for o in page.get("Contents", [])
        if not o["Key"].startswith(site_prefix)
    )
