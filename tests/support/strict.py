"""A strict AWS layer for tests: what AWS enforces and moto doesn't, plus reproducible faults.

moto (5.2, in-process) deletes a subnet with a NAT gateway in it, releases an Elastic IP its
NAT gateway still uses, deletes an enabled CloudFront distribution, and never throttles.
Real teardowns fail on exactly those (docs: shared/docs/aws-facts.md). `StrictAws` sits
between boto3 and moto through botocore's event hooks on one boto3 Session:

- ``before-parameter-build``: keeps the call's API parameters in the request context;
- ``before-call``: the deletion *rules* (strict_rules.py: each a small method that looks at
  moto's current state through a separate, unhooked boto3 session and answers the exact AWS
  error), and the
  eventual-consistency faults (a new id not yet visible, a new IAM role not yet assumable, a
  dependency that is still draining). A response returned here short-circuits the call, as
  AWS's own answer would: botocore raises it as a ClientError without retrying (none of these
  codes is a throttling code);
- ``before-send`` (wrapping moto's own ``before-send`` stubber, so a throttled request never
  reaches moto): throttling answers in each service's protocol and HTTP shape, so botocore's
  standard retry mode really retries them, and latency;
- ``after-call``: bookkeeping (new ids, new roles) and state lag: a new NAT gateway stays
  ``pending``, a new DB instance ``creating``, a changed CloudFront distribution
  ``InProgress``, a deleted NAT gateway ``deleting`` and a deleted DB instance ``deleting``,
  for a few reads, the way AWS reports them (moto makes every change instantly).

With ``timings`` (opt-in: ``StrictAws(..., timings=Timings.aws(scale=0.5))``) resources also
report AWS's transitional states for as long as AWS takes, scaled, and the rules those states
bring (timed.py); every create, ready, delete and gone moment is kept for a timeline.

Every injected fault and every rule hit is counted (``faults``, ``rules``) for the report.
Decisions come from ``random.Random`` seeded with (seed, fault kind, operation, how many
times that operation was seen): a run with the same seed and the same call order injects the
same faults.

Install before any client is built: clients copy the session's handlers when they are made::

    strict = StrictAws(seed=7, faults=Faults.busy()).install(lab.ctx.session)
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from typing import Any
from xml.sax.saxutils import escape

import boto3
from botocore.awsrequest import AWSResponse
from botocore.retries.standard import ExponentialBackoff
from moto.core.models import botocore_stubber

from msctl.aws import retry

from .strict_rules import DeletionRules, Violation
from .timed import TimedStates, Timings

# The throttling answer of each service (by botocore service id): (code, HTTP status), as
# AWS sends it; other services answer in their protocol's usual shape.
THROTTLE = {
    "ec2": ("RequestLimitExceeded", 503),
    "lambda": ("TooManyRequestsException", 429),
    "api-gateway": ("TooManyRequestsException", 429),
    "xray": ("ThrottledException", 429),
    "s3": ("SlowDown", 503),
}
THROTTLE_BY_PROTOCOL = {
    "query": ("Throttling", 400),
    "rest-xml": ("Throttling", 400),
    "json": ("ThrottlingException", 400),
    "rest-json": ("TooManyRequestsException", 429),
}

# A new id that is not visible yet: the describe parameter that names it and EC2's code.
NOT_FOUND_CODES = {
    "vpc-": "InvalidVpcID.NotFound",
    "subnet-": "InvalidSubnetID.NotFound",
    "sg-": "InvalidGroup.NotFound",
    "rtb-": "InvalidRouteTableID.NotFound",
    "igw-": "InvalidInternetGatewayID.NotFound",
    "eipalloc-": "InvalidAllocationID.NotFound",
    "nat-": "NatGatewayNotFound",
}
ID_PARAMS = (
    "VpcIds",
    "SubnetIds",
    "GroupIds",
    "RouteTableIds",
    "InternetGatewayIds",
    "AllocationIds",
    "NatGatewayIds",
    "VpcId",
)
CREATED_ID_PATHS = {
    "CreateVpc": ("Vpc", "VpcId"),
    "CreateSubnet": ("Subnet", "SubnetId"),
    "CreateSecurityGroup": (None, "GroupId"),
    "CreateRouteTable": ("RouteTable", "RouteTableId"),
    "CreateInternetGateway": ("InternetGateway", "InternetGatewayId"),
    "AllocateAddress": (None, "AllocationId"),
    "CreateNatGateway": ("NatGateway", "NatGatewayId"),
}
# Deletes that fail with DependencyViolation for a while after their dependents went
# (network interfaces of deleted load balancers, tasks and databases still draining).
DRAINING = {
    "DeleteSubnet": "SubnetId",
    "DeleteSecurityGroup": "GroupId",
    "DetachInternetGateway": "InternetGatewayId",
    "DeleteVpc": "VpcId",
}
# Changes that name ids: right after a create, AWS may not know the new id yet for these either
# (EC2 eventual consistency applies to mutations too).
WRITES_NAMING_IDS = {
    "AuthorizeSecurityGroupIngress": ("GroupId",),
    "RevokeSecurityGroupIngress": ("GroupId",),
    "ModifySubnetAttribute": ("SubnetId",),
    "ModifyVpcAttribute": ("VpcId",),
    "AttachInternetGateway": ("InternetGatewayId", "VpcId"),
    "AssociateRouteTable": ("RouteTableId", "SubnetId"),
    "CreateRoute": ("RouteTableId", "GatewayId", "NatGatewayId"),
    "ReplaceRoute": ("RouteTableId", "GatewayId", "NatGatewayId"),
}
APIGW_RATE_LIMITED = {
    "apigateway.DeleteRestApi",
    "apigateway.CreateRestApi",
    "apigateway.CreateDeployment",
}
READS = ("Describe", "List", "Get", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet")
# Calls that open a new session each time (the same call twice is two uploads, not a repeat).
SESSIONS = {"ecr.InitiateLayerUpload"}
# What a call sends that says nothing about which resource it writes (or is big).
NOT_IDENTIFYING = {"Body", "ZipFile", "ContentMD5", "ClientToken", "CallerReference"}
ROLE_NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."
APIGW_ROLE_NOT_READY = "The role ARN does not have required permissions set to API Gateway"


@dataclass(frozen=True)
class Faults:
    """How often each fault fires (0: never) and how long it lasts (reads or attempts)."""

    throttle: float = 0.0  # per HTTP attempt
    max_throttles: int = 2  # in a row for one call (botocore allows 8 attempts here)
    not_found: float = 0.0  # per new EC2 id: its first describes answer *.NotFound
    not_found_write: float = 0.0  # per new EC2 id: its first writes that name it, likewise
    # A principal without s3:TagResource: CreateBucket with tags is AccessDenied as a whole.
    deny_bucket_tags: bool = False
    role_propagation: float = 0.0  # per new IAM role: Lambda/API Gateway can't assume it yet
    dependency_drain: float = 0.0  # per guarded delete: DependencyViolation for a while
    state_lag: float = 0.0  # per create/delete of a NAT, DB instance, distribution
    # API Gateway's fixed per-account rates (DeleteRestApi 1 per 30 s, CreateRestApi 1 per
    # 3 s, CreateDeployment 1 per 5 s): after one such call, the next answers TooManyRequests
    # this many times (botocore's own retries already spent).
    apigw_rate: int = 0
    delay: float = 0.0  # per HTTP attempt: added latency
    max_delay: float = 0.02  # seconds
    lasts: tuple[int, int] = (1, 3)  # reads or attempts a fault lasts (inclusive)
    # A lagging state also ends after this long, so a step that never looks again isn't
    # stuck forever (a rule it trips meanwhile is still counted).
    lag_seconds: float = 30.0

    @classmethod
    def busy(cls) -> Faults:
        """Rates at which every kind of fault fires several times in one lab lifecycle."""
        return cls(
            throttle=0.05,
            not_found=1.0,
            not_found_write=1.0,
            deny_bucket_tags=True,
            role_propagation=1.0,
            dependency_drain=0.6,
            state_lag=1.0,
            apigw_rate=3,
            delay=0.05,
        )


class Lag:
    """States AWS reports for a while after a change: `reads` more reads of the resource,
    or `seconds` at most (AWS finishes a deployment whether or not anyone looks)."""

    def __init__(self, lock: threading.RLock):
        self._lock = lock
        self._items: dict[str, list] = {}  # key -> [reads left, deadline, payload]

    def start(self, key: str, reads: int, seconds: float, payload: Any = None) -> None:
        with self._lock:
            self._items[key] = [reads, time.monotonic() + seconds, payload]

    def active(self, key: str) -> bool:
        with self._lock:
            item = self._items.get(key)
            return bool(item) and item[0] > 0 and time.monotonic() < item[1]

    def take(self, key: str) -> bool:
        """One read of a lagging resource: whether it still shows the old state."""
        with self._lock:
            if not self.active(key):
                return False
            self._items[key][0] -= 1
            return True

    def payload(self, key: str) -> Any:
        with self._lock:
            return self._items[key][2] if self.active(key) else None

    def payloads(self) -> list:
        with self._lock:
            return [item[2] for key, item in self._items.items() if self.active(key)]


class StrictAws(DeletionRules):
    def __init__(
        self,
        *,
        seed: int = 0,
        faults: Faults | None = None,
        region: str = "us-east-1",
        credentials: dict[str, str] | None = None,
        timings: Timings | None = None,
    ):
        self.seed = seed
        self.config = faults or Faults()
        self.faults: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.events: list[tuple[str, str, str]] = []  # (kind, service.Operation, detail)
        creds = credentials or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
        # Unhooked: the rules look at moto's state without going through this layer.
        self._inspect_session = boto3.Session(region_name=region, **creds)
        self._inspectors: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._seen: Counter[str] = Counter()
        self._invisible: dict[str, int] = {}  # new EC2 id -> describes still answering NotFound
        self._unwritable: dict[str, int] = {}  # new EC2 id -> writes still answering NotFound
        # Every successful write, by service.Operation and what identifies its target: the
        # same key twice is the same write made twice.
        self.writes: Counter[str] = Counter()
        self._unassumable: dict[str, int] = {}  # new role ARN -> attempts still refused
        self._draining: dict[str, int] = {}  # "Op resource" -> attempts still refused
        self._rate_limited: dict[str, int] = {}  # "service.Op" -> attempts still refused
        self._nat_pending = Lag(self._lock)
        self._nat_deleting = Lag(self._lock)
        self._db_creating = Lag(self._lock)
        self._db_deleting = Lag(self._lock)  # payload: the instance as it was
        self._cf_in_progress = Lag(self._lock)
        self._cf_cert_before: dict[str, str] = {}  # distribution -> certificate an update removed
        self._installed: list[tuple[Any, str, Callable]] = []
        self._protocols: dict[str, str] = {}  # service id -> wire protocol
        self.timed = TimedStates(timings, self.inspector) if timings else None
        self.rule_table = self.deletion_rules()

    # ------------------------------------------------------------------ install

    def install(self, session: boto3.Session) -> StrictAws:
        """Hook into `session` (a boto3 Session none of whose clients exist yet)."""
        events = session.events
        hooks = [
            ("before-parameter-build", self._keep_params),
            ("before-call", self._before_call),
            ("after-call", self._after_call),
        ]
        for name, handler in hooks:
            events.register(name, handler)
            self._installed.append((events, name, handler))
        # moto answers in `before-send`; a throttled attempt must never reach it, so moto's
        # stubber runs inside this layer's handler instead of beside it.
        events.unregister("before-send", botocore_stubber)
        events.register("before-send", self._before_send)
        self._installed.append((events, "before-send", self._before_send))
        return self

    def uninstall(self) -> None:
        for events, name, handler in self._installed:
            events.unregister(name, handler)
            if name == "before-send":
                events.register("before-send", botocore_stubber)
        self._installed.clear()

    def report(self) -> dict:
        states = dict(self.timed.observed) if self.timed else {}
        return {"faults": dict(self.faults), "rules": dict(self.rules), "states": states}

    # ------------------------------------------------------------------ helpers

    def inspector(self, service: str):
        with self._lock:
            client = self._inspectors.get(service)
            if client is None:
                client = self._inspectors[service] = self._inspect_session.client(service)
            return client

    def _chance(self, kind: str, key: str, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            self._seen[f"{kind}/{key}"] += 1
            n = self._seen[f"{kind}/{key}"]
        return random.Random(f"{self.seed}/{kind}/{key}/{n}").random() < rate

    def _lasting(self, kind: str, key: str) -> int:
        """How many reads or attempts a fault lasts. `key` names the operation, never an id:
        ids differ from run to run, the decisions must not."""
        lo, hi = self.config.lasts
        with self._lock:
            self._seen[f"{kind}/{key}/lasts"] += 1
            n = self._seen[f"{kind}/{key}/lasts"]
        return random.Random(f"{self.seed}/{kind}/{key}/lasts/{n}").randint(lo, hi)

    def _count(self, counter: Counter, kind: str, op: str, detail: str) -> None:
        with self._lock:
            counter[kind] += 1
            self.events.append((kind, op, detail))

    # ------------------------------------------------------------------ hooks

    def _keep_params(self, params, context, **_kwargs) -> None:
        context["strict_params"] = copy.copy(params)

    def _before_call(self, model, context, **_kwargs):
        service = model.service_model.service_name
        op = model.name
        params = context.get("strict_params") or {}
        where = f"{service}.{op}"
        self._protocols[model.service_model.service_id.hyphenize()] = (
            model.service_model.resolved_protocol
        )

        lagging = self._lagging_answer(service, op, params)
        if lagging is not None:
            return lagging

        if service == "cloudfront" and op == "UpdateDistribution":
            self._note_certificate(params.get("Id", ""))

        # A real dependency first (a rule hit), else a fault that clears on its own.
        rule = self.rule_table.get((service, op))
        if rule is not None:
            violation = rule(params)
            if violation is not None:
                self._count(self.rules, f"{where} {violation.code}", where, violation.message)
                return self._error(model, violation)
        early = self.timed.before(service, op, params) if self.timed else None
        if isinstance(early, tuple):
            violation = Violation(*early)
            self._count(self.rules, f"{where} {violation.code}", where, violation.message)
            return self._error(model, violation)
        if early is not None:
            return _ok(early)

        fault = self._eventual_fault(service, op, params)
        if fault is not None:
            kind, violation = fault
            self._count(self.faults, kind, where, violation.code)
            return self._error(model, violation)
        return None

    def _before_send(self, request, event_name: str = "", **kwargs):
        _, service_id, op = (event_name.split(".", 2) + ["", ""])[:3]
        key = f"{service_id}.{op}"
        if self._chance("delay", key, self.config.delay):
            self._count(self.faults, "delay", key, "latency")
            time.sleep(random.Random(f"{self.seed}/{key}").uniform(0, self.config.max_delay))
        attempt = _attempt(request)
        if (
            not op.startswith("Head")
            and attempt <= self.config.max_throttles
            and self._chance("throttle", key, self.config.throttle)
        ):
            self._count(self.faults, "throttle", key, f"attempt {attempt}")
            protocol = self._protocols.get(service_id, "json")
            return _throttle_response(request, service_id, protocol)
        return botocore_stubber(event_name=event_name, request=request, **kwargs)

    def _after_call(self, model, http_response, parsed, context, **_kwargs) -> None:
        if http_response is None or http_response.status_code >= 300:
            return
        service = model.service_model.service_name
        op = model.name
        params = context.get("strict_params") or {}
        if not op.startswith(READS):
            target = {k: v for k, v in params.items() if k not in NOT_IDENTIFYING}
            with self._lock:
                self.writes[
                    f"{service}.{op} {json.dumps(target, sort_keys=True, default=str)}"
                ] += 1
        cfg = self.config
        if service == "ec2" and op in CREATED_ID_PATHS:
            outer, key = CREATED_ID_PATHS[op]
            new_id = (parsed.get(outer) or {}).get(key) if outer else parsed.get(key)
            if new_id and self._chance("not_found", op, cfg.not_found):
                with self._lock:
                    self._invisible[new_id] = self._lasting("not_found", op)
            if new_id and self._chance("not_found_write", op, cfg.not_found_write):
                with self._lock:
                    self._unwritable[new_id] = self._lasting("not_found_write", op)
        if f"{service}.{op}" in APIGW_RATE_LIMITED:
            with self._lock:
                self._rate_limited[f"{service}.{op}"] = cfg.apigw_rate
        if service == "iam" and op == "CreateRole":
            arn = parsed.get("Role", {}).get("Arn")
            if arn and self._chance("role_propagation", op, cfg.role_propagation):
                with self._lock:
                    self._unassumable[arn] = self._lasting("role_propagation", op)
        self._start_lag(service, op, params, parsed)
        self._show_lag(service, op, params, parsed)
        if self.timed is not None:
            self.timed.after(service, op, params, parsed)

    # ------------------------------------------------------------------ eventual consistency

    def duplicate_writes(self) -> dict[str, int]:
        """Writes made more than once with the same target and the same content."""
        with self._lock:
            return {
                key: n
                for key, n in self.writes.items()
                if n > 1 and key.split(" ", 1)[0] not in SESSIONS
            }

    def _eventual_fault(self, service: str, op: str, params: dict):
        cfg = self.config
        if service == "ec2" and op in WRITES_NAMING_IDS:
            for name in WRITES_NAMING_IDS[op]:
                ident = params.get(name) or ""
                if self._take(self._unwritable, ident):
                    prefix = next(p for p in NOT_FOUND_CODES if ident.startswith(p))
                    return "not_found_write", Violation(
                        NOT_FOUND_CODES[prefix], f"The ID '{ident}' does not exist"
                    )
        if (
            service == "s3"
            and op == "CreateBucket"
            and cfg.deny_bucket_tags
            and (params.get("CreateBucketConfiguration") or {}).get("Tags")
        ):
            return "bucket_tags_denied", Violation(
                "AccessDenied",
                "User is not authorized to perform: s3:TagResource (tags at bucket creation)",
                403,
            )
        if service == "ec2" and op.startswith("Describe"):
            for name in ID_PARAMS:
                value = params.get(name)
                for ident in [value] if isinstance(value, str) else value or []:
                    with self._lock:
                        left = self._invisible.get(ident, 0)
                        if left > 0:
                            self._invisible[ident] = left - 1
                            prefix = next(p for p in NOT_FOUND_CODES if ident.startswith(p))
                            return "not_found", Violation(
                                NOT_FOUND_CODES[prefix],
                                f"The ID '{ident}' does not exist",
                            )
        if (
            service == "lambda"
            and op == "CreateFunction"
            and self._take(self._unassumable, params.get("Role", ""))
        ):
            return "role_propagation", Violation(
                "InvalidParameterValueException", ROLE_NOT_ASSUMABLE
            )
        if service == "apigateway" and op == "UpdateAccount":
            for patch in params.get("patchOperations") or []:
                if self._take(self._unassumable, patch.get("value") or ""):
                    return "role_propagation", Violation(
                        "BadRequestException",
                        f"{APIGW_ROLE_NOT_READY}: {patch.get('value')}",
                    )
        if self._take(self._rate_limited, f"{service}.{op}"):
            return "apigw_rate", Violation("TooManyRequestsException", "Too Many Requests", 429)
        if service == "ec2" and op in DRAINING:
            resource = f"{op} {params.get(DRAINING[op], '')}"
            with self._lock:
                if resource not in self._draining:
                    start = self._chance("dependency_drain", op, cfg.dependency_drain)
                    self._draining[resource] = self._lasting("dependency_drain", op) if start else 0
            if self._take(self._draining, resource):
                return "dependency_drain", Violation(
                    "DependencyViolation",
                    f"{params.get(DRAINING[op])} has a dependent object (still draining)",
                )
        return None

    def _take(self, budget: dict[str, int], key: str) -> bool:
        with self._lock:
            left = budget.get(key, 0)
            if left > 0:
                budget[key] = left - 1
                return True
            return False

    # ------------------------------------------------------------------ state lag

    def _start_lag(self, service: str, op: str, params: dict, parsed: dict) -> None:
        rate = self.config.state_lag
        lag: Lag | None = None
        key = ""
        payload = None
        if service == "ec2" and op == "CreateNatGateway":
            lag, key = self._nat_pending, parsed.get("NatGateway", {}).get("NatGatewayId", "")
        elif service == "ec2" and op == "DeleteNatGateway":
            lag, key = self._nat_deleting, params.get("NatGatewayId", "")
        elif service == "rds" and op == "CreateDBInstance":
            lag, key = self._db_creating, params.get("DBInstanceIdentifier", "")
        elif service == "rds" and op == "DeleteDBInstance":
            payload = parsed.get("DBInstance") or {}
            lag, key = self._db_deleting, payload.get("DBInstanceIdentifier", "")
        elif service == "cloudfront" and op in (
            "CreateDistribution",
            "CreateDistributionWithTags",
            "UpdateDistribution",
        ):
            lag = self._cf_in_progress
            key = params.get("Id") or parsed.get("Distribution", {}).get("Id", "")
        if lag is not None and key and self._chance("state_lag", op, rate):
            reads = self._lasting("state_lag", op)
            lag.start(key, reads, self.config.lag_seconds, payload)

    def _show_lag(self, service: str, op: str, params: dict, parsed: dict) -> None:
        where = f"{service}.{op}"
        if service == "ec2" and op == "DescribeNatGateways":
            by_id = bool(params.get("NatGatewayIds"))
            for nat in parsed.get("NatGateways", []):
                nat_id = nat.get("NatGatewayId")
                if by_id and self._nat_pending.take(nat_id) and nat["State"] == "available":
                    nat["State"] = "pending"
                    self._count(self.faults, "state_lag", where, f"{nat_id} pending")
                elif by_id and self._nat_deleting.take(nat_id) and nat["State"] == "deleted":
                    nat["State"] = "deleting"
                    self._count(self.faults, "state_lag", where, f"{nat_id} deleting")
        elif service == "rds" and op == "DescribeDBInstances":
            ident = params.get("DBInstanceIdentifier")
            for instance in parsed.get("DBInstances", []):
                if (
                    ident
                    and instance.get("DBInstanceIdentifier") == ident
                    and instance.get("DBInstanceStatus") == "available"
                    and self._db_creating.take(ident)
                ):
                    instance["DBInstanceStatus"] = "creating"
                    instance.pop("Endpoint", None)
                    self._count(self.faults, "state_lag", where, f"{ident} creating")
        elif service == "cloudfront" and op == "GetDistribution":
            dist = parsed.get("Distribution") or {}
            if self._cf_in_progress.take(dist.get("Id", "")):
                dist["Status"] = "InProgress"
                self._count(self.faults, "state_lag", where, f"{dist.get('Id')} InProgress")

    def _lagging_answer(self, service: str, op: str, params: dict):
        """A DB instance AWS still reports `deleting` (moto forgets it at once)."""
        if service != "rds" or op != "DescribeDBInstances":
            return None
        ident = params.get("DBInstanceIdentifier") or ""
        instance = self._db_deleting.payload(ident)
        if instance is None or not self._db_deleting.take(ident):
            return None
        shown = {**instance, "DBInstanceStatus": "deleting"}
        self._count(self.faults, "state_lag", "rds.DescribeDBInstances", f"{ident} deleting")
        return _ok({"DBInstances": [shown]})

    # ------------------------------------------------------------------ responses

    def _error(self, model, violation: Violation):
        """What botocore would have parsed from AWS's error answer."""
        parsed = {
            "Error": {"Code": violation.code, "Message": violation.message},
            "ResponseMetadata": {
                "RequestId": str(uuid.uuid4()),
                "HTTPStatusCode": violation.status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        }
        return _Http(violation.status), parsed


class _Http:
    """The HTTP side of a short-circuited answer (after-call handlers read its status)."""

    def __init__(self, status: int):
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.content = b""


def _ok(body: dict):
    body = {
        **body,
        "ResponseMetadata": {
            "RequestId": str(uuid.uuid4()),
            "HTTPStatusCode": 200,
            "HTTPHeaders": {},
            "RetryAttempts": 0,
        },
    }
    return _Http(200), body


def _attempt(request) -> int:
    header = request.headers.get("amz-sdk-request") or b""
    if isinstance(header, bytes):
        header = header.decode()
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "attempt" and value.isdigit():
            return int(value)
    return 1


class _Raw(BytesIO):
    def stream(self, **_kwargs):
        data = self.read()
        while data:
            yield data
            data = self.read()


def _throttle_response(request, service_id: str, protocol: str) -> AWSResponse:
    """A throttling answer in the service's own wire format and HTTP status."""
    code, status = THROTTLE.get(service_id) or THROTTLE_BY_PROTOCOL.get(
        protocol, ("ThrottlingException", 400)
    )
    message = "Rate exceeded"
    request_id = str(uuid.uuid4())
    headers = {"x-amzn-RequestId": request_id}
    if protocol == "ec2":
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>"
        )
        headers["Content-Type"] = "text/xml;charset=UTF-8"
    elif protocol == "query" or (protocol == "rest-xml" and service_id != "s3"):
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{code}</Code><Message>{escape(message)}</Message></Error>"
            f"<RequestId>{request_id}</RequestId></ErrorResponse>"
        )
        headers["Content-Type"] = "text/xml"
    elif protocol == "rest-xml":  # s3
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{code}</Code><Message>{escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        headers["Content-Type"] = "application/xml"
    elif protocol == "json":
        body = json.dumps({"__type": code, "message": message})
        headers["Content-Type"] = "application/x-amz-json-1.1"
    else:  # rest-json
        body = json.dumps({"message": message})
        headers["Content-Type"] = "application/json"
        headers["x-amzn-ErrorType"] = code
    return AWSResponse(request.url, status, headers, _Raw(body.encode()))


def scaled_sleeps(monkeypatch, scale: float) -> None:
    """msctl's retry sleeps and botocore's backoff, times `scale`: the layer's faults stay
    as many, the waiting for them to clear shrinks."""
    monkeypatch.setattr(retry, "sleep", lambda seconds: time.sleep(seconds * scale))
    backoff = ExponentialBackoff.delay_amount
    monkeypatch.setattr(
        ExponentialBackoff, "delay_amount", lambda self, context: backoff(self, context) * scale
    )
