"""What the config asks of ECS, as plain data: the task definition and service arguments,
and the rules that compare them with what AWS describes (no AWS calls here).

A task definition revision is registered only when the wanted definition differs from the
family's latest ACTIVE revision: `normalize_task_definition` drops what AWS adds, so a
re-run registers nothing.
"""

from __future__ import annotations

from typing import Any

from ..engine.model import is_pending
from ..engine.step import StepError

LAUNCH_TYPE = "FARGATE"
LOG_STREAM_PREFIX = "ecs"
LOG_BUFFER_SIZE = "25m"  # what AWS recommends for non-blocking awslogs

# The X-Ray daemon sidecar (seed 7.2), pinned: a re-run never picks up a new image by itself.
XRAY_CONTAINER = "xray-daemon"
XRAY_IMAGE = "public.ecr.aws/xray/aws-xray-daemon:3.3.13"
XRAY_PORT = 2000
XRAY_CPU = 32
XRAY_MEMORY = 128  # MiB; the app container gets the rest of the task's memory

# Both containers run with a read-only root filesystem; the app gets a writable /tmp (gunicorn's
# heartbeat files, anything else wanting a temporary file): a bind mount with no host path,
# which on Fargate is the task's ephemeral storage (Fargate has no tmpfs mounts). The image
# declares VOLUME /tmp, so the mount starts as the image's /tmp (1777), not root's 0755.
SCRATCH_VOLUME = "tmp"
SCRATCH_PATH = "/tmp"
# RDS serves TLS: the services never talk to the database in clear (libpq ignores sslmode on
# the unix socket the local target may use).
DB_SSLMODE = "require"

HEALTH_CHECK_TIMING = {"interval": 15, "timeout": 5, "retries": 3, "startPeriod": 30}
HEALTH_CHECK_GRACE_SECONDS = 60
DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    "minimumHealthyPercent": 100,
    "maximumPercent": 200,
}
ASSIGN_PUBLIC_IP = "DISABLED"
PROPAGATE_TAGS = "SERVICE"

# The fields msctl sets (and the lists AWS returns empty unless set); everything else AWS
# returns (revision, status, registeredAt/By, requiresAttributes, compatibilities, the ARN,
# fields added to the API later with a default such as enableFaultInjection) is not compared.
TASK_FIELDS = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
)
CONTAINER_FIELDS = (
    "name",
    "image",
    "cpu",
    "memory",
    "memoryReservation",
    "essential",
    "portMappings",
    "environment",
    "environmentFiles",
    "secrets",
    "logConfiguration",
    "healthCheck",
    "command",
    "entryPoint",
    "workingDirectory",
    "user",
    "dependsOn",
    "readonlyRootFilesystem",
    "linuxParameters",
    "ulimits",
    "mountPoints",
    "volumesFrom",
    "startTimeout",
    "stopTimeout",
    "dockerLabels",
)
# Values AWS (and moto) fill in when a container leaves them out.
CONTAINER_DEFAULTS = {"cpu": 0, "essential": True}
HEALTH_CHECK_DEFAULTS = {"interval": 30, "timeout": 5, "retries": 3}


def health_check_command(port: int) -> list[str]:
    """The image has Python and no curl. /health is liveness: 200 while the process serves,
    also before the database is there (readiness is /ready), so ECS keeps a task that waits
    for RDS instead of replacing it."""
    script = (
        "import sys, urllib.request; "
        f"r = urllib.request.urlopen('http://127.0.0.1:{port}/health', timeout=4); "
        "sys.exit(0 if r.status == 200 else 1)"
    )
    return ["CMD", "python", "-c", script]


def task_definition_spec(
    *,
    service: str,
    family: str,
    cpu: int,
    memory: int,
    port: int,
    image: str,
    execution_role_arn: str,
    task_role_arn: str,
    db_instance_id: str,
    db_name: str,
    secret_arn: str,
    log_group: str,
    region: str,
    origin_secret_sha256: str,
) -> dict:
    """RegisterTaskDefinition's arguments (without tags): the service's container and the
    X-Ray daemon sidecar. The app finds the database itself: it gets the DB instance's
    identifier, not its endpoint, and asks RDS (DescribeDBInstances, task role) until the
    instance is available, so the tasks start while RDS is still creating it. It reads its DB
    login from the RDS-managed secret itself, again whenever PostgreSQL refuses it: RDS rotates
    the secret, and ECS would inject `secrets` only when a task starts. It gets the SHA-256 of
    the lab's origin secret (alb_origin), to refuse requests that didn't come through API
    Gateway."""

    logs = {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": log_group,
            "awslogs-region": region,
            "awslogs-stream-prefix": LOG_STREAM_PREFIX,
            # A CloudWatch Logs hiccup must not stall the app: buffer instead of block.
            "mode": "non-blocking",
            "max-buffer-size": LOG_BUFFER_SIZE,
        },
    }
    app = {
        "name": service,
        "image": image,
        # moto's RunTask needs a container-level memory; on AWS it is the hard limit.
        "memory": memory - XRAY_MEMORY,
        "essential": True,
        "portMappings": [{"containerPort": port, "protocol": "tcp"}],
        "environment": [
            {"name": "DB_INSTANCE_ID", "value": db_instance_id},
            {"name": "DB_NAME", "value": db_name},
            {"name": "DB_SECRET_ARN", "value": secret_arn},
            {"name": "DB_SSLMODE", "value": DB_SSLMODE},
            {"name": "ORIGIN_SECRET_SHA256", "value": origin_secret_sha256},
            {"name": "AWS_REGION", "value": region},
            {"name": "AWS_XRAY_DAEMON_ADDRESS", "value": f"127.0.0.1:{XRAY_PORT}"},
        ],
        "logConfiguration": logs,
        "healthCheck": {"command": health_check_command(port), **HEALTH_CHECK_TIMING},
        "readonlyRootFilesystem": True,
        "mountPoints": [
            {"sourceVolume": SCRATCH_VOLUME, "containerPath": SCRATCH_PATH, "readOnly": False}
        ],
    }
    xray = {
        "name": XRAY_CONTAINER,
        "image": XRAY_IMAGE,
        "cpu": XRAY_CPU,
        "memory": XRAY_MEMORY,
        "essential": False,
        "portMappings": [{"containerPort": XRAY_PORT, "protocol": "udp"}],
        "logConfiguration": logs,
        "readonlyRootFilesystem": True,
    }
    return {
        "family": family,
        "requiresCompatibilities": [LAUNCH_TYPE],
        "networkMode": "awsvpc",
        "cpu": str(cpu),
        "memory": str(memory),
        "executionRoleArn": execution_role_arn,
        "taskRoleArn": task_role_arn,
        "containerDefinitions": [app, xray],
        "volumes": [{"name": SCRATCH_VOLUME}],
    }


def service_spec(
    *,
    service: str,
    task_definition: str,
    desired_count: int,
    port: int,
    subnet_ids: list[str],
    security_group_id: str,
    target_group_arn: str,
) -> dict:
    """CreateService's arguments (without cluster, name and tags)."""
    return {
        "taskDefinition": task_definition,
        "desiredCount": desired_count,
        "launchType": LAUNCH_TYPE,
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": list(subnet_ids),
                "securityGroups": [security_group_id],
                "assignPublicIp": ASSIGN_PUBLIC_IP,
            }
        },
        "loadBalancers": [
            {"targetGroupArn": target_group_arn, "containerName": service, "containerPort": port}
        ],
        "deploymentConfiguration": DEPLOYMENT_CONFIGURATION,
        "healthCheckGracePeriodSeconds": HEALTH_CHECK_GRACE_SECONDS,
        "propagateTags": PROPAGATE_TAGS,
        "enableExecuteCommand": False,
    }


# ---------------------------------------------------------------- comparing task definitions


def normalize_task_definition(td: dict) -> dict:
    """A task definition as the fields that define it, in a canonical form: what AWS (or
    moto) adds on registration (ARN, revision, status, registeredAt, requiresAttributes,
    compatibilities, ...) is dropped, and so are the defaults it fills in (empty lists,
    container `cpu: 0`, `essential: true`, `hostPort` equal to `containerPort`, health
    check timings). A described revision and the arguments that registered it normalize
    to the same value."""
    out = {k: _canon(td[k]) for k in TASK_FIELDS if k in td and k != "containerDefinitions"}
    out["containerDefinitions"] = sorted(
        (_normalize_container(c) for c in td.get("containerDefinitions") or []),
        key=lambda c: c.get("name", ""),
    )
    if "requiresCompatibilities" in out:
        out["requiresCompatibilities"] = sorted(out["requiresCompatibilities"])
    for key in ("cpu", "memory"):
        if out.get(key) is not None:
            out[key] = str(out[key])
    return _drop_empty(out)


def _normalize_container(container: dict) -> dict:
    c = {k: _canon(container[k]) for k in CONTAINER_FIELDS if k in container}
    for key, default in CONTAINER_DEFAULTS.items():
        if c.get(key) == default:
            del c[key]
    if "portMappings" in c:
        mappings = []
        for m in c["portMappings"]:
            m = {"protocol": "tcp", **m}
            if m.get("hostPort") == m.get("containerPort"):
                m.pop("hostPort", None)
            mappings.append(m)
        c["portMappings"] = sorted(
            mappings, key=lambda m: (m.get("containerPort", 0), m.get("protocol", ""))
        )
    for key in ("environment", "secrets"):
        if key in c:
            c[key] = sorted(c[key], key=lambda e: e.get("name", ""))
    if "healthCheck" in c:
        c["healthCheck"] = {**HEALTH_CHECK_DEFAULTS, **c["healthCheck"]}
    return _drop_empty(c)


def _canon(value: Any) -> Any:
    """Plain dicts, lists and scalars (Pending placeholders stay distinguishable)."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return value


def _drop_empty(value: Any) -> Any:
    if isinstance(value, dict):
        cleaned = {k: _drop_empty(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v not in (None, [], {})}
    if isinstance(value, list):
        return [_drop_empty(v) for v in value]
    return value


def task_definition_diff(current: dict, desired: dict) -> list[str]:
    """What differs between a described revision and the wanted definition, by field name
    (values are left out: environment values have no place in a change log)."""
    a, b = normalize_task_definition(current), normalize_task_definition(desired)
    diff = [
        f"{k} {a.get(k)} -> {b.get(k)}" if k in ("cpu", "memory") else k
        for k in sorted(set(a) | set(b))
        if k != "containerDefinitions" and a.get(k) != b.get(k)
    ]
    ours = {c.get("name"): c for c in a.get("containerDefinitions", [])}
    wanted = {c.get("name"): c for c in b.get("containerDefinitions", [])}
    for name in sorted(set(ours) | set(wanted), key=str):
        if name not in ours:
            diff.append(f"container {name} added")
        elif name not in wanted:
            diff.append(f"container {name} removed")
        else:
            keys = sorted(
                k
                for k in set(ours[name]) | set(wanted[name])
                if ours[name].get(k) != wanted[name].get(k)
            )
            if keys:
                diff.append(f"container {name} {', '.join(keys)}")
    return diff


# ---------------------------------------------------------------- comparing services


def service_changes(
    found: dict, desired: dict, bounds: tuple[int, int] | None
) -> tuple[dict, list[str], list[str]]:
    """UpdateService arguments that bring `found` to `desired`, their descriptions, and the
    differences that can't be changed in place.

    The desired count is left alone while auto scaling manages it: when a scalable target
    exists, any count within its current min..max is right."""
    changes: dict = {}
    details: list[str] = []
    refused: list[str] = []

    def change(key: str, detail: str) -> None:
        changes[key] = desired[key]
        details.append(detail)

    if found.get("launchType") != desired["launchType"]:
        refused.append(f"launch type {found.get('launchType')} -> {desired['launchType']}")
    if found.get("taskDefinition") != desired["taskDefinition"]:
        change(
            "taskDefinition",
            f"task definition {_revision(found.get('taskDefinition'))} -> "
            f"{_revision(desired['taskDefinition'])}",
        )
    count = found.get("desiredCount")
    if bounds is not None:
        low, high = bounds
        count_ok = count is not None and low <= count <= high
    else:
        count_ok = count == desired["desiredCount"]
    if not count_ok:
        change("desiredCount", f"desired count {count} -> {desired['desiredCount']}")
    if _network(found.get("networkConfiguration")) != _network(desired["networkConfiguration"]):
        change("networkConfiguration", "network configuration (subnets, security group)")
    if _load_balancers(found.get("loadBalancers")) != _load_balancers(desired["loadBalancers"]):
        change("loadBalancers", "load balancer target group")
    current = found.get("deploymentConfiguration") or {}
    if any(current.get(k) != v for k, v in desired["deploymentConfiguration"].items()):
        change("deploymentConfiguration", "deployment circuit breaker with rollback, 100-200%")
    if found.get("healthCheckGracePeriodSeconds") != desired["healthCheckGracePeriodSeconds"]:
        change(
            "healthCheckGracePeriodSeconds",
            f"health check grace period {desired['healthCheckGracePeriodSeconds']} s",
        )
    if found.get("propagateTags") != desired["propagateTags"]:
        change("propagateTags", f"propagate tags from {desired['propagateTags']}")
    if bool(found.get("enableExecuteCommand")) != desired["enableExecuteCommand"]:
        change("enableExecuteCommand", "execute command off")
    return changes, details, refused


def _revision(arn: str | None) -> str:
    return str(arn).rsplit("/", 1)[-1] if arn else "none"


def _network(config: dict | None) -> tuple:
    vpc = (config or {}).get("awsvpcConfiguration") or {}
    return (
        tuple(sorted(vpc.get("subnets") or [])),
        tuple(sorted(vpc.get("securityGroups") or [])),
        vpc.get("assignPublicIp", "DISABLED"),
    )


def _load_balancers(items: list | None) -> set:
    return {
        (lb.get("targetGroupArn"), lb.get("containerName"), lb.get("containerPort"))
        for lb in items or []
    }


def deployment_state(service: dict | None, wanted_task_definition: str | None = None):
    """(steady, what is seen) for a described service. Steady: exactly one deployment, the
    PRIMARY, running as many tasks as it wants, its rollout COMPLETED (moto may report no
    rollout state). A rollout the circuit breaker failed, or rolled back to another
    revision, is a StepError naming the service and its latest event."""
    if service is None:
        raise StepError("the service disappeared while waiting for it to become steady")
    name = service.get("serviceName", "?")
    deployments = service.get("deployments") or []
    events = service.get("events") or []
    latest = events[0].get("message", "") if events else "no events"
    for d in deployments:
        if d.get("rolloutState") == "FAILED":
            raise StepError(
                f"service {name}: deployment {d.get('id')} failed "
                f"({d.get('rolloutStateReason', 'no reason given')}); latest event: {latest}",
                hint="the tasks didn't become healthy: read the service's log group in "
                "CloudWatch, fix the cause, and run `msctl up` again",
            )
    current = service.get("taskDefinition")
    wanted = wanted_task_definition
    if wanted and not is_pending(wanted) and current != wanted:
        raise StepError(
            f"service {name} runs {_revision(current)} instead of "
            f"{_revision(wanted_task_definition)}: the deployment was rolled back; "
            f"latest event: {latest}",
            hint="read the service's log group in CloudWatch, fix the cause, and run "
            "`msctl up` again",
        )
    primary = [d for d in deployments if d.get("status") == "PRIMARY"]
    if not primary:
        return False, f"{len(deployments)} deployment(s), none primary"
    p = primary[0]
    rollout = p.get("rolloutState")
    seen = (
        f"{p.get('runningCount', 0)}/{p.get('desiredCount', 0)} tasks running"
        f"{f', rollout {rollout}' if rollout else ''}, {len(deployments)} deployment(s)"
    )
    steady = (
        len(deployments) == 1
        and p.get("runningCount") == p.get("desiredCount")
        and rollout in (None, "COMPLETED")
    )
    return steady, seen
