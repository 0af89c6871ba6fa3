"""CPU auto scaling of the ECS services (seed 8.2): one scalable target per service, with a
target-tracking policy on the services' average CPU.

While a target exists, the service's desired count is auto scaling's to move within its
min..max (`current_bounds` tells the service reconcile so)."""

from __future__ import annotations

from ..resources import Resource
from ..resources.base import Part
from ..resources.ecs import SCALABLE_DIMENSION, SCALABLE_TARGET, SCALING_NAMESPACE
from .run import Fix, StepRun

CPU_METRIC = "ECSServiceAverageCPUUtilization"
SCALE_OUT_COOLDOWN = 60
SCALE_IN_COOLDOWN = 300
# Found inside the lab's scalable target; deleted with it (and its alarms with it).
SCALING_POLICY = Part("scaling-policy", "PolicyARN", "PolicyARN")


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


def current_bounds(run: StepRun) -> dict[str, tuple[int, int]]:
    """The current min..max of each of the lab cluster's scalable targets, by resource id."""
    cfg = run.config.ecs
    ids = [scaling_resource_id(cfg.cluster, s.service) for s in cfg.services.values()]
    targets = run.clients.get("application-autoscaling").describe_scalable_targets(
        ServiceNamespace=SCALING_NAMESPACE, ResourceIds=ids, ScalableDimension=SCALABLE_DIMENSION
    )["ScalableTargets"]
    return {
        t["ResourceId"]: (t["MinCapacity"], t["MaxCapacity"])
        for t in targets
        if t.get("ResourceId") in ids
    }


def ensure_autoscaling(run: StepRun, service: str, service_arn: str) -> None:
    """The service's scalable target with the configured capacity, and its CPU policy."""
    cfg = run.config.ecs
    scaling = cfg.autoscaling
    aas = run.clients.get("application-autoscaling")
    resource = scaling_resource_id(cfg.cluster, service)
    target = {
        "ServiceNamespace": SCALING_NAMESPACE,
        "ResourceId": resource,
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    capacity = {"MinCapacity": scaling.min_capacity, "MaxCapacity": scaling.max_capacity}

    def register(tags: dict[str, str] | None = None) -> Resource:
        # AWS tags the target at registration (the local emulator ignores the tags); whose
        # it is comes from its cluster anyway (resources/ecs.py).
        aas.register_scalable_target(**target, **capacity, **({"Tags": tags} if tags else {}))
        return {**target, **capacity}

    def target_fixes(found: Resource) -> list[Fix]:
        now = (found.get("MinCapacity"), found.get("MaxCapacity"))
        want = (scaling.min_capacity, scaling.max_capacity)
        if now == want:
            return []
        return [Fix(f"capacity {now[0]}..{now[1]} -> {want[0]}..{want[1]}", register)]

    registered = run.ensure(
        SCALABLE_TARGET,
        resource,
        after=[service_arn],
        create=lambda: register(run.tags(resource)),
        fixes=target_fixes,
    )

    name = scaling_policy_name(service)
    wanted = target_tracking(scaling.cpu_target_percent)

    def put() -> Resource:
        return aas.put_scaling_policy(
            PolicyName=name,
            **target,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=wanted,
        )

    def find() -> Resource | None:
        policies = aas.describe_scaling_policies(**target, PolicyNames=[name])["ScalingPolicies"]
        return next(
            (p for p in policies if (p.get("PolicyName"), p.get("ResourceId")) == (name, resource)),
            None,
        )

    def policy_fixes(policy: Resource) -> list[Fix]:
        current = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
        if policy.get("PolicyType") == "TargetTrackingScaling" and _same_tracking(current, wanted):
            return []
        return [Fix(f"target tracking {CPU_METRIC} at {wanted['TargetValue']:g}%", put)]

    run.ensure(SCALING_POLICY, name, after=[registered], find=find, create=put, fixes=policy_fixes)
