"""ecs: the Fargate cluster, the services' task definitions and services, their log groups and
CPU auto scaling (seed 4.1, 4.4, 4.6, 7.1, 7.2, 8.2).

Each task runs the service's container and an X-Ray daemon sidecar, both on a read-only root
filesystem (the app gets a scratch /tmp). The database password is never in a task
definition: the container gets the ARN of the secret RDS manages (DB_SECRET_ARN) and reads
the login itself, with the task role, whenever it connects (over TLS), so it follows RDS's
rotation of the secret (every 7 days) without a redeploy. It also gets the SHA-256 of the
lab's origin secret (alb_origin), never the secret itself.

What the config asks for is in `ecs_spec` (a new task definition revision only when the
wanted one differs from the family's latest ACTIVE revision), the auto scaling in
`ecs_scaling`.

The services don't wait for the database: their task definitions carry the DB instance's
identifier (DB_INSTANCE_ID), and the tasks look up its endpoint themselves (the task role
may DescribeDBInstances on exactly that instance) until RDS has made it available. Their
liveness (/health, what the container and target group health checks ask) doesn't need the
database, so the rollout overlaps RDS's creation. The readiness msctl can't ask on AWS (the
tasks are private); what AWS reports stands in for it: `apply` ends with one wait, all
polled together, for every service's steady state (its tasks running and, on AWS, healthy
in their target group behind the load balancer), the load balancer active and the DB
instance available. Once those hold the services find the database at their next attempt
(a few seconds), so `up` ends at the latest of RDS's creation and the rollout, not their
sum. A rollout the deployment circuit breaker stopped fails the step with the service's
latest event.
"""

from __future__ import annotations

from ..aws.waiters import Wait
from ..engine.model import Check, Pending, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.compute import LOG_GROUP
from ..resources.ecs import (
    CLUSTER,
    SCALABLE_TARGET,
    SERVICE,
    SERVICE_DELETE_TIMEOUT,
    TASK_DEFINITION,
    describe_service,
    service_gone,
)
from ..resources.inventory import owned
from . import alb_origin
from .alb import active_wait
from .base import LabStep
from .ecs_scaling import current_bounds, ensure_autoscaling, scaling_resource_id
from .ecs_spec import (
    deployment_state,
    service_changes,
    service_spec,
    task_definition_diff,
    task_definition_spec,
)
from .log_groups import ensure_log_group
from .rds import available_wait  # the rds step owns the wait and its failure states
from .run import Fix, StepRun

CAPACITY_PROVIDER = "FARGATE"
CONTAINER_INSIGHTS = "containerInsights"
DB_WAIT_TIMEOUT = 1800  # RDS takes 5-8.5 minutes to create an instance
STEADY_TIMEOUT = 900  # a Fargate service reaches steady state in 1-3.5 minutes
STEADY_EXPECTED = 150  # seconds, typically, on AWS
# On a new account the ECS service-linked role is created with the first cluster and is
# not assumable for a few seconds.
LINKED_ROLE_TIMEOUT = 60


def insights_log_group(cluster: str) -> str:
    return f"/aws/ecs/containerinsights/{cluster}/performance"


class EcsStep(LabStep):
    name = "ecs"
    requires = ("nat", "sg", "alb", "ecr", "iam", "rds")
    reads_only = ("rds",)  # the instance's identifier and secret ARN: the tasks find it
    services = ("ecs", "application-autoscaling", "logs", "rds", "secretsmanager", "elbv2")
    description = "Fargate cluster, task definitions, services with X-Ray sidecars, auto scaling"
    # `down`: scalable targets (with their policies), services (scaled to 0, deleted, gone),
    # every ACTIVE revision, the cluster, the log groups.
    kinds = (LOG_GROUP, CLUSTER, TASK_DEFINITION, SERVICE, SCALABLE_TARGET)

    def names(self, config):
        services = config.ecs.services.values()
        return [
            (CLUSTER, config.ecs.cluster),
            *((TASK_DEFINITION, s.family) for s in services),
            *((LOG_GROUP, s.log_group) for s in services),
        ]

    def teardown(self, run: StepRun) -> None:
        """Also the log groups Container Insights writes for the lab's clusters: AWS creates
        them itself, untagged, named after the cluster (they are the lab's because the
        cluster is), and keeps them after the cluster is gone."""
        clusters = owned(run.ctx, run.ctx.lab, step=self.name, kinds=[CLUSTER]).items
        names = {c.live["clusterName"] for c in clusters if c.live}
        super().teardown(run)
        logs = run.clients.logs
        for name in sorted(names):
            group = LOG_GROUP.read(logs, insights_log_group(name))
            if group is not None:
                run.setting(
                    LOG_GROUP.name,
                    group["logGroupName"],
                    ok=False,
                    detail=f"written by Container Insights for cluster {name}",
                    action="delete",
                    apply=lambda g=group: LOG_GROUP.delete(run, g),
                )

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.ecs
        subnet_ids = list(run.outputs_of("vpc")["private_subnet_ids"])
        # Tasks pull images and reach AWS APIs through the NAT gateway: `requires` runs this
        # step after the nat step, which has waited for the gateway to be available.
        sg_id = run.outputs_of("sg")["group_ids"][cfg.security_group]
        images = run.outputs_of("ecr")["images"]
        alb = run.outputs_of("alb")
        target_groups = alb["target_group_arns"]
        origin_sha256 = alb_origin.sha256(alb_origin.read(run, alb["origin_secret_arn"]))
        roles = run.outputs_of("iam")
        db = run.outputs_of("rds")

        cluster_arn = _cluster(run)
        for svc in cfg.services.values():
            ensure_log_group(run, svc.log_group, run.config.cloudwatch.log_retention_days)

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
                db_instance_id=db["identifier"],
                db_name=db["db_name"],
                secret_arn=db["secret_arn"],
                log_group=svc.log_group,
                region=run.clients.region,
                origin_secret_sha256=origin_sha256,
            )
            task_definitions[name] = _task_definition(run, svc.family, spec)

        bounds = {} if is_pending(cluster_arn) else current_bounds(run)
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
            bound = bounds.get(scaling_resource_id(cfg.cluster, svc.service))
            services[name] = _service(run, svc.service, spec, bound, after=[cluster_arn])
            ensure_autoscaling(run, svc.service, services[name])

        run.wait_all(
            [
                *(
                    _steady(run, svc.service, task_definitions[n])
                    for n, svc in cfg.services.items()
                ),
                active_wait(run, alb["arn"]),
                available_wait(run, db["identifier"], DB_WAIT_TIMEOUT),
            ]
        )
        return {
            "cluster_arn": cluster_arn,
            "services": services,
            "task_definitions": task_definitions,
        }

    def verify(self, run: StepRun) -> list[Check]:
        """The default checks, and each existing service's deployment (steady or rolling out)."""
        checks = super().verify(run)
        for svc in run.config.ecs.services.values():
            found = run.got(SERVICE, svc.service)
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


# ---------------------------------------------------------------- cluster


def _ecs_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    """ECS spells tag keys in lower case."""
    return [{"key": k, "value": v} for k, v in tags.items()]


def _cluster(run: StepRun) -> str:
    cfg = run.config.ecs
    ecs = run.clients.ecs
    return run.ensure(
        CLUSTER,
        cfg.cluster,
        create=lambda: ecs.create_cluster(
            clusterName=cfg.cluster,
            settings=[{"name": CONTAINER_INSIGHTS, "value": _insights(cfg)}],
            capacityProviders=[CAPACITY_PROVIDER],
            defaultCapacityProviderStrategy=[{"capacityProvider": CAPACITY_PROVIDER, "weight": 1}],
            tags=_ecs_tags(run.tags(cfg.cluster)),
        )["cluster"],
        fixes=lambda cluster: _cluster_fixes(ecs, cluster, cfg),
    )


def _insights(cfg) -> str:
    return "enabled" if cfg.container_insights else "disabled"


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


# ---------------------------------------------------------------- task definitions


def _task_definition(run: StepRun, family: str, spec: dict) -> str:
    """The ARN of the family's revision as configured: the latest ACTIVE one, or a new one
    registered when it differs (Pending under plan)."""
    ecs = run.clients.ecs
    registered: list[str] = []  # the revision this run registered
    drift: list[str] = []

    def register() -> Resource:
        td = ecs.register_task_definition(**spec, tags=_ecs_tags(run.tags(family)))
        registered.append(td["taskDefinition"]["taskDefinitionArn"])
        return td["taskDefinition"]

    def new_revision() -> None:
        arn = register()["taskDefinitionArn"]
        run.ctx.state.record_resource(run.step, f"{TASK_DEFINITION.name}:{family}", arn, arn)

    def fixes(current: Resource) -> list[Fix]:
        if registered:  # just registered from this spec
            return []
        drift.extend(task_definition_diff(current, spec))
        if not drift:
            return []
        return [Fix(f"register a new revision: {', '.join(drift)}", new_revision)]

    arn = run.ensure(TASK_DEFINITION, family, create=register, fixes=fixes)
    if registered:
        return registered[-1]
    if drift:  # under plan: the new revision is registered on apply
        return Pending(f"new revision of task definition {family}")
    return arn


# ---------------------------------------------------------------- services


def _service(
    run: StepRun, service: str, spec: dict, bounds: tuple[int, int] | None, after: list
) -> str:
    cluster = run.config.ecs.cluster
    ecs = run.clients.ecs

    def create() -> Resource:
        return run.retry(
            lambda: ecs.create_service(
                cluster=cluster, serviceName=service, **spec, tags=_ecs_tags(run.tags(service))
            )["service"],
            codes=("InvalidParameterException",),
            match=lambda exc: "service linked role" in str(exc).lower(),
            timeout=LINKED_ROLE_TIMEOUT,
            reason="ECS's service-linked role was just created and isn't assumable yet",
        )

    def fixes(found: Resource) -> list[Fix]:
        count = found.get("desiredCount")
        if bounds is not None and count != spec["desiredCount"]:
            run.emit(
                "note",
                f"service {service} runs {count} task(s), not the configured desired_count "
                f"{spec['desiredCount']}: auto scaling owns the count once the service exists "
                f"(now between {bounds[0]} and {bounds[1]}); change ecs.autoscaling to move it",
            )
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
        SERVICE,
        service,
        after=after,
        find=lambda: _find_service(run, cluster, service),
        create=create,
        fixes=fixes,
    )


def _find_service(run: StepRun, cluster: str, service: str) -> Resource | None:
    """The ACTIVE service in the lab's cluster. One still DRAINING from a delete blocks a
    create of the same name: apply waits until it is gone (plan just says it will be
    created)."""
    ecs = run.clients.ecs
    found = describe_service(ecs, cluster, service, draining=True)
    if found is None or found.get("status") == "ACTIVE":
        return found
    run.wait(
        f"service {service} (being deleted) to be gone before creating it again",
        lambda: service_gone(ecs, cluster, service),
        timeout=SERVICE_DELETE_TIMEOUT,
    )
    return None


def _refuse(detail: str, service: str) -> Fix:
    def refuse() -> None:
        raise StepError(
            f"service {service} can't be changed in place ({detail})",
            hint="run `msctl down --only ecs` and `msctl up` to recreate the services, or "
            "restore the config",
        )

    return Fix(detail, refuse, action="replace")


def _steady(run: StepRun, service: str, task_definition: str) -> Wait:
    cluster = run.config.ecs.cluster
    return Wait(
        f"service {service} to reach steady state",
        lambda: deployment_state(
            describe_service(run.clients.ecs, cluster, service), task_definition
        ),
        STEADY_TIMEOUT,
        STEADY_EXPECTED,
    )
