"""ecs: the Fargate cluster, the services' task definitions and services, their log groups and
CPU auto scaling (seed 4.1, 4.4, 4.6, 7.1, 7.2, 8.2).

Each task runs the service's container and an X-Ray daemon sidecar. The database password is
never in a task definition: the container gets DB_USER and DB_PASSWORD from the secret RDS
manages (`secrets` with `valueFrom`), which ECS reads with the task execution role.

A task definition revision is registered only when the wanted definition differs from the
family's latest ACTIVE revision (`normalize_task_definition` drops what AWS adds), so a
re-run registers nothing. `apply` waits (short polls) for the database's endpoint before
the task definitions, and for every service to reach steady state at the end; a rollout the
deployment circuit breaker stopped fails the step with the service's latest event.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.logs import ensure_log_group, remove_log_group
from ..aws.tags import LAB
from ..engine.model import Check, Pending, is_pending
from ..engine.step import Fix, Resource, Step, StepError, StepRun, claim

LAUNCH_TYPE = "FARGATE"
CAPACITY_PROVIDER = "FARGATE"
CONTAINER_INSIGHTS = "containerInsights"
LOG_STREAM_PREFIX = "ecs"
LOG_BUFFER_SIZE = "25m"  # what AWS recommends for non-blocking awslogs

# The X-Ray daemon sidecar (seed 7.2), pinned: a re-run never picks up a new image by itself.
XRAY_CONTAINER = "xray-daemon"
XRAY_IMAGE = "public.ecr.aws/xray/aws-xray-daemon:3.3.13"
XRAY_PORT = 2000
XRAY_CPU = 32
XRAY_MEMORY = 128  # MiB; the app container gets the rest of the task's memory

HEALTH_CHECK_TIMING = {"interval": 15, "timeout": 5, "retries": 3, "startPeriod": 30}
HEALTH_CHECK_GRACE_SECONDS = 60
DEPLOYMENT_CONFIGURATION = {
    "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    "minimumHealthyPercent": 100,
    "maximumPercent": 200,
}
ASSIGN_PUBLIC_IP = "DISABLED"
PROPAGATE_TAGS = "SERVICE"

SCALING_NAMESPACE = "ecs"
SCALABLE_DIMENSION = "ecs:service:DesiredCount"
CPU_METRIC = "ECSServiceAverageCPUUtilization"
SCALE_OUT_COOLDOWN = 60
SCALE_IN_COOLDOWN = 300

DB_WAIT_TIMEOUT = 1800  # RDS takes 5-8.5 minutes to create an instance
STEADY_TIMEOUT = 900  # a Fargate service reaches steady state in 1-3.5 minutes
SERVICE_DELETE_TIMEOUT = 900  # tasks drain (the target groups' deregistration delay) first
CLUSTER_DELETE_TIMEOUT = 600
# On a new account the ECS service-linked role is created with the first cluster and is
# not assumable for a few seconds.
LINKED_ROLE_TIMEOUT = 60

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


class EcsStep(Step):
    name = "ecs"
    requires = ("nat", "sg", "alb", "ecr", "iam", "rds")
    services = ("ecs", "application-autoscaling", "logs", "rds")
    description = "Fargate cluster, task definitions, services with X-Ray sidecars, auto scaling"

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.ecs
        subnet_ids = list(run.outputs_of("vpc")["private_subnet_ids"])
        # Tasks pull images and reach AWS APIs through the NAT gateway: `requires` runs this
        # step after the nat step, which has waited for the gateway to be available.
        sg_id = run.outputs_of("sg")["group_ids"][cfg.security_group]
        images = run.outputs_of("ecr")["images"]
        target_groups = run.outputs_of("alb")["target_group_arns"]
        roles = run.outputs_of("iam")
        db = run.outputs_of("rds")

        cluster_arn = self._cluster(run)
        for svc in cfg.services.values():
            ensure_log_group(run, svc.log_group, run.config.cloudwatch.log_retention_days)
        endpoint = _database_endpoint(run, db)

        task_definitions: dict[str, str] = {}
        for name, svc in cfg.services.items():
            spec = task_definition_spec(
                service=name,
                family=svc.family,
                cpu=svc.cpu,
                memory=svc.memory,
                port=svc.port,
                image=images[name],
                execution_role_arn=roles["task_execution_role_arn"],
                task_role_arn=roles["task_role_arn"],
                db_host=endpoint["address"],
                db_port=endpoint["port"],
                db_name=db["db_name"],
                secret_arn=db["secret_arn"],
                log_group=svc.log_group,
                region=run.clients.region,
            )
            task_definitions[name] = self._task_definition(run, svc.family, spec)

        bounds = {} if is_pending(cluster_arn) else _scaling_bounds(run)
        services: dict[str, str] = {}
        for name, svc in cfg.services.items():
            spec = service_spec(
                service=name,
                task_definition=task_definitions[name],
                desired_count=svc.desired_count,
                port=svc.port,
                subnet_ids=subnet_ids,
                security_group_id=sg_id,
                target_group_arn=target_groups[name],
            )
            resource = scaling_resource_id(cfg.cluster, svc.service)
            services[name] = self._service(
                run, svc.service, spec, bounds.get(resource), after=[cluster_arn]
            )
            self._autoscaling(run, svc.service, services[name])

        for name, svc in cfg.services.items():
            run.wait(
                f"service {svc.service} to reach steady state",
                lambda s=svc.service, td=task_definitions[name]: deployment_state(
                    _describe_service(run.clients.ecs, cfg.cluster, s), td
                ),
                timeout=STEADY_TIMEOUT,
            )
        return {
            "cluster_arn": cluster_arn,
            "services": services,
            "task_definitions": task_definitions,
        }

    # ------------------------------------------------------------ cluster

    def _cluster(self, run: StepRun) -> str:
        cfg = run.config.ecs
        ecs = run.clients.ecs
        return run.ensure(
            "cluster",
            cfg.cluster,
            id_key="clusterArn",
            arn_key="clusterArn",
            find=lambda: find_cluster(ecs, run.ctx.lab, cfg.cluster),
            create=lambda: ecs.create_cluster(
                clusterName=cfg.cluster,
                settings=[{"name": CONTAINER_INSIGHTS, "value": _insights(cfg)}],
                capacityProviders=[CAPACITY_PROVIDER],
                defaultCapacityProviderStrategy=[
                    {"capacityProvider": CAPACITY_PROVIDER, "weight": 1}
                ],
                tags=ecs_tags(run.tags(cfg.cluster)),
            )["cluster"],
            fixes=lambda cluster: _cluster_fixes(ecs, cluster, cfg),
        )

    # ------------------------------------------------------------ task definitions

    def _task_definition(self, run: StepRun, family: str, spec: dict) -> str:
        ecs = run.clients.ecs
        registered: dict[str, str] = {}
        drift: list[str] = []

        def register() -> Resource:
            td = ecs.register_task_definition(**spec, tags=ecs_tags(run.tags(family)))
            registered["arn"] = td["taskDefinition"]["taskDefinitionArn"]
            return {"taskDefinitionArn": registered["arn"]}

        def new_revision() -> None:
            arn = register()["taskDefinitionArn"]
            run.ctx.state.record_resource(run.step, f"task-definition:{family}", arn, arn)

        def fixes(current: Resource) -> list[Fix]:
            if registered:  # just registered from this spec
                return []
            drift.extend(task_definition_diff(current, spec))
            if not drift:
                return []
            return [Fix(f"register a new revision: {', '.join(drift)}", new_revision)]

        arn = run.ensure(
            "task-definition",
            family,
            id_key="taskDefinitionArn",
            arn_key="taskDefinitionArn",
            find=lambda: find_task_definition(ecs, run.ctx.lab, family),
            create=register,
            fixes=fixes,
        )
        if registered:
            return registered["arn"]
        if drift:  # under plan: the new revision is registered on apply
            return Pending(f"new revision of task definition {family}")
        return arn

    # ------------------------------------------------------------ services

    def _service(
        self,
        run: StepRun,
        service: str,
        spec: dict,
        bounds: tuple[int, int] | None,
        after: list,
    ) -> str:
        cluster = run.config.ecs.cluster
        ecs = run.clients.ecs

        def create() -> Resource:
            return run.retry(
                lambda: ecs.create_service(
                    cluster=cluster,
                    serviceName=service,
                    **spec,
                    tags=ecs_tags(run.tags(service)),
                )["service"],
                codes=("InvalidParameterException",),
                match=lambda exc: "service linked role" in str(exc).lower(),
                timeout=LINKED_ROLE_TIMEOUT,
                reason="ECS's service-linked role was just created and isn't assumable yet",
            )

        def fixes(found: Resource) -> list[Fix]:
            changes, details, refused = service_changes(found, spec, bounds)
            out = [_refuse(detail, service) for detail in refused]
            if changes:
                out.append(
                    Fix(
                        "; ".join(details),
                        lambda: ecs.update_service(cluster=cluster, service=service, **changes),
                    )
                )
            return out

        return run.ensure(
            "service",
            service,
            id_key="serviceArn",
            arn_key="serviceArn",
            after=after,
            find=lambda: _find_service(run, service),
            create=create,
            fixes=fixes,
        )

    # ------------------------------------------------------------ auto scaling

    def _autoscaling(self, run: StepRun, service: str, service_arn: str) -> None:
        cfg = run.config.ecs
        scaling = cfg.autoscaling
        aas = run.clients.get("application-autoscaling")
        resource = scaling_resource_id(cfg.cluster, service)
        capacity = {"MinCapacity": scaling.min_capacity, "MaxCapacity": scaling.max_capacity}

        def register(tags: dict[str, str] | None = None) -> Resource:
            # Tags are taken at registration (AWS tags the scalable target; moto 5.2 ignores
            # them). Targets are found by their resource id, which names this lab's cluster.
            extra = {"Tags": tags} if tags else {}
            aas.register_scalable_target(
                ServiceNamespace=SCALING_NAMESPACE,
                ResourceId=resource,
                ScalableDimension=SCALABLE_DIMENSION,
                **capacity,
                **extra,
            )
            return {"ResourceId": resource, **capacity}

        def target_fixes(target: Resource) -> list[Fix]:
            now = (target.get("MinCapacity"), target.get("MaxCapacity"))
            want = (scaling.min_capacity, scaling.max_capacity)
            if now == want:
                return []
            return [Fix(f"capacity {now[0]}..{now[1]} -> {want[0]}..{want[1]}", register)]

        target = run.ensure(
            "scalable-target",
            resource,
            id_key="ResourceId",
            after=[service_arn],
            find=lambda: find_scalable_target(aas, resource),
            create=lambda: register(run.tags(resource)),
            fixes=target_fixes,
        )

        name = scaling_policy_name(service)
        wanted = target_tracking(scaling.cpu_target_percent)

        def put() -> Resource:
            return aas.put_scaling_policy(
                PolicyName=name,
                ServiceNamespace=SCALING_NAMESPACE,
                ResourceId=resource,
                ScalableDimension=SCALABLE_DIMENSION,
                PolicyType="TargetTrackingScaling",
                TargetTrackingScalingPolicyConfiguration=wanted,
            )

        def policy_fixes(policy: Resource) -> list[Fix]:
            current = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
            if policy.get("PolicyType") == "TargetTrackingScaling" and _same_tracking(
                current, wanted
            ):
                return []
            return [Fix(f"target tracking {CPU_METRIC} at {wanted['TargetValue']:g}%", put)]

        run.ensure(
            "scaling-policy",
            name,
            id_key="PolicyARN",
            after=[target],
            find=lambda: find_scaling_policy(aas, resource, name),
            create=put,
            fixes=policy_fixes,
        )

    # ------------------------------------------------------------ verify

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        cfg = run.config.ecs
        if find_cluster(run.clients.ecs, run.ctx.lab, cfg.cluster) is None:
            return checks  # the default checks already report it missing
        for svc in cfg.services.values():
            found = _describe_service(run.clients.ecs, cfg.cluster, svc.service)
            if found is None:
                continue  # the default checks already report it missing
            name = f"service {svc.service} deployment"
            try:
                done, seen = deployment_state(found)
            except StepError as exc:
                checks.append(Check(name, False, str(exc)))
                continue
            checks.append(Check(name, True, seen if done else f"rolling out: {seen}"))
        return checks

    # ------------------------------------------------------------ destroy

    def teardown(self, run: StepRun) -> None:
        cfg = run.config.ecs
        ecs = run.clients.ecs
        aas = run.clients.get("application-autoscaling")
        lab = run.ctx.lab
        cluster = find_cluster(ecs, lab, cfg.cluster, on_foreign=run)
        foreign = cluster is None and _cluster_exists(ecs, cfg.cluster)

        if not foreign:
            for svc in cfg.services.values():
                resource = scaling_resource_id(cfg.cluster, svc.service)
                policy = scaling_policy_name(svc.service)
                run.remove(
                    "scaling-policy",
                    policy,
                    find=lambda r=resource, p=policy: find_scaling_policy(aas, r, p),
                    delete=lambda found: aas.delete_scaling_policy(
                        PolicyName=found["PolicyName"],
                        ServiceNamespace=SCALING_NAMESPACE,
                        ResourceId=found["ResourceId"],
                        ScalableDimension=SCALABLE_DIMENSION,
                    ),
                )
                run.remove(
                    "scalable-target",
                    resource,
                    find=lambda r=resource: find_scalable_target(aas, r),
                    delete=lambda found: aas.deregister_scalable_target(
                        ServiceNamespace=SCALING_NAMESPACE,
                        ResourceId=found["ResourceId"],
                        ScalableDimension=SCALABLE_DIMENSION,
                    ),
                )
        for svc in cfg.services.values():
            run.remove(
                "service",
                svc.service,
                find=lambda s=svc.service: (
                    _describe_service(ecs, cfg.cluster, s, draining=True) if cluster else None
                ),
                delete=lambda found: _delete_service(run, found),
            )
        for svc in cfg.services.values():
            run.remove(
                "task-definition",
                svc.family,
                find=lambda f=svc.family: _active_revisions(run, f),
                delete=lambda found: _deregister(ecs, found["arns"]),
            )
        run.remove(
            "cluster",
            cfg.cluster,
            find=lambda: cluster,
            delete=lambda found: run.retry(
                lambda: ecs.delete_cluster(cluster=found["clusterArn"]),
                codes=(
                    "ClusterContainsServicesException",
                    "ClusterContainsTasksException",
                    "UpdateInProgressException",
                ),
                timeout=CLUSTER_DELETE_TIMEOUT,
                reason="the deleted services' tasks are still stopping",
            ),
        )
        for svc in cfg.services.values():
            remove_log_group(run, svc.log_group)


# ---------------------------------------------------------------- what the config asks for


def ecs_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """ECS spells tag keys in lower case."""
    return [{"key": k, "value": v} for k, v in tags.items()]


def _insights(cfg) -> str:
    return "enabled" if cfg.container_insights else "disabled"


def health_check_command(port: int) -> list[str]:
    """The image has Python and no curl: /health answers 200 only when the DB is reachable."""
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
    db_host: str,
    db_port: int,
    db_name: str,
    secret_arn: str,
    log_group: str,
    region: str,
) -> dict:
    """RegisterTaskDefinition's arguments (without tags): the service's container and the
    X-Ray daemon sidecar. The DB credentials come from the RDS-managed secret's JSON keys."""

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
            {"name": "DB_HOST", "value": db_host},
            {"name": "DB_PORT", "value": str(db_port)},
            {"name": "DB_NAME", "value": db_name},
            {"name": "AWS_XRAY_DAEMON_ADDRESS", "value": f"127.0.0.1:{XRAY_PORT}"},
        ],
        "secrets": [
            {"name": "DB_USER", "valueFrom": f"{secret_arn}:username::"},
            {"name": "DB_PASSWORD", "valueFrom": f"{secret_arn}:password::"},
        ],
        "logConfiguration": logs,
        "healthCheck": {"command": health_check_command(port), **HEALTH_CHECK_TIMING},
    }
    xray = {
        "name": XRAY_CONTAINER,
        "image": XRAY_IMAGE,
        "cpu": XRAY_CPU,
        "memory": XRAY_MEMORY,
        "essential": False,
        "portMappings": [{"containerPort": XRAY_PORT, "protocol": "udp"}],
        "logConfiguration": logs,
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


def scaling_resource_id(cluster: str, service: str) -> str:
    return f"service/{cluster}/{service}"


def scaling_policy_name(service: str) -> str:
    return f"{service}-cpu"


def target_tracking(cpu_target_percent: float) -> dict:
    return {
        "TargetValue": float(cpu_target_percent),
        "PredefinedMetricSpecification": {"PredefinedMetricType": CPU_METRIC},
        "ScaleOutCooldown": SCALE_OUT_COOLDOWN,
        "ScaleInCooldown": SCALE_IN_COOLDOWN,
        "DisableScaleIn": False,
    }


def _same_tracking(current: dict, wanted: dict) -> bool:
    metric = (current.get("PredefinedMetricSpecification") or {}).get("PredefinedMetricType")
    return (
        float(current.get("TargetValue", -1)) == wanted["TargetValue"]
        and metric == CPU_METRIC
        and current.get("ScaleOutCooldown") == wanted["ScaleOutCooldown"]
        and current.get("ScaleInCooldown") == wanted["ScaleInCooldown"]
        and bool(current.get("DisableScaleIn", False)) == wanted["DisableScaleIn"]
    )


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


# ---------------------------------------------------------------- lookups


def _lab_of(tags: list[dict] | None) -> str | None:
    """The msctl:lab tag among ECS tags ([{"key", "value"}])."""
    return {t.get("key"): t.get("value") for t in tags or []}.get(LAB)


def find_cluster(ecs, lab: str, name: str, on_foreign: StepRun | None = None) -> Resource | None:
    """The ACTIVE cluster by its (account- and region-unique) name, if it is this lab's.
    A same-named cluster without this lab's tag is an error when reconciling (never
    adopted) and left alone, with a note, when destroying."""
    cluster = _describe_cluster(ecs, name)
    if cluster is None:
        return None
    tags = {LAB: _lab_of(cluster.get("tags"))}
    return claim(
        cluster,
        tags,
        lab=lab,
        kind="ECS cluster",
        name=name,
        on_foreign=on_foreign,
        config_key="ecs.cluster",
    )


def _describe_cluster(ecs, name: str) -> Resource | None:
    clusters = ecs.describe_clusters(clusters=[name], include=["SETTINGS", "TAGS"])["clusters"]
    live = [c for c in clusters if c.get("status") not in ("INACTIVE", None)]
    return live[0] if live else None


def _cluster_exists(ecs, name: str) -> bool:
    return _describe_cluster(ecs, name) is not None


def _cluster_fixes(ecs, cluster: Resource, cfg) -> list[Fix]:
    fixes = []
    want = _insights(cfg)
    settings = {s.get("name"): s.get("value") for s in cluster.get("settings") or []}
    now = settings.get(CONTAINER_INSIGHTS, "disabled")
    # "enhanced" is Container Insights too (with more metrics); it satisfies "enabled".
    if not (now == want or (want == "enabled" and now == "enhanced")):
        fixes.append(
            Fix(
                f"container insights {now} -> {want}",
                lambda: ecs.update_cluster(
                    cluster=cluster["clusterName"],
                    settings=[{"name": CONTAINER_INSIGHTS, "value": want}],
                ),
            )
        )
    providers = list(cluster.get("capacityProviders") or [])
    if CAPACITY_PROVIDER not in providers:
        strategy = cluster.get("defaultCapacityProviderStrategy") or [
            {"capacityProvider": CAPACITY_PROVIDER, "weight": 1}
        ]
        fixes.append(
            Fix(
                f"capacity provider {CAPACITY_PROVIDER}",
                lambda: ecs.put_cluster_capacity_providers(
                    cluster=cluster["clusterName"],
                    capacityProviders=[*providers, CAPACITY_PROVIDER],
                    defaultCapacityProviderStrategy=strategy,
                ),
            )
        )
    return fixes


def _revisions(ecs, family: str) -> list[str]:
    """ARNs of the family's ACTIVE revisions, oldest first (familyPrefix is a prefix: other
    families that start with the same name are left out)."""
    arns = [
        arn
        for page in ecs.get_paginator("list_task_definitions").paginate(
            familyPrefix=family, status="ACTIVE"
        )
        for arn in page.get("taskDefinitionArns", [])
        if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == family
    ]
    return sorted(arns, key=lambda arn: int(arn.rsplit(":", 1)[-1]))


def find_task_definition(ecs, lab: str, family: str) -> Resource | None:
    """The family's latest ACTIVE revision, with its tags; another lab's family is an error."""
    arns = _revisions(ecs, family)
    if not arns:
        return None
    described = ecs.describe_task_definition(taskDefinition=arns[-1], include=["TAGS"])
    tags = described.get("tags") or []
    owner = _lab_of(tags)
    if owner not in (None, lab):
        raise StepError(
            f"task definition family {family} belongs to lab {owner!r}, not {lab!r}",
            hint="change ecs.services.<service>.family in the config",
        )
    return {**described["taskDefinition"], "tags": tags}


def _active_revisions(run: StepRun, family: str) -> Resource | None:
    ecs = run.clients.ecs
    arns = _revisions(ecs, family)
    if not arns:
        return None
    tags = ecs.describe_task_definition(taskDefinition=arns[-1], include=["TAGS"]).get("tags")
    if _lab_of(tags) not in (None, run.ctx.lab):
        run.emit("note", f"task definition family {family} is another lab's: left alone")
        return None
    return {"family": family, "arns": arns}


def _describe_service(ecs, cluster: str, service: str, draining: bool = False) -> Resource | None:
    """The service if it is ACTIVE (or, with `draining`, still being deleted)."""
    try:
        found = ecs.describe_services(cluster=cluster, services=[service], include=["TAGS"])
    except ClientError as exc:
        if is_code(exc, "ClusterNotFoundException", "ServiceNotFoundException"):
            return None
        raise
    live = ("ACTIVE", "DRAINING") if draining else ("ACTIVE",)
    services = [s for s in found.get("services", []) if s.get("status") in live]
    return services[0] if services else None


def _find_service(run: StepRun, service: str) -> Resource | None:
    """The ACTIVE service. One still DRAINING from a delete blocks a create of the same
    name: apply waits until it is gone (plan just says it will be created)."""
    ecs = run.clients.ecs
    cluster = run.config.ecs.cluster
    found = _describe_service(ecs, cluster, service, draining=True)
    if found is None or found.get("status") == "ACTIVE":
        return found
    if not run.dry_run:
        run.wait(
            f"service {service} (being deleted) to be gone before creating it again",
            lambda: _service_gone(ecs, cluster, service),
            timeout=SERVICE_DELETE_TIMEOUT,
        )
    return None


def _scaling_bounds(run: StepRun) -> dict[str, tuple[int, int]]:
    """The current min..max of each of this cluster's scalable targets, by resource id."""
    aas = run.clients.get("application-autoscaling")
    cfg = run.config.ecs
    ids = [scaling_resource_id(cfg.cluster, s.service) for s in cfg.services.values()]
    targets = aas.describe_scalable_targets(
        ServiceNamespace=SCALING_NAMESPACE, ResourceIds=ids, ScalableDimension=SCALABLE_DIMENSION
    )["ScalableTargets"]
    return {
        t["ResourceId"]: (t["MinCapacity"], t["MaxCapacity"])
        for t in targets
        if t.get("ResourceId") in ids
    }


def find_scalable_target(aas, resource: str) -> Resource | None:
    targets = aas.describe_scalable_targets(
        ServiceNamespace=SCALING_NAMESPACE,
        ResourceIds=[resource],
        ScalableDimension=SCALABLE_DIMENSION,
    )["ScalableTargets"]
    return next((t for t in targets if t.get("ResourceId") == resource), None)


def find_scaling_policy(aas, resource: str, name: str) -> Resource | None:
    policies = aas.describe_scaling_policies(
        ServiceNamespace=SCALING_NAMESPACE,
        ResourceId=resource,
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyNames=[name],
    )["ScalingPolicies"]
    return next(
        (p for p in policies if p.get("PolicyName") == name and p.get("ResourceId") == resource),
        None,
    )


# ---------------------------------------------------------------- the database endpoint


def _database_endpoint(run: StepRun, db: dict) -> dict:
    """The DB instance's address and port for DB_HOST/DB_PORT: apply waits (short polls)
    until the instance is available; plan uses what RDS reports now."""
    from . import rds  # the rds step owns the wait and its failure states

    identifier = db["identifier"]
    if not run.dry_run and not db.get("endpoint_address"):
        run.waiting(
            f"the services need DB instance {identifier}'s address: waiting for it to be "
            "available (RDS takes 5-8 minutes to create an instance)"
        )
    return rds.wait_available(run, identifier, timeout=DB_WAIT_TIMEOUT)


# ---------------------------------------------------------------- fix and delete


def _refuse(detail: str, service: str) -> Fix:
    def refuse() -> None:
        raise StepError(
            f"service {service} can't be changed in place ({detail})",
            hint="run `msctl down --only ecs` and `msctl up` to recreate the services, or "
            "restore the config",
        )

    return Fix(detail, refuse, action="replace")


def _deregister(ecs, arns: list[str]) -> None:
    """Every ACTIVE revision: an INACTIVE one can't start new tasks (running ones finish)."""
    for arn in arns:
        ecs.deregister_task_definition(taskDefinition=arn)


def _service_gone(ecs, cluster: str, service: str) -> tuple[bool, str]:
    found = _describe_service(ecs, cluster, service, draining=True)
    return found is None, found.get("status", "?") if found else "INACTIVE"


def _delete_service(run: StepRun, service: Resource) -> None:
    """Scale to 0 (the tasks drain from the target group), delete, wait until INACTIVE."""
    ecs = run.clients.ecs
    cluster = run.config.ecs.cluster
    name = service["serviceName"]
    if service.get("status") == "ACTIVE":
        try:
            if service.get("desiredCount", 0) > 0:
                ecs.update_service(cluster=cluster, service=name, desiredCount=0)
            ecs.delete_service(cluster=cluster, service=name, force=True)
        except ClientError as exc:
            if not is_code(exc, "ServiceNotFoundException", "ServiceNotActiveException"):
                raise
    run.wait(
        f"service {name} to be deleted",
        lambda: _service_gone(ecs, cluster, name),
        timeout=SERVICE_DELETE_TIMEOUT,
    )
