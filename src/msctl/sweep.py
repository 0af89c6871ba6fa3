"""The sweep: after `down`'s walk, remove whatever is still tagged for the lab.

The walk deletes what each step's config names. An interrupted `up` can leave more: a
second NAT gateway whose create was retried, a security group whose name changed in the
config since, a repository of a renamed service. The sweep finds everything that carries
`msctl:lab=<lab>` and deletes it, dependents first, through the same Context and clients as
the walk and with the steps' own delete helpers (NAT delete-and-wait before its EIP,
CloudFront disable/wait/delete, S3 emptied of every version, ECR force delete, IAM policies
before the role, ECS scaled to 0 before the cluster, RDS without a final snapshot unless the
config asks for one). Then it looks again: what is still there is reported, with its
estimated hourly cost, and `down` exits 1.

Discovery is the Resource Groups Tagging API plus per-service listings where that API is
blind (IAM roles, ECR, API Gateway, Route 53, Elastic IPs, DB subnet groups, X-Ray, the
auto scaling targets of the lab's cluster) and, for what can't be tagged (the CloudWatch
dashboard, CloudFront's origin access control), the config's names, exactly as their steps
find them. Every item is then described on its own service: the tagging API still lists
deleted NAT gateways, inactive ECS services and task definitions, and on AWS it lags behind
deletes; only live resources count.

Kept, never deleted: DB snapshots (they hold data; `rds.final_snapshot` makes them on
purpose) and the API Gateway CloudWatch role while the account setting names it (see the
apigw step). They are listed, with their cost, but don't fail `down`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from .aws.errors import describe, error_code, is_code
from .aws.logs import find_log_group
from .aws.tags import LAB, NAME, as_dict, ec2_filters
from .costs import resource_hourly
from .engine.model import Change, Event, Status, StepResult
from .engine.step import StepError, StepRun
from .steps import (
    alb,
    cloudfront,
    cloudwatch,
    dynamodb,
    ecs,
    iam,
    lambda_,
    nat,
    rds,
    route53,
    s3,
    sg,
    vpc,
    xray,
)

STEP = "sweep"  # the name the sweep's events carry
GLOBAL_REGION = "us-east-1"  # CloudFront and the ACM certificates CloudFront uses
TAGGING_PAGE = 100
NOT_FOUND = (
    "NotFound",
    "NotFoundException",
    "ResourceNotFoundException",
    "NoSuchEntity",
    "NoSuchBucket",
    "NoSuchDistribution",
    "NoSuchOriginAccessControl",
    "NoSuchHostedZone",
    "RepositoryNotFoundException",
    "LoadBalancerNotFound",
    "TargetGroupNotFound",
    "DBInstanceNotFound",
    "DBInstanceNotFoundFault",
    "DBSubnetGroupNotFoundFault",
    "DBSnapshotNotFound",
    "DBSnapshotNotFoundFault",
    "ClusterNotFoundException",
    "ServiceNotFoundException",
)


# ---------------------------------------------------------------- records


@dataclass
class Item:
    """One thing tagged for the lab: what kind, the id its delete takes, where, what it costs."""

    kind: str
    id: str
    name: str = ""
    region: str = ""
    arn: str | None = None
    hourly: float = 0.0
    extra: dict = field(default_factory=dict, repr=False)  # what lookup/delete need (cluster...)
    keep: str = ""  # why it is kept (never deleted)
    note: str = ""  # why it couldn't be checked or deleted

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.id)

    @property
    def label(self) -> str:
        return self.name or self.id


@dataclass(frozen=True)
class Leftover:
    """An item as the report shows it."""

    kind: str
    id: str
    name: str
    region: str
    hourly: float
    note: str = ""

    @classmethod
    def of(cls, item: Item, note: str = "") -> Leftover:
        return cls(item.kind, item.id, item.name, item.region, item.hourly, note or item.note)


@dataclass
class SweepResult:
    lab: str
    removed: list[Leftover] = field(default_factory=list)
    remaining: list[Leftover] = field(default_factory=list)
    kept: list[Leftover] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # listings that failed: not a full look

    @property
    def ok(self) -> bool:
        return not self.remaining and not self.problems

    @property
    def hourly(self) -> float:
        return sum(item.hourly for item in self.remaining)


@dataclass(frozen=True)
class Kind:
    """How to handle one kind: its place in the delete order (dependents first), how to see
    it live (None: gone or on its way out), how to delete it, and what it costs."""

    order: int
    lookup: Callable[[Sweeper, Item], dict | None]
    delete: Callable[[Sweeper, Item, dict], None] | None
    cost: Callable[[Item, dict], float] | None = None
    keep: Callable[[Sweeper, Item, dict], str] | None = None
    prepare: Callable[[Sweeper, list[Item]], None] | None = None


# ---------------------------------------------------------------- entry point


def sweep(ctx) -> SweepResult:
    """Delete everything still tagged for the lab; report what remains."""
    return Sweeper(ctx).run()


class _SweepRun(StepRun):
    """The sweep's StepRun (verbs, waits, retries); its first event starts the sweep's row in
    the progress display, so a sweep that finds nothing shows nothing."""

    def __init__(self, sweeper: Sweeper):
        super().__init__(sweeper.ctx, STEP, dry_run=False)
        self._sweeper = sweeper

    def emit(self, kind: str, message: str) -> None:
        self._sweeper.started()
        super().emit(kind, message)


class Sweeper:
    def __init__(self, ctx):
        self.ctx = ctx
        self.lab = ctx.lab
        self.region = ctx.clients.region
        self.run_ = _SweepRun(self)
        self._started = False

    def started(self) -> None:
        if not self._started:
            self._started = True
            self.ctx.emit(Event("start", STEP))

    # --- clients and events
    def client(self, service: str, region: str | None = None):
        if not region or region == self.region:
            return self.ctx.clients.get(service)
        return self.ctx.clients.get(service, region=region)

    def note(self, message: str) -> None:
        self.run_.emit("note", message)

    # --- the sweep
    def run(self) -> SweepResult:
        began = time.monotonic()
        result = self._sweep()
        if self._started:
            if not result.ok:
                status = Status.FAILED
                reasons = [f"{len(result.remaining)} tagged resource(s) remain"] * bool(
                    result.remaining
                ) + ["not everything could be listed"] * bool(result.problems)
                reason = "; ".join(reasons)
            elif result.removed:
                status, reason = Status.COMPLETE, f"removed {len(result.removed)} leftover(s)"
            else:
                status, reason = Status.NOCHANGE, "nothing to remove"
            done = StepResult(STEP, status, reason, time.monotonic() - began)
            self.ctx.emit(Event("finish", STEP, reason, done))
        return result

    def _sweep(self) -> SweepResult:
        result = SweepResult(self.lab)
        found, result.problems = self.discover()
        for message in result.problems:
            self.note(message)
        errors: dict[tuple[str, str], str] = {}
        attempted: list[Item] = []
        todo = sorted((i for i in found if not i.keep), key=lambda i: (_kind(i).order, i.id))
        prepared: set[str] = set()
        for item in todo:
            spec = _kind(item)
            if spec.prepare and item.kind not in prepared:
                prepared.add(item.kind)
                try:
                    spec.prepare(self, [i for i in todo if i.kind == item.kind])
                except Exception as exc:  # the deletes say what it blocks
                    self.note(f"preparing {item.kind} deletes: {_message(exc)}")
            attempted.append(item)
            try:
                self._delete(item, spec)
            except Exception as exc:
                errors[item.key] = _message(exc)
                self.note(f"could not delete {item.kind} {item.label}: {errors[item.key]}")
        if not attempted:
            result.kept = [Leftover.of(i, i.keep) for i in found if i.keep]
            return result
        # What is left is what AWS reports now, not what the deletes said.
        after, problems = self.discover()
        result.problems = list(dict.fromkeys([*result.problems, *problems]))
        left = {i.key: i for i in after if not i.keep}
        result.kept = [Leftover.of(i, i.keep) for i in after if i.keep]
        result.removed = [Leftover.of(i) for i in attempted if i.key not in left]
        tried = {i.key for i in attempted}
        for key, item in left.items():
            note = errors.get(key) or item.note
            if not note:
                note = "still there after its delete" if key in tried else "found on a second look"
            result.remaining.append(Leftover.of(item, note))
        result.remaining.sort(key=lambda r: (KINDS.get(r.kind, UNKNOWN).order, r.id))
        return result

    def _delete(self, item: Item, spec: Kind) -> None:
        current = spec.lookup(self, item)
        if current is None:
            return  # went with something deleted before it (listeners with their LB, ...)
        if spec.delete is None:
            raise StepError(
                f"msctl doesn't know how to delete a {item.extra.get('type', item.kind)}: "
                "delete it yourself"
            )
        detail = item.id if item.name and item.name != item.id else ""
        self.run_.record(Change("delete", item.kind, item.label, detail))
        spec.delete(self, item, current)

    # --- discovery
    def discover(self) -> tuple[list[Item], list[str]]:
        """Every live item tagged for the lab, and the listings that failed."""
        items: dict[tuple[str, str], Item] = {}
        problems: list[str] = []
        for what, source in self._sources():
            try:
                for item in source():
                    item.region = item.region or self.region
                    items.setdefault(item.key, item)
            except Exception as exc:
                problems.append(f"could not list {what}: {_message(exc)}")
        live = []
        for item in items.values():
            spec = _kind(item)
            try:
                current = spec.lookup(self, item)
                if current is None:
                    continue
                item.hourly = spec.cost(item, current) if spec.cost else resource_hourly(item.kind)
                if spec.keep:
                    item.keep = spec.keep(self, item, current)
            except Exception as exc:
                item.note = f"could not check it: {_message(exc)}"
            live.append(item)
        return live, problems

    def _sources(self) -> list[tuple[str, Callable[[], Iterable[Item]]]]:
        regions = [(self.region, None)]
        if self.region != GLOBAL_REGION:
            regions.append((GLOBAL_REGION, ["acm:certificate", "cloudfront:distribution"]))
        sources: list[tuple[str, Callable[[], Iterable[Item]]]] = [
            (f"tagged resources in {region}", lambda r=region, t=types: self._tagged(r, t))
            for region, types in regions
        ]
        sources += [
            ("IAM roles", self._roles),
            ("ECR repositories", self._repositories),
            ("API Gateway REST APIs", self._rest_apis),
            ("Route 53 hosted zones", self._zones),
            ("Elastic IPs", self._addresses),
            ("DB subnet groups", self._db_subnet_groups),
            ("X-Ray groups and sampling rules", self._xray),
            ("the CloudWatch dashboard", self._dashboard),
            ("CloudFront origin access controls", self._oac),
            ("auto scaling targets", self._scalable_targets),
        ]
        return sources

    def _tagged(self, region: str, types: list[str] | None) -> Iterator[Item]:
        tagging = self.client("resourcegroupstaggingapi", region)
        kwargs: dict = {
            "TagFilters": [{"Key": LAB, "Values": [self.lab]}],
            "ResourcesPerPage": TAGGING_PAGE,
        }
        if types:
            kwargs["ResourceTypeFilters"] = types
        for page in tagging.get_paginator("get_resources").paginate(**kwargs):
            for mapping in page.get("ResourceTagMappingList", []):
                tags = as_dict(mapping.get("Tags"))
                if tags.get(LAB) != self.lab:
                    continue
                item = item_from_arn(mapping["ResourceARN"], tags)
                if item is not None:
                    yield item

    def _roles(self) -> Iterator[Item]:
        client = self.client("iam")
        for page in client.get_paginator("list_roles").paginate():
            for role in page.get("Roles", []):
                tags = _absent(lambda r=role: _role_tags(client, r["RoleName"])) or {}
                if tags.get(LAB) == self.lab:
                    yield Item("iam-role", role["RoleName"], role["RoleName"], arn=role["Arn"])

    def _repositories(self) -> Iterator[Item]:
        client = self.client("ecr")
        for page in client.get_paginator("describe_repositories").paginate():
            for repo in page.get("repositories", []):
                arn = repo["repositoryArn"]
                listed = _absent(lambda a=arn: client.list_tags_for_resource(resourceArn=a))
                if as_dict((listed or {}).get("tags")).get(LAB) == self.lab:
                    name = repo["repositoryName"]
                    yield Item("ecr-repository", name, name, arn=arn)

    def _rest_apis(self) -> Iterator[Item]:
        client = self.client("apigateway")
        pages = client.get_paginator("get_rest_apis").paginate(PaginationConfig={"PageSize": 500})
        for page in pages:
            for api in page.get("items", []):
                if (api.get("tags") or {}).get(LAB) == self.lab:
                    yield Item("rest-api", api["id"], api.get("name", ""))

    def _zones(self) -> Iterator[Item]:
        client = self.client("route53")
        for page in client.get_paginator("list_hosted_zones").paginate():
            for zone in page.get("HostedZones", []):
                zone_id = zone["Id"].split("/")[-1]
                tag_set = _absent(
                    lambda z=zone_id: client.list_tags_for_resource(
                        ResourceType="hostedzone", ResourceId=z
                    )
                )
                tags = as_dict(((tag_set or {}).get("ResourceTagSet") or {}).get("Tags"))
                # Only zones msctl created carry the lab's tags (route53 step); check both.
                if tags.get(LAB) == self.lab and tags.get(route53.CREATED) == "true":
                    yield Item("hosted-zone", zone_id, zone["Name"].rstrip("."))

    def _addresses(self) -> Iterator[Item]:
        found = self.client("ec2").describe_addresses(Filters=ec2_filters(self.lab))["Addresses"]
        for address in found:
            tags = as_dict(address.get("Tags"))
            if tags.get(LAB) == self.lab:  # the filter, checked: emulators may ignore filters
                name = tags.get(NAME) or address.get("PublicIp", "")
                yield Item("elastic-ip", address["AllocationId"], name)

    def _db_subnet_groups(self) -> Iterator[Item]:
        client = self.client("rds")
        for page in client.get_paginator("describe_db_subnet_groups").paginate():
            for group in page.get("DBSubnetGroups", []):
                arn = group["DBSubnetGroupArn"]
                listed = _absent(lambda a=arn: client.list_tags_for_resource(ResourceName=a))
                if as_dict((listed or {}).get("TagList")).get(LAB) == self.lab:
                    name = group["DBSubnetGroupName"]
                    yield Item("db-subnet-group", name, name, arn=arn)

    def _xray(self) -> Iterator[Item]:
        client = self.client("xray")
        try:
            groups = xray._pages(client.get_groups, "Groups")
            records = xray._pages(client.get_sampling_rules, "SamplingRuleRecords")
        except ClientError as exc:
            if xray.emulator_lacks(self.run_, exc):
                return  # nothing can exist where the calls don't
            raise
        for group in groups:
            arn = group.get("GroupARN", "")
            if group.get("GroupName") == "Default" or not arn:
                continue
            if self._xray_tags(client, arn).get(LAB) == self.lab:
                yield Item("xray-group", arn, group.get("GroupName", ""), arn=arn)
        for record in records:
            rule = record.get("SamplingRule", {})
            arn = rule.get("RuleARN", "")
            if rule.get("RuleName") == "Default" or not arn:
                continue
            if self._xray_tags(client, arn).get(LAB) == self.lab:
                yield Item("sampling-rule", rule["RuleName"], rule["RuleName"], arn=arn)

    @staticmethod
    def _xray_tags(client, arn: str) -> dict[str, str]:
        tags = _absent(
            lambda: xray._pages(
                lambda **kw: client.list_tags_for_resource(ResourceARN=arn, **kw), "Tags"
            )
        )
        return as_dict(tags)

    def _dashboard(self) -> Iterator[Item]:
        """Dashboards can't be tagged: the config's name is the lab's (the cloudwatch step's
        rule too)."""
        name = self.ctx.config.cloudwatch.dashboard
        if cloudwatch.find_dashboard(self.client("cloudwatch"), name) is not None:
            yield Item("dashboard", name, name)

    def _oac(self) -> Iterator[Item]:
        """Origin access controls can't be tagged; the cloudfront step names it after the lab."""
        name = cloudfront.oac_name_of(self.run_)
        found = cloudfront.find_oac(self.client("cloudfront", GLOBAL_REGION), name)
        if found is not None:
            yield Item("origin-access-control", found["Id"], name, region=GLOBAL_REGION)

    def _scalable_targets(self) -> Iterator[Item]:
        """The ECS step's targets are found by their resource id, which names the lab's
        cluster (moto doesn't keep their tags); a same-named cluster of someone else's is
        left alone, as the ecs step does."""
        cluster = self.ctx.config.ecs.cluster
        live = ecs._describe_cluster(self.client("ecs"), cluster)
        if live is not None and ecs._lab_of(live.get("tags")) != self.lab:
            return
        prefix = f"service/{cluster}/"
        for target in _scalable(self.client("application-autoscaling")):
            if target.get("ResourceId", "").startswith(prefix):
                yield _target_item(target)


# ---------------------------------------------------------------- ARNs from the tagging API


def item_from_arn(arn: str, tags: dict[str, str]) -> Item | None:
    """The item an ARN names, or None for what goes with its parent (listeners, stages)."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return Item("unknown", arn, tags.get(NAME, ""), arn=arn, extra={"type": arn})
    service, region, resource = parts[2], parts[3], parts[5]
    name = tags.get(NAME) or tags.get("Name") or ""
    kind_id = _kind_and_id(service, resource, arn)
    if kind_id is None:
        return None
    kind, ident, extra = kind_id
    if kind == "unknown":
        extra = {"type": f"{service}:{resource.split('/')[0].split(':')[0]}"}
    return Item(kind, ident, name, region=region, arn=arn, extra=extra)


def _kind_and_id(service: str, resource: str, arn: str) -> tuple[str, str, dict] | None:
    slash_type, _, slash_rest = resource.partition("/")
    colon_type, _, colon_rest = resource.partition(":")
    if service == "ec2":
        kinds = {
            "vpc": "vpc",
            "subnet": "subnet",
            "internet-gateway": "internet-gateway",
            "route-table": "route-table",
            "security-group": "security-group",
            "natgateway": "nat-gateway",
            "elastic-ip": "elastic-ip",
            "network-interface": "network-interface",
        }
        if slash_type in kinds:
            return kinds[slash_type], slash_rest, {}
    elif service == "ecs":
        if slash_type == "cluster":
            return "ecs-cluster", slash_rest, {}
        if slash_type in ("service", "task"):
            cluster = slash_rest.split("/")[0] if "/" in slash_rest else "default"
            kind = "ecs-service" if slash_type == "service" else "ecs-task"
            return kind, arn, {"cluster": cluster}
        if slash_type == "task-definition":
            return "task-definition", arn, {}
    elif service == "elasticloadbalancing":
        if slash_type == "loadbalancer":
            return "load-balancer", arn, {}
        if slash_type == "targetgroup":
            return "target-group", arn, {}
        if slash_type in ("listener", "listener-rule"):
            return None  # deleted with their load balancer
    elif service == "lambda" and colon_type == "function":
        return "lambda-function", colon_rest.split(":")[0], {}
    elif service == "logs" and colon_type == "log-group":
        return "log-group", colon_rest.removesuffix(":*"), {}
    elif service == "rds":
        kinds = {"db": "db-instance", "subgrp": "db-subnet-group", "snapshot": "db-snapshot"}
        if colon_type in kinds:
            return kinds[colon_type], colon_rest, {}
    elif service == "s3" and "/" not in resource:
        return "bucket", resource, {}
    elif service == "dynamodb" and slash_type == "table" and "/" not in slash_rest:
        return "table", slash_rest, {}
    elif service == "cloudfront" and slash_type == "distribution":
        return "distribution", slash_rest, {}
    elif service == "secretsmanager" and colon_type == "secret":
        return "secret", arn, {}
    elif service == "sns" and ":" not in resource:
        return "sns-topic", arn, {}
    elif service == "cloudwatch":
        if colon_type == "alarm":
            return "alarm", colon_rest, {}
        if slash_type == "dashboard":
            return "dashboard", slash_rest, {}
    elif service == "acm" and slash_type == "certificate":
        return "certificate", arn, {}
    elif service == "iam" and slash_type == "role":
        return "iam-role", resource.rsplit("/", 1)[-1], {}
    elif service == "ecr" and slash_type == "repository":
        return "ecr-repository", slash_rest, {}
    elif service == "apigateway" and resource.startswith("/restapis/"):
        rest = resource.removeprefix("/restapis/")
        return ("rest-api", rest, {}) if "/" not in rest else None  # stages go with the API
    elif service == "route53" and slash_type == "hostedzone":
        return "hosted-zone", slash_rest, {}
    elif service == "xray":
        if slash_type == "group":
            return "xray-group", arn, {}
        if slash_type == "sampling-rule":
            return "sampling-rule", slash_rest, {}
    elif service == "application-autoscaling" and slash_type == "scalable-target":
        return "scalable-target", arn, {}
    return "unknown", arn, {}


# ---------------------------------------------------------------- helpers


def _message(exc: BaseException) -> str:
    if isinstance(exc, StepError):
        return f"{exc} ({exc.hint})" if exc.hint else str(exc)
    return describe(exc)[0]


def _gone(exc: BaseException, *more: str) -> bool:
    code = error_code(exc) or ""
    return code in NOT_FOUND or code in more or code.endswith(".NotFound")


def _absent(call: Callable[[], dict | None], *more: str) -> dict | None:
    """The call's answer, or None when the service says the resource doesn't exist."""
    try:
        return call()
    except ClientError as exc:
        if _gone(exc, *more):
            return None
        raise


def _first(items: list[dict] | None) -> dict | None:
    return items[0] if items else None


def _role_tags(client, name: str) -> dict[str, str]:
    tags: list[dict] = []
    kwargs: dict = {}
    while True:
        page = client.list_role_tags(RoleName=name, **kwargs)
        tags += page.get("Tags", [])
        if not page.get("IsTruncated"):
            return as_dict(tags)
        kwargs = {"Marker": page["Marker"]}


def _scalable(client) -> list[dict]:
    return [
        target
        for page in client.get_paginator("describe_scalable_targets").paginate(
            ServiceNamespace=ecs.SCALING_NAMESPACE
        )
        for target in page.get("ScalableTargets", [])
    ]


def _target_item(target: dict) -> Item:
    return Item(
        "scalable-target",
        target["ResourceId"],
        target["ResourceId"],
        arn=target.get("ScalableTargetARN"),
        extra={"namespace": target["ServiceNamespace"], "dimension": target["ScalableDimension"]},
    )


# ---------------------------------------------------------------- network


def _vpc(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(lambda: _first(ec2.describe_vpcs(VpcIds=[item.id])["Vpcs"]))


def _delete_vpc(sw: Sweeper, item: Item, _found: dict) -> None:
    vpc.delete_vpc(sw.run_, sw.client("ec2", item.region), item.id)


def _subnet(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(lambda: _first(ec2.describe_subnets(SubnetIds=[item.id])["Subnets"]))


def _delete_subnet(sw: Sweeper, item: Item, _found: dict) -> None:
    vpc.delete_subnet(sw.run_, sw.client("ec2", item.region), item.id)


def _igw(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(
        lambda: _first(
            ec2.describe_internet_gateways(InternetGatewayIds=[item.id])["InternetGateways"]
        )
    )


def _route_table(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(
        lambda: _first(ec2.describe_route_tables(RouteTableIds=[item.id])["RouteTables"])
    )


def _group(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(
        lambda: _first(ec2.describe_security_groups(GroupIds=[item.id])["SecurityGroups"])
    )


def _revoke_references(sw: Sweeper, items: list[Item]) -> None:
    """A group can't be deleted while another group's rule names it: revoke those first."""
    for item in items:
        group = _group(sw, item)
        ec2 = sw.client("ec2", item.region)
        referencing = [
            p for p in (group or {}).get("IpPermissions", []) if p.get("UserIdGroupPairs")
        ]
        if referencing:
            sw.run_.setting(
                "ingress-rule",
                f"{item.label} group references",
                ok=False,
                detail="revoke before deleting groups",
                action="delete",
                apply=lambda g=item.id, p=referencing, c=ec2: c.revoke_security_group_ingress(
                    GroupId=g, IpPermissions=p
                ),
            )


def _delete_group(sw: Sweeper, item: Item, found: dict) -> None:
    if found.get("GroupName") == "default":
        return  # a VPC's default group goes with its VPC
    sg.delete_group(sw.run_, sw.client("ec2", item.region), item.id)


def _nat(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    found = _absent(
        lambda: _first(ec2.describe_nat_gateways(NatGatewayIds=[item.id])["NatGateways"])
    )
    # Deleted ones stay listed for an hour; deleting and failed ones don't bill.
    return found if found and found.get("State") in nat.LIVE_NAT_STATES else None


def _delete_nat(sw: Sweeper, item: Item, _found: dict) -> None:
    nat._delete_nat(sw.run_, item.id)


def _address(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(lambda: _first(ec2.describe_addresses(AllocationIds=[item.id])["Addresses"]))


def _release(sw: Sweeper, item: Item, _found: dict) -> None:
    ec2 = sw.client("ec2", item.region)
    sw.run_.retry(
        lambda: ec2.release_address(AllocationId=item.id),
        codes=("InvalidIPAddress.InUse", "AuthFailure", "DependencyViolation"),
        timeout=120,
        reason="a deleted NAT gateway still holds the address",
    )


def _eni(sw: Sweeper, item: Item) -> dict | None:
    ec2 = sw.client("ec2", item.region)
    return _absent(
        lambda: _first(
            ec2.describe_network_interfaces(NetworkInterfaceIds=[item.id])["NetworkInterfaces"]
        )
    )


def _delete_eni(sw: Sweeper, item: Item, found: dict) -> None:
    if found.get("Attachment"):
        raise StepError(
            f"network interface {item.id} is attached to "
            f"{found['Attachment'].get('InstanceId') or found.get('Description') or 'something'}"
            "; it goes when that does"
        )
    sw.client("ec2", item.region).delete_network_interface(NetworkInterfaceId=item.id)


# ---------------------------------------------------------------- data


def _table(sw: Sweeper, item: Item) -> dict | None:
    table = dynamodb.describe_table(sw.client("dynamodb", item.region), item.id)
    return table if table and table.get("TableStatus") != "DELETING" else None


def _delete_table(sw: Sweeper, item: Item, _found: dict) -> None:
    dynamodb.delete_table(sw.run_, item.id)


def _bucket(sw: Sweeper, item: Item) -> dict | None:
    tags = s3.bucket_tags(sw.client("s3"), item.id)
    return None if tags is None else {"Name": item.id, "Tags": tags}


def _delete_bucket(sw: Sweeper, item: Item, found: dict) -> None:
    s3.delete_bucket(sw.run_, found)


def _db_instance(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("rds", item.region)
    found = _absent(
        lambda: _first(client.describe_db_instances(DBInstanceIdentifier=item.id)["DBInstances"])
    )
    return found if found and found.get("DBInstanceStatus") != "deleting" else None


def _delete_db_instance(sw: Sweeper, item: Item, found: dict) -> None:
    """As the rds step does: protection off only when the config says off; a final snapshot
    only when the config asks for one."""
    if found.get("DeletionProtection"):
        if sw.ctx.config.rds.deletion_protection:
            raise StepError(
                f"DB instance {item.id} has deletion protection on, and the config "
                "(rds.deletion_protection: true) keeps it on",
                hint="run `msctl down` again with `--set rds.deletion_protection=false`",
            )
        rds.modify_instance(sw.run_, item.id, DeletionProtection=False)
    rds._delete_instance(sw.run_, found)


def _db_cost(_item: Item, found: dict) -> float:
    return resource_hourly(
        "db-instance",
        instance_class=found.get("DBInstanceClass"),
        allocated_storage=found.get("AllocatedStorage", 0),
    )


def _db_subnet_group(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("rds", item.region)
    return _absent(
        lambda: _first(
            client.describe_db_subnet_groups(DBSubnetGroupName=item.id)["DBSubnetGroups"]
        )
    )


def _delete_db_subnet_group(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("rds", item.region)
    sw.run_.retry(
        lambda: client.delete_db_subnet_group(DBSubnetGroupName=item.id),
        codes=("InvalidDBSubnetGroupStateFault",),
        timeout=rds.SUBNET_GROUP_DELETE_TIMEOUT,
        reason="the DB instance using the subnet group is still being deleted",
    )


def _db_snapshot(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("rds", item.region)
    found = _absent(
        lambda: _first(client.describe_db_snapshots(DBSnapshotIdentifier=item.id)["DBSnapshots"])
    )
    # Automated snapshots go with their instance (DeleteAutomatedBackups).
    if not found or found.get("SnapshotType") == "automated" or found.get("Status") == "deleting":
        return None
    return found


def _snapshot_cost(_item: Item, found: dict) -> float:
    return resource_hourly("db-snapshot", allocated_storage=found.get("AllocatedStorage", 0))


def _keep_snapshot(_sw: Sweeper, _item: Item, _found: dict) -> str:
    return "a DB snapshot holds data: msctl never deletes one (aws rds delete-db-snapshot)"


def _secret(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("secretsmanager", item.region)
    found = _absent(lambda: client.describe_secret(SecretId=item.id))
    return found if found and not found.get("DeletedDate") else None


def _delete_secret(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("secretsmanager", item.region)
    client.delete_secret(SecretId=item.id, ForceDeleteWithoutRecovery=True)


def _repository(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("ecr", item.region)
    return _absent(
        lambda: _first(client.describe_repositories(repositoryNames=[item.id])["repositories"])
    )


def _delete_repository(sw: Sweeper, item: Item, _found: dict) -> None:
    # force: a repository holding images can't be deleted otherwise.
    sw.client("ecr", item.region).delete_repository(repositoryName=item.id, force=True)


def _log_group(sw: Sweeper, item: Item) -> dict | None:
    return find_log_group(sw.client("logs", item.region), item.id)


def _delete_log_group(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("logs", item.region)
    _absent(lambda: client.delete_log_group(logGroupName=item.id))


# ---------------------------------------------------------------- compute and edge


def _role(sw: Sweeper, item: Item) -> dict | None:
    return iam.find_role(sw.client("iam"), item.id)


def _keep_role(sw: Sweeper, item: Item, found: dict) -> str:
    current = sw.client("apigateway").get_account().get("cloudwatchRoleArn") or ""
    if current and current == found.get("Arn"):
        return (
            "this region's API Gateway CloudWatch role: every REST API in the account logs "
            "through it, and AWS can't unset it (the apigw step keeps it too)"
        )
    return ""


def _delete_role(sw: Sweeper, item: Item, _found: dict) -> None:
    iam._delete_role(sw.run_, item.id)


def _function(sw: Sweeper, item: Item) -> dict | None:
    return lambda_.find_function(sw.client("lambda", item.region), item.id)


def _delete_function(sw: Sweeper, item: Item, _found: dict) -> None:
    lambda_._delete_function(sw.client("lambda", item.region), item.id)


def _load_balancer(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("elbv2", item.region)
    return _absent(
        lambda: _first(client.describe_load_balancers(LoadBalancerArns=[item.id])["LoadBalancers"])
    )


def _delete_load_balancer(sw: Sweeper, _item: Item, found: dict) -> None:
    # Its listeners (and their rules) go with it.
    alb._delete_lb(sw.run_, found)


def _target_group(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("elbv2", item.region)
    return _absent(
        lambda: _first(client.describe_target_groups(TargetGroupArns=[item.id])["TargetGroups"])
    )


def _delete_target_group(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("elbv2", item.region)
    sw.run_.retry(
        lambda: client.delete_target_group(TargetGroupArn=item.id),
        codes=("ResourceInUse",),
        timeout=alb.TG_IN_USE_TIMEOUT,
        reason="a deleted load balancer still references the target group",
    )


def _cluster(sw: Sweeper, item: Item) -> dict | None:
    return ecs._describe_cluster(sw.client("ecs", item.region), item.id)


def _delete_cluster(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("ecs", item.region)
    sw.run_.retry(
        lambda: client.delete_cluster(cluster=item.id),
        codes=(
            "ClusterContainsServicesException",
            "ClusterContainsTasksException",
            "UpdateInProgressException",
        ),
        timeout=ecs.CLUSTER_DELETE_TIMEOUT,
        reason="the deleted services' tasks are still stopping",
    )


def _service(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("ecs", item.region)
    return ecs._describe_service(client, item.extra.get("cluster", "default"), item.id)


def _service_cost(item: Item, found: dict) -> float:
    definition = found.get("_task_definition") or {}
    return resource_hourly(
        "ecs-service",
        cpu=definition.get("cpu"),
        memory=definition.get("memory"),
        tasks=max(found.get("desiredCount", 0), found.get("runningCount", 0)),
    )


def _service_with_size(sw: Sweeper, item: Item) -> dict | None:
    """The live service, with its task definition's size (for the cost)."""
    found = _service(sw, item)
    if found and found.get("taskDefinition"):
        client = sw.client("ecs", item.region)
        with_size = _absent(
            lambda: client.describe_task_definition(taskDefinition=found["taskDefinition"]),
            "ClientException",
        )
        found = {**found, "_task_definition": (with_size or {}).get("taskDefinition", {})}
    return found


def _delete_service(sw: Sweeper, item: Item, found: dict) -> None:
    """Scale to 0 (the tasks drain from the target group), delete, wait until it is gone:
    the ecs step's delete, for a service in any of the lab's clusters."""
    client = sw.client("ecs", item.region)
    cluster = item.extra.get("cluster", "default")
    name = found.get("serviceName", item.id)
    try:
        if found.get("desiredCount", 0) > 0:
            client.update_service(cluster=cluster, service=name, desiredCount=0)
        client.delete_service(cluster=cluster, service=name, force=True)
    except ClientError as exc:
        if not is_code(exc, "ServiceNotFoundException", "ServiceNotActiveException"):
            raise
    sw.run_.wait(
        f"service {name} to be deleted",
        lambda: ecs._service_gone(client, cluster, name),
        timeout=ecs.SERVICE_DELETE_TIMEOUT,
    )


def _task(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("ecs", item.region)
    found = _absent(
        lambda: _first(
            client.describe_tasks(cluster=item.extra.get("cluster", "default"), tasks=[item.id])[
                "tasks"
            ]
        )
    )
    return found if found and found.get("lastStatus") != "STOPPED" else None


def _stop_task(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("ecs", item.region).stop_task(
        cluster=item.extra.get("cluster", "default"), task=item.id, reason="msctl down (sweep)"
    )


def _task_definition(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("ecs", item.region)
    # DescribeTaskDefinition answers ClientException for one that doesn't exist.
    found = _absent(
        lambda: client.describe_task_definition(taskDefinition=item.id), "ClientException"
    )
    definition = (found or {}).get("taskDefinition") or {}
    return definition if definition.get("status") == "ACTIVE" else None


def _deregister(sw: Sweeper, item: Item, _found: dict) -> None:
    ecs._deregister(sw.client("ecs", item.region), [item.id])


def _scalable_target(sw: Sweeper, item: Item) -> dict | None:
    for target in _scalable(sw.client("application-autoscaling", item.region)):
        if item.id in (target.get("ResourceId"), target.get("ScalableTargetARN")):
            return target
    return None


def _deregister_target(sw: Sweeper, item: Item, found: dict) -> None:
    # Its scaling policies go with it.
    sw.client("application-autoscaling", item.region).deregister_scalable_target(
        ServiceNamespace=found["ServiceNamespace"],
        ResourceId=found["ResourceId"],
        ScalableDimension=found["ScalableDimension"],
    )


def _rest_api(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("apigateway", item.region)
    return _absent(lambda: client.get_rest_api(restApiId=item.id))


def _delete_rest_api(sw: Sweeper, item: Item, _found: dict) -> None:
    # DeleteRestApi's 1-per-30-s limit (TooManyRequests) is botocore's standard retry's job.
    sw.client("apigateway", item.region).delete_rest_api(restApiId=item.id)


def _distribution(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("cloudfront", GLOBAL_REGION)
    found = _absent(lambda: client.get_distribution(Id=item.id))
    return (found or {}).get("Distribution")


def _delete_distribution(sw: Sweeper, _item: Item, found: dict) -> None:
    # Disable, wait until the disable has deployed, delete (retrying DistributionNotDisabled).
    cloudfront._delete_distribution(sw.run_, found)


def _oac(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("cloudfront", GLOBAL_REGION)
    return _absent(lambda: client.get_origin_access_control(Id=item.id))


def _delete_oac(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("cloudfront", GLOBAL_REGION)
    sw.run_.retry(
        lambda: client.delete_origin_access_control(
            Id=item.id, IfMatch=client.get_origin_access_control(Id=item.id)["ETag"]
        ),
        codes=("OriginAccessControlInUse", "PreconditionFailed"),
        timeout=cloudfront.OAC_IN_USE_TIMEOUT,
        reason="a deleted distribution still holds the origin access control",
    )


def _certificate(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("acm", item.region or route53.CERT_REGION)
    found = _absent(lambda: client.describe_certificate(CertificateArn=item.id))
    return (found or {}).get("Certificate")


def _delete_certificate(sw: Sweeper, item: Item, _found: dict) -> None:
    client = sw.client("acm", item.region or route53.CERT_REGION)
    sw.run_.retry(
        lambda: client.delete_certificate(CertificateArn=item.id),
        codes=("ResourceInUseException",),
        timeout=route53.CERT_RELEASE_TIMEOUT,
        reason="CloudFront releases the certificate once its update has deployed",
    )


def _zone(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("route53")
    found = _absent(lambda: client.get_hosted_zone(Id=item.id))
    if not found:
        return None
    return {"Id": item.id, "Name": found["HostedZone"]["Name"], "created": True}


def _delete_zone(sw: Sweeper, _item: Item, found: dict) -> None:
    # Refuses (StepError) while the zone holds records msctl didn't make.
    route53._delete_zone(sw.run_, found)


def _alarm(sw: Sweeper, item: Item) -> dict | None:
    found = sw.client("cloudwatch", item.region).describe_alarms(AlarmNames=[item.id])
    return _first([*found.get("MetricAlarms", []), *found.get("CompositeAlarms", [])])


def _delete_alarm(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("cloudwatch", item.region).delete_alarms(AlarmNames=[item.id])


def _dashboard(sw: Sweeper, item: Item) -> dict | None:
    return cloudwatch.find_dashboard(sw.client("cloudwatch", item.region), item.id)


def _delete_dashboard(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("cloudwatch", item.region).delete_dashboards(DashboardNames=[item.id])


def _topic(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("sns", item.region)
    return _absent(lambda: client.get_topic_attributes(TopicArn=item.id))


def _delete_topic(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("sns", item.region).delete_topic(TopicArn=item.id)


def _xray_group(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("xray", item.region)
    found = _absent(lambda: client.get_group(GroupARN=item.id), "InvalidRequestException")
    return (found or {}).get("Group")


def _delete_xray_group(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("xray", item.region).delete_group(GroupARN=item.id)


def _sampling_rule(sw: Sweeper, item: Item) -> dict | None:
    client = sw.client("xray", item.region)
    records = xray._pages(client.get_sampling_rules, "SamplingRuleRecords")
    rules = [r["SamplingRule"] for r in records if r["SamplingRule"].get("RuleName") == item.id]
    return _first(rules)


def _delete_sampling_rule(sw: Sweeper, item: Item, _found: dict) -> None:
    sw.client("xray", item.region).delete_sampling_rule(RuleName=item.id)


def _unknown(_sw: Sweeper, _item: Item) -> dict | None:
    return {}  # can't be checked: it counts as there


# ---------------------------------------------------------------- the kinds, in delete order

# Dependents first (aws-facts.md): what references the network goes before the network; a
# NAT gateway before its Elastic IP (and both before the internet gateway's detach); the
# ECS services before their cluster, task definitions and target groups; the distribution
# before its origin access control and certificate; the DB instance before its subnet group.
_ORDER = [
    ("sampling-rule", Kind(0, _sampling_rule, _delete_sampling_rule)),
    ("xray-group", Kind(0, _xray_group, _delete_xray_group)),
    ("alarm", Kind(0, _alarm, _delete_alarm)),
    ("dashboard", Kind(0, _dashboard, _delete_dashboard)),
    ("sns-topic", Kind(1, _topic, _delete_topic)),
    ("distribution", Kind(2, _distribution, _delete_distribution)),
    ("origin-access-control", Kind(3, _oac, _delete_oac)),
    ("certificate", Kind(3, _certificate, _delete_certificate)),
    ("hosted-zone", Kind(4, _zone, _delete_zone)),
    ("rest-api", Kind(4, _rest_api, _delete_rest_api)),
    ("scalable-target", Kind(5, _scalable_target, _deregister_target)),
    ("ecs-service", Kind(6, _service_with_size, _delete_service, cost=_service_cost)),
    ("ecs-task", Kind(7, _task, _stop_task)),
    ("task-definition", Kind(7, _task_definition, _deregister)),
    ("ecs-cluster", Kind(8, _cluster, _delete_cluster)),
    ("lambda-function", Kind(8, _function, _delete_function)),
    ("load-balancer", Kind(9, _load_balancer, _delete_load_balancer)),
    ("target-group", Kind(10, _target_group, _delete_target_group)),
    ("db-instance", Kind(9, _db_instance, _delete_db_instance, cost=_db_cost)),
    ("db-subnet-group", Kind(10, _db_subnet_group, _delete_db_subnet_group)),
    ("db-snapshot", Kind(10, _db_snapshot, None, cost=_snapshot_cost, keep=_keep_snapshot)),
    ("secret", Kind(10, _secret, _delete_secret)),
    ("nat-gateway", Kind(11, _nat, _delete_nat)),
    ("elastic-ip", Kind(12, _address, _release)),
    ("ecr-repository", Kind(12, _repository, _delete_repository)),
    ("bucket", Kind(12, _bucket, _delete_bucket)),
    ("table", Kind(12, _table, _delete_table)),
    ("iam-role", Kind(12, _role, _delete_role, keep=_keep_role)),
    ("log-group", Kind(12, _log_group, _delete_log_group)),
    ("network-interface", Kind(13, _eni, _delete_eni)),
    ("security-group", Kind(14, _group, _delete_group, prepare=_revoke_references)),
    (
        "route-table",
        Kind(15, _route_table, lambda sw, _i, rt: vpc._delete_route_table(sw.run_, rt)),
    ),
    ("internet-gateway", Kind(16, _igw, lambda sw, _i, igw: vpc._delete_igw(sw.run_, igw))),
    ("subnet", Kind(17, _subnet, _delete_subnet)),
    ("vpc", Kind(18, _vpc, _delete_vpc)),
]
KINDS: dict[str, Kind] = dict(_ORDER)
UNKNOWN = Kind(19, _unknown, None)


def _kind(item: Item) -> Kind:
    return KINDS.get(item.kind, UNKNOWN)
