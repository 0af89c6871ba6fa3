"""What belongs to a lab: the resources `down`'s walk deletes, step by step, and what its
final check finds still there.

Three sources, merged: the Resource Groups Tagging API (one call per region, filtered by the
lab's tags), the kinds that API can't see or that must be consistent at once (`Kind.scanned`),
and the ids the state file recorded (which only speed things up and cover the moments when
the tagging API still lags behind a create). Every item is then read on its own service:
only live resources that carry the lab's tags count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..aws.errors import describe
from ..aws.tags import LAB, NAME, STEP, as_dict
from . import KINDS, PARTS, arn_type, kind_of_arn
from .base import Item, Kind, owner

if TYPE_CHECKING:
    from ..context import Context

TAGGING_PAGE = 100
UNKNOWN = "unknown"


@dataclass
class Inventory:
    items: list[Item] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # listings that failed: not a full look

    def of(self, kind: Kind) -> list[Item]:
        return [i for i in self.items if i.kind == kind.name]


def owned(
    ctx: Context,
    lab: str | None,
    *,
    step: str | None = None,
    kinds: list[Kind] | None = None,
    unknown: bool = False,
) -> Inventory:
    """The live resources tagged for the lab (and `step`), of these kinds (default: all);
    with `unknown`, also what the tagging API lists whose type msctl doesn't know. Lab None:
    those of every msctl lab (`msctl labs`; the tags say whose each is)."""
    kinds = list(kinds if kinds is not None else KINDS.values())
    wanted = {k.name for k in kinds}
    inventory = Inventory()
    found: dict[tuple[str, str], Item] = {}
    to_read: list[tuple[Kind, Item]] = []

    for kind in (k for k in kinds if k.scanned):
        try:
            for item in kind.owned(ctx, lab, step):
                if item.live is not None:
                    found.setdefault((item.kind, item.id), item)
        except Exception as exc:
            inventory.problems.append(
                f"could not list the {kind.name} resources: {describe(exc)[0]}"
            )

    regions = {k.region or ctx.clients.region for k in kinds if not k.scanned}
    if unknown:
        regions.add(ctx.clients.region)
    for region in sorted(regions):
        try:
            for arn, tags in _tagged(ctx, region, lab, step):
                kind = kind_of_arn(arn)
                if kind is None:
                    if unknown and arn_type(arn) not in PARTS:
                        found.setdefault(
                            (UNKNOWN, arn),
                            Item(UNKNOWN, arn, tags.get(NAME, ""), region, arn, tags, live={}),
                        )
                    continue
                if kind.name in wanted and not kind.scanned:
                    to_read.append(
                        (kind, Item(kind.name, kind.id_from_arn(arn), region=region, arn=arn))
                    )
        except Exception as exc:
            inventory.problems.append(
                f"could not list tagged resources in {region}: {describe(exc)[0]}"
            )

    for name in ([step] if step else ctx.state.steps()) if lab else ():
        for key, entry in ctx.state.resources(name).items():
            kind = KINDS.get(key.split(":", 1)[0])
            if kind is not None and kind.name in wanted and entry.get("id"):
                to_read.append((kind, Item(kind.name, entry["id"], region=kind.region or "")))

    for kind, item in to_read:
        if (kind.name, item.id) in found:
            continue
        client = kind.client(ctx)
        try:
            live = kind.read(client, item.id)
            tags = kind.tags_if_there(client, live) if live is not None else None
        except Exception as exc:  # counts as there: it may well be
            item.note = f"could not check it: {describe(exc)[0]}"
            found[(kind.name, item.id)] = item
            continue
        if tags is None or not _belongs(tags, lab) or (step and tags.get(STEP) != step):
            continue
        read = kind.item(live, tags, region=item.region or kind.region or ctx.clients.region)
        found.setdefault((read.kind, read.id), read)

    inventory.items = list(found.values())
    for item in inventory.items:
        kind = KINDS.get(item.kind)
        item.region = item.region or ctx.clients.region
        if kind is not None and item.live is not None:
            item.hourly = kind.cost(item.live)
    return inventory


def _belongs(tags: dict[str, str], lab: str | None) -> bool:
    return owner(tags) is not None if lab is None else owner(tags) == lab


def _tagged(ctx: Context, region: str, lab: str | None, step: str | None):
    """(ARN, tags) of everything the tagging API lists with the lab's (and step's) tags."""
    tagging = ctx.clients.get("resourcegroupstaggingapi", region=region)
    filters = [{"Key": LAB, "Values": [lab]} if lab else {"Key": LAB}]
    if step:
        filters.append({"Key": STEP, "Values": [step]})
    paginator = tagging.get_paginator("get_resources")
    for page in paginator.paginate(TagFilters=filters, ResourcesPerPage=TAGGING_PAGE):
        for mapping in page.get("ResourceTagMappingList", []):
            tags = as_dict(mapping.get("Tags"))
            if _belongs(tags, lab) and (not step or tags.get(STEP) == step):
                yield mapping["ResourceARN"], tags
