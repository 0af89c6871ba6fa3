"""A kind of AWS resource, declared once: how to read one, whose it is, how to list the lab's,
how to delete it, what it costs.

Each kind is a small class: data (its service, the field that is its id, the error codes
that mean "it doesn't exist", its type in the Resource Groups Tagging API) and the few
methods whose behaviour differs (`describe`, `find`, `tags`, `delete`). The mechanics (the
missing-to-None mapping, liveness, listing by tag) are written once, here.

Ownership: a resource is this lab's only if it carries this lab's `msctl:lab` tag, or, for
a type AWS can't tag, the same mark in a field it has (`mark()` in a description or in a
dashboard's body). `owner()` is the one place that answers that question.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from botocore.exceptions import ClientError

from ..aws.errors import error_code
from ..aws.tags import LAB, NAME, STEP, as_dict
from ..engine.step import StepError

if TYPE_CHECKING:
    from ..aws.waiters import Wait
    from ..context import Context
    from ..steps.run import StepRun

Resource = dict[str, Any]

# Codes that mean "no such resource" whatever the service (each kind adds its own).
GONE_CODES = frozenset(
    {"NotFound", "NotFoundException", "ResourceNotFoundException", "NoSuchEntity", "404"}
)
_MARK = re.compile(r"msctl:lab=([\w.-]+) msctl:step=([\w.-]+)")


def mark(lab: str, step: str) -> str:
    """The ownership mark for a type AWS can't tag (in its description, a dashboard's body)."""
    return f"msctl:lab={lab} msctl:step={step}"


def marked(text: str | None) -> dict[str, str]:
    """The tags a mark stands for ({} when the text carries none)."""
    found = _MARK.search(text or "")
    return {LAB: found.group(1), STEP: found.group(2)} if found else {}


def owner(tags: dict[str, str]) -> str | None:
    """The lab a resource belongs to, from its tags (or its mark): None for no msctl lab."""
    return tags.get(LAB)


def absent(call: Callable[[], Any], codes: Iterable[str] = ()) -> Any:
    """The call's answer, or None when the service says the resource doesn't exist."""
    try:
        return call()
    except ClientError as exc:
        code = error_code(exc) or ""
        if code in GONE_CODES or code in codes or code.endswith(".NotFound"):
            return None
        raise


def first(items: list | None) -> Any:
    return items[0] if items else None


def only_one(items: list[Resource], what: str) -> Resource | None:
    """More than one match for a lab resource is an error, not a guess."""
    if len(items) > 1:
        raise StepError(
            f"found {len(items)} {what} tagged for this lab; expected at most one",
            hint="remove the extra copies (msctl down removes all of them) and run again",
        )
    return items[0] if items else None


def pages(call: Callable[..., dict], key: str, token: str = "NextToken", **kwargs) -> Iterator:
    """Every item under `key` of a call paged by a NextToken-style field (for the calls
    botocore has no paginator for)."""
    while True:
        page = call(**kwargs)
        yield from page.get(key) or []
        nxt = page.get(token)
        if not nxt:
            return
        kwargs = {**kwargs, token: nxt}


@dataclass
class Item:
    """One resource of a kind, as a listing found it and as AWS describes it now."""

    kind: str
    id: str
    name: str = ""
    region: str = ""
    arn: str | None = None
    tags: dict[str, str] = field(default_factory=dict, repr=False)
    live: Resource | None = field(default=None, repr=False)
    note: str = ""  # why it couldn't be checked or deleted
    keep: str = ""  # why it stays on purpose
    hourly: float = 0.0

    @property
    def label(self) -> str:
        return self.name or self.id


class Kind:
    """One AWS resource type. Subclasses set the data and override what differs."""

    name: ClassVar[str]  # "table": the kind in plans, state keys and reports
    service: ClassVar[str]  # the boto3 client
    region: ClassVar[str | None] = None  # a fixed region (CloudFront's certificates: us-east-1)
    id_key: ClassVar[str]  # the field of a described resource that is its id
    arn_key: ClassVar[str | None] = None
    name_key: ClassVar[str | None] = None  # the field that is its name, if it has one
    missing: ClassVar[tuple[str, ...]] = ()  # error codes that mean "no such resource"
    # "<service>:<type>" of its ARN, as the Resource Groups Tagging API lists it (None: AWS
    # can't tag it).
    tagging_type: ClassVar[str | None] = None
    # Listed by `scan` (the service's own listing) instead of the tagging API: that API is
    # blind to it (IAM, ECR, API Gateway, ... on the local emulator), or lags (EC2 reads are
    # filtered by tag and consistent at once).
    scanned: ClassVar[bool] = False
    hourly: ClassVar[float] = 0.0  # USD per hour while it exists (see `cost`)

    # --- reading one
    def client(self, ctx: Context):
        return ctx.clients.get(self.service, region=self.region)

    def describe(self, client, ident: str) -> Resource | None:
        """The resource by its id, raw (a missing one may raise: `read` maps that)."""
        raise NotImplementedError

    def read(self, client, ident: str) -> Resource | None:
        """The live resource, or None when it doesn't exist or is on its way out."""
        found = absent(lambda: self.describe(client, ident), self.missing)
        return found if found is not None and self.alive(found) else None

    def alive(self, resource: Resource) -> bool:
        """False for what AWS still lists but is gone or going (deleted NAT gateways...)."""
        return True

    def find(self, client, name: str, lab: str) -> Resource | None:
        """The resource the lab calls `name`, whoever owns it (the caller checks that):
        by default the name is its id."""
        return self.read(client, name)

    def tags(self, client, resource: Resource) -> dict[str, str]:
        """Its tags (or the tags its mark stands for)."""
        return as_dict(resource.get("Tags"))

    def tags_if_there(self, client, resource: Resource) -> dict[str, str] | None:
        """Its tags, or None when it was deleted since it was listed (by another lab's
        `down` running beside this one, say)."""
        return absent(lambda: self.tags(client, resource), self.missing)

    def ident(self, resource: Resource) -> str:
        return resource[self.id_key]

    def arn(self, resource: Resource) -> str | None:
        return resource.get(self.arn_key) if self.arn_key else None

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return tags.get(NAME) or (resource.get(self.name_key) if self.name_key else None) or ""

    def id_from_arn(self, arn: str) -> str:
        """The id `describe` takes, from the ARN the tagging API lists (default: the ARN)."""
        return arn

    # --- listing the lab's
    def scan(self, client, lab: str | None) -> Iterable[Resource]:
        """Every resource of this kind that may be the lab's (lab None: any lab's), for
        kinds the tagging API can't list (the caller keeps those whose tags say so)."""
        raise NotImplementedError

    def owned(self, ctx: Context, lab: str | None, step: str | None) -> list[Item]:
        """The lab's resources of this kind (of one step, if given), found by `scan`; lab
        None: those of every msctl lab."""
        client = self.client(ctx)
        items = []
        for resource in self.scan(client, lab):
            tags = self.tags_if_there(client, resource)
            if tags is None or owner(tags) is None or (lab and owner(tags) != lab):
                continue
            if step and tags.get(STEP) != step:
                continue
            item = self.item(resource, tags, region=self.region or ctx.clients.region)
            item.live = resource if self.alive(resource) else None
            items.append(item)
        return items

    def item(self, resource: Resource, tags: dict[str, str], region: str = "") -> Item:
        return Item(
            self.name,
            self.ident(resource),
            self.label(resource, tags),
            region=region,
            arn=self.arn(resource),
            tags=tags,
            live=resource,
        )

    # --- deleting and costing
    def delete(self, run: StepRun, resource: Resource) -> Wait | None:
        """Delete it, or start deleting it and return what is left to wait for (the caller
        starts every delete of a kind before waiting for any)."""
        raise NotImplementedError

    def prepare(self, run: StepRun, resources: list[Resource]) -> None:
        """Before any resource of this kind is deleted (cross references between them)."""

    def keep(self, run: StepRun, resource: Resource) -> str:
        """Why this resource stays after `down` ("" for: delete it)."""
        return ""

    def cost(self, resource: Resource) -> float:
        return self.hourly


class Part(Kind):
    """A part of a resource (a listener, a stage, an image): found inside a parent the lab
    already owns (so it is the lab's), and deleted with it. Steps pass their own `find`."""

    def __init__(self, name: str, id_key: str, arn_key: str | None = None):
        self.name = name
        self.id_key = id_key
        self.arn_key = arn_key
