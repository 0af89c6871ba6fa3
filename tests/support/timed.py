"""Timed asynchronous states for the strict layer (strict.py): what AWS reports while a
resource is being created, changed or deleted, for as long as AWS takes (scaled), and the
rules those states bring.

moto makes every change at once. AWS answers a create call at once too, with the ids, ARNs
and names it carries, but the resource then reports a transitional state for minutes:

| kind | while it changes (AWS minutes) | then |
|---|---|---|
| NAT gateway | `pending` (2); deleted: `deleting` (1) | `available`; `deleted` |
| DB instance | `creating`, no Endpoint (7); deleted: `deleting` (2.5) | `available`; not found |
| load balancer | `provisioning`, its DNSName already there (3) | `active` |
| deleted load balancer | not found, its network interfaces still in the subnets (1) | released |
| distribution | `InProgress` after a create, an update, a disable (3.5) | `Deployed` |
| ECS service | runningCount 0, PRIMARY rollout IN_PROGRESS (2.5); deleted: `DRAINING` (1) | COMPLETED, runningCount = desiredCount; `INACTIVE` |
| Lambda function | `Pending`; after an update LastUpdateStatus `InProgress` (0.1) | `Active`, `Successful` |
| Route 53 change | `PENDING` (0.5) | `INSYNC` |
| ACM certificate | `PENDING_VALIDATION` until 2 after its validation records are in sync | `ISSUED` |

Durations are shared/docs/aws-facts.md's (NAT 1.5-2 min, RDS 5-8.5 and 2-3, ALB 2-3,
CloudFront 3-3.5, Fargate 1-3.5, Route 53 under 60 s). Chosen where it has none: a Lambda
function outside a VPC is Pending for seconds; ACM validates a few minutes after it can
resolve its CNAME (it retries for 72 hours); a deleted service drains in about a minute (the
lab's 10 s deregistration delay, ECS's 30 s stop timeout); a deleted load balancer's
interfaces go within a minute or two. A service's tasks start once its subnets' default route
leads out: through a NAT gateway, once that is available.

The rules that follow, as AWS answers them: an RDS modify, reboot or delete while the
instance is creating, a create of a name still deleting; a Lambda update, publish or invoke
while the function is Pending or an update is in progress; a service created under the name
of one still draining; a distribution created or updated with a certificate not yet issued.
strict.py's own rules also see what is still going (a deleting NAT gateway or DB instance, a
draining service, a deleted load balancer's interfaces, a distribution that is deploying).

Every create, update, delete and the moments they finish are kept (`lives`, `timeline()`)
for a test or a benchmark to draw the timeline; `observed` counts the states served. What
each service's answers look like meanwhile is in timed_answers.py.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .timed_answers import Answers, dns, function_name, read, step_of

# kind: (AWS minutes to create or deploy, AWS minutes to delete)
AWS_MINUTES: dict[str, tuple[float, float]] = {
    "nat-gateway": (2.0, 1.0),
    "db-instance": (7.0, 2.5),
    "load-balancer": (3.0, 1.0),
    "distribution": (3.5, 0.0),
    "ecs-service": (2.5, 1.0),
    "lambda-function": (0.1, 0.0),
    "route53-change": (0.5, 0.0),
    "certificate": (2.0, 0.0),
}
Error = tuple[str, str, int]  # (code, message, HTTP status): strict.py makes it a Violation
BUSY = "The operation cannot be performed at this time."
NOT_AVAILABLE = ("InvalidDBInstanceState", "Database instance is not in available state.", 400)
STILL_DELETING = ("DBInstanceAlreadyExists", "DB instance already exists", 400)
PENDING_FUNCTION = (
    "ResourceConflictException",
    f"{BUSY} The function is currently in the following state: Pending",
    409,
)
DRAINING = ("InvalidParameterException", "Unable to Start a service that is still Draining.", 400)
INVALID_CERT = (
    "InvalidViewerCertificate",
    "The specified SSL certificate doesn't exist, isn't in us-east-1 region, isn't valid, "
    "or doesn't include a valid certificate chain.",
    400,
)


@dataclass(frozen=True)
class Timings:
    """How long each kind takes, in AWS minutes, and how many real seconds a minute is."""

    scale: float = 0.5
    minutes: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(AWS_MINUTES))

    @classmethod
    def aws(cls, scale: float = 0.5, **minutes: tuple[float, float]) -> Timings:
        """AWS's durations (`db_instance=(5, 2)` changes one), `scale` seconds a minute."""
        return cls(scale, {**AWS_MINUTES, **{k.replace("_", "-"): v for k, v in minutes.items()}})

    def create(self, kind: str) -> float:
        return self.minutes.get(kind, (0.0, 0.0))[0] * self.scale

    def delete(self, kind: str) -> float:
        return self.minutes.get(kind, (0.0, 0.0))[1] * self.scale


@dataclass
class Life:
    """One resource's moments on the layer's clock. `ready` stays None while what it waits
    for (a NAT gateway, validation records) isn't known yet; an update's end likewise."""

    kind: str
    id: str
    step: str | None = None
    created: float | None = None
    ready: float | None = None
    deleted: float | None = None
    gone: float | None = None
    updates: list[list] = field(default_factory=list)  # [call, done or None]
    shown: dict | None = None  # as AWS still shows it while it goes
    meta: dict = field(default_factory=dict)


class TimedStates(Answers):
    def __init__(self, timings: Timings, inspector: Callable[[str], Any], clock=time.monotonic):
        self.timings = timings
        self.inspector = inspector  # service -> an unhooked client on moto's state
        self.clock = clock  # a test may drive it by hand
        self.t0 = clock()
        self.lives: dict[tuple[str, str], Life] = {}
        self.observed: Counter[str] = Counter()  # "kind state" -> reads that showed it
        self._lock = threading.RLock()
        self._cnames: dict[str, str] = {}  # CNAME record name -> the change that made it
        self._before: dict[str, dict] = {}  # "kind id" -> as it was before a delete/update

    # ------------------------------------------------------------------ lives

    def life(self, kind: str, ident: str) -> Life | None:
        with self._lock:
            return self.lives.get((kind, ident))

    def born(self, kind: str, ident: str, params: dict, ready: bool = True, **meta) -> None:
        now = self.clock()
        life = Life(kind, ident, step_of(params), created=now, meta=meta)
        life.ready = now + self.timings.create(kind) if ready else None
        with self._lock:
            self.lives[(kind, ident)] = life

    def updated(self, kind: str, ident: str, settle_later: bool = False) -> None:
        life = self.life(kind, ident)
        if life is not None:
            now = self.clock()
            life.updates.append([now, None if settle_later else now + self.timings.create(kind)])

    def died(self, kind: str, ident: str, shown: dict | None = None) -> None:
        now = self.clock()
        with self._lock:
            life = self.lives.setdefault((kind, ident), Life(kind, ident))
            life.deleted, life.gone, life.shown = now, now + self.timings.delete(kind), shown

    def phase(self, kind: str, ident: str) -> str | None:
        """'creating', 'updating', 'deleting', 'gone', or None (as moto has it: ready, or
        not a resource this layer saw made)."""
        life = self.life(kind, ident)
        if life is None:
            return None
        now = self.clock()
        if life.deleted is not None:
            return "deleting" if now < life.gone else "gone"
        self._settle(life)
        if life.ready is None or now < life.ready:
            return "creating"
        if life.updates and (life.updates[-1][1] is None or now < life.updates[-1][1]):
            return "updating"
        return None

    def changing(self, kind: str, ident: str) -> bool:
        return self.phase(kind, ident) in ("creating", "updating", "deleting")

    def going(self, kind: str) -> list[dict]:
        """What AWS still shows of deleted resources of `kind` that aren't gone yet."""
        with self._lock:
            lives = [x for x in self.lives.values() if x.kind == kind and x.shown is not None]
        return [x.shown for x in lives if self.phase(kind, x.id) == "deleting"]

    def saw(self, kind: str, state: str) -> None:
        with self._lock:
            self.observed[f"{kind} {state}"] += 1

    def timeline(self, since: float | None = None) -> list[dict]:
        """Every life, its moments in seconds since `since` (default: the layer's start)."""
        base = self.t0 if since is None else since
        with self._lock:
            lives = list(self.lives.values())
        for life in lives:
            self._settle(life)

        def at(moment):
            return None if moment is None else round(moment - base, 3)

        moments = ("created", "ready", "deleted", "gone")
        return [
            {"kind": x.kind, "id": x.id, "step": x.step}
            | {m: at(getattr(x, m)) for m in moments}
            | {"updates": [(at(call), at(done)) for call, done in x.updates]}
            for x in sorted(lives, key=lambda x: x.created or x.deleted or 0)
        ]

    # ------------------------------------------------------------------ dependencies

    def _settle(self, life: Life) -> None:
        """A ready moment that depends on something else, once that is known."""
        if life.kind == "ecs-service" and life.deleted is None:
            pending = [u for u in life.updates if u[1] is None]
            if life.ready is None or pending:
                start = self._tasks_start(life.meta.get("subnets") or [])
                if start is not None:
                    span = self.timings.create("ecs-service")
                    life.meta["start"] = start
                    if life.ready is None:
                        life.ready = max(life.created, start) + span
                    for update in pending:
                        update[1] = max(update[0], start) + span
        elif life.kind == "certificate" and life.ready is None and life.deleted is None:
            synced = self._validated(life.id)
            if synced is not None:
                life.ready = max(life.created, synced) + self.timings.create("certificate")

    def _tasks_start(self, subnets: list[str]) -> float | None:
        """When tasks in these subnets can pull their images: once their default route's
        NAT gateway is available (None: no default route yet, or its NAT gateway goes)."""
        ec2 = self.inspector("ec2")
        start = 0.0
        for subnet in subnets:
            found = read(lambda s=subnet: ec2.describe_subnets(SubnetIds=[s]))
            if not found:
                return None
            tables = ec2.describe_route_tables(
                Filters=[{"Name": "vpc-id", "Values": [found["Subnets"][0]["VpcId"]]}]
            )["RouteTables"]
            own = [t for t in tables if _associated(t, subnet)]
            main = [t for t in tables if any(a.get("Main") for a in t.get("Associations", []))]
            routes = [
                r
                for r in (own or main or [{}])[0].get("Routes", [])
                if r.get("DestinationCidrBlock") == "0.0.0.0/0" and r.get("State") != "blackhole"
            ]
            if not routes:
                return None
            nat = self.life("nat-gateway", routes[0].get("NatGatewayId") or "")
            if nat is not None:
                if nat.deleted is not None:
                    return None
                start = max(start, nat.ready)
        return start

    def _validated(self, arn: str) -> float | None:
        """When all of a certificate's validation records were in sync, if they are known."""
        acm = self.inspector("acm")
        cert = (read(lambda: acm.describe_certificate(CertificateArn=arn)) or {}).get("Certificate")
        options = (cert or {}).get("DomainValidationOptions") or []
        names = [dns(o["ResourceRecord"]["Name"]) for o in options if o.get("ResourceRecord")]
        with self._lock:
            changes = [self.lives.get(("route53-change", self._cnames.get(n, ""))) for n in names]
        if not names or any(c is None for c in changes):
            return None
        return max(c.ready for c in changes)

    # ------------------------------------------------------------------ before the call

    def before(self, service: str, op: str, params: dict) -> dict | Error | None:
        """An answer AWS would give that moto can't (a DB instance moto already forgot), an
        error a transitional state causes, or None: the call goes on to moto."""
        if service == "rds":
            ident = params.get("DBInstanceIdentifier") or ""
            phase = self.phase("db-instance", ident)
            if op == "DescribeDBInstances" and phase == "deleting":
                self.saw("db-instance", "deleting")
                return {"DBInstances": [self.life("db-instance", ident).shown]}
            if op == "CreateDBInstance" and phase == "deleting":
                return STILL_DELETING
            if op == "DeleteDBInstance" and phase == "deleting":
                return (
                    "InvalidDBInstanceState",
                    f"Instance {ident} is already being deleted.",
                    400,
                )
            changes = ("DeleteDBInstance", "ModifyDBInstance", "RebootDBInstance")
            return NOT_AVAILABLE if op in changes and phase in ("creating", "deleting") else None
        if service == "lambda":
            name = params.get("FunctionName") or ""
            phase = self.phase("lambda-function", function_name(name))
            updates = ("UpdateFunctionCode", "UpdateFunctionConfiguration", "PublishVersion")
            if phase == "creating" and op in (*updates, "Invoke"):
                return PENDING_FUNCTION
            if phase == "updating" and op in updates:
                message = f"{BUSY} An update is in progress for resource: {name}"
                return ("ResourceConflictException", message, 409)
        elif service == "ecs":
            return self._before_ecs(op, params)
        elif service == "elbv2" and op == "DeleteLoadBalancer":
            arn = params.get("LoadBalancerArn", "")
            elb = self.inspector("elbv2")
            found = read(lambda: elb.describe_load_balancers(LoadBalancerArns=[arn]))
            for lb in (found or {}).get("LoadBalancers", []):
                with self._lock:
                    self._before[f"load-balancer {arn}"] = lb
        elif service == "cloudfront" and op.startswith(
            ("CreateDistribution", "UpdateDistribution")
        ):
            config = params.get("DistributionConfig") or (
                params.get("DistributionConfigWithTags") or {}
            ).get("DistributionConfig")
            arn = ((config or {}).get("ViewerCertificate") or {}).get("ACMCertificateArn")
            if arn and self.phase("certificate", arn) in ("creating", "deleting", "gone"):
                return INVALID_CERT
        return None

    def _before_ecs(self, op: str, params: dict):
        cluster = (params.get("cluster") or "default").rsplit("/", 1)[-1]
        if op == "CreateService":
            tail = f"/{cluster}/{params.get('serviceName')}"
            with self._lock:
                same = [x.id for x in self.lives.values() if x.id.endswith(tail)]
            if any(self.phase("ecs-service", arn) == "deleting" for arn in same):
                return DRAINING
        elif op in ("UpdateService", "DeleteService"):
            ecs = self.inspector("ecs")
            found = read(
                lambda: ecs.describe_services(cluster=cluster, services=[params["service"]])
            )
            for svc in (found or {}).get("services", [])[:1]:
                with self._lock:
                    self._before[f"ecs-service {svc['serviceArn']}"] = svc
        return None

    def was(self, kind: str, ident: str) -> dict | None:
        """The resource as it was before the delete or update that is being answered."""
        with self._lock:
            return self._before.pop(f"{kind} {ident}", None)


def _associated(table: dict, subnet: str) -> bool:
    return any(a.get("SubnetId") == subnet for a in table.get("Associations", []))
