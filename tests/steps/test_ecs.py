"""ecs against moto: the lifecycle, the cluster, task definitions, services and auto scaling
as configured, no DB password anywhere, new revisions only on change, drift of the desired
count under auto scaling, and the steady-state and rollout-failure rules."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from msctl.config import load_config
from msctl.engine import runner
from msctl.engine.model import Status
from msctl.engine.step import StepError
from msctl.resources.ecs import SCALABLE_DIMENSION
from msctl.steps.ecs_spec import (
    XRAY_CONTAINER,
    XRAY_IMAGE,
    deployment_state,
    normalize_task_definition,
    service_changes,
    service_spec,
    task_definition_diff,
    task_definition_spec,
)

from .conftest import ROOT, Lab, assert_lifecycle

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's account
CLUSTER = "microservices-cluster"
FAMILIES = {"products": "microservices-products", "orders": "microservices-orders"}
SERVICES = {
    "products": "microservices-products-service",
    "orders": "microservices-orders-service",
}
LOG_GROUPS = ["/ecs/microservices-products", "/ecs/microservices-orders"]
SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-1a2b-AbCdEf"


@pytest.fixture
def ecs_lab(lab, monkeypatch):
    # moto reports this many running tasks for every service it creates (read at
    # CreateService); without it no service ever reaches steady state.
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    # No step here attaches an AWS managed policy; loading them costs moto seconds.
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
    return lab


def client(service: str):
    return boto3.client(service, region_name=REGION)


def active_revisions(family: str) -> list[str]:
    return client("ecs").list_task_definitions(familyPrefix=family, status="ACTIVE")[
        "taskDefinitionArns"
    ]


def scalable_targets() -> list[dict]:
    return client("application-autoscaling").describe_scalable_targets(ServiceNamespace="ecs")[
        "ScalableTargets"
    ]


def live_services() -> list[dict]:
    ecs = client("ecs")
    clusters = ecs.describe_clusters(clusters=[CLUSTER])["clusters"]
    if not clusters or clusters[0]["status"] != "ACTIVE":
        return []
    described = ecs.describe_services(cluster=CLUSTER, services=list(SERVICES.values()))
    return [s for s in described["services"] if s["status"] != "INACTIVE"]


def assert_nothing_left() -> None:
    for family in FAMILIES.values():
        assert active_revisions(family) == []
    assert live_services() == []
    clusters = client("ecs").describe_clusters(clusters=[CLUSTER])["clusters"]
    assert [c for c in clusters if c["status"] == "ACTIVE"] == []
    assert scalable_targets() == []
    policies = client("application-autoscaling").describe_scaling_policies(ServiceNamespace="ecs")[
        "ScalingPolicies"
    ]
    assert policies == []
    groups = client("logs").describe_log_groups(logGroupNamePrefix="/ecs/")["logGroups"]
    assert [g["logGroupName"] for g in groups] == []


def only(lab: Lab, action: str):
    """Run the ecs step alone (its dependencies' outputs come from the state), where
    `lab.run` would run every step it requires first."""
    result = runner.run(lab.ctx, lab.steps, action, selected=["ecs"])
    bad = {n: (r.status, r.error) for n, r in result.results.items() if not r.ok}
    assert not bad, bad
    return result


def assert_no_password(tmp_path, *labs: Lab) -> None:
    """Neither the RDS-managed secret's value nor the password in it appears in any revision
    of the lab's task definitions, in the state files or in the events."""
    lab = labs[0]
    secret_arn = lab.state.outputs("rds")["secret_arn"]
    secret = client("secretsmanager").get_secret_value(SecretId=secret_arn)["SecretString"]
    password = json.loads(secret)["password"]
    assert password
    ecs = client("ecs")
    revisions = []
    for family in FAMILIES.values():
        for status in ("ACTIVE", "INACTIVE"):
            arns = ecs.list_task_definitions(familyPrefix=family, status=status)
            for arn in arns["taskDefinitionArns"]:
                described = ecs.describe_task_definition(taskDefinition=arn, include=["TAGS"])
                revisions.append(json.dumps(described, default=str))
    assert revisions and all(secret_arn in text for text in revisions)  # by ARN, not value
    state = [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    events = [f"{e.kind} {e.step} {e.message}" for lab in labs for e in lab.events]
    for text in [*revisions, *state, "\n".join(events)]:
        assert password not in text and secret not in text


# ---------------------------------------------------------------- pure rules


def _spec(**overrides) -> dict:
    args = dict(
        service="products",
        family="microservices-products",
        cpu=256,
        memory=512,
        port=8080,
        image=f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/microservices/products@sha256:{'a' * 64}",
        execution_role_arn=f"arn:aws:iam::{ACCOUNT}:role/microservices-ecs-task-execution-role",
        task_role_arn=f"arn:aws:iam::{ACCOUNT}:role/microservices-ecs-task-role",
        db_instance_id="microservices-db",
        db_name="postgres",
        secret_arn=SECRET_ARN,
        log_group="/ecs/microservices-products",
        region=REGION,
        origin_secret_sha256="0" * 64,
    )
    args.update(overrides)
    return task_definition_spec(**args)


def _as_described(spec: dict) -> dict:
    """The spec the way DescribeTaskDefinition returns it: AWS's additions and defaults."""
    described = json.loads(json.dumps(spec))
    described.update(
        taskDefinitionArn=f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{spec['family']}:3",
        revision=3,
        status="ACTIVE",
        volumes=[{**v, "host": {}} for v in spec["volumes"]],  # a bind mount, no host path
        placementConstraints=[],
        compatibilities=["EC2", "FARGATE"],
        requiresAttributes=[{"name": "com.amazonaws.ecs.capability.task-eni"}],
        registeredAt="2024-05-01T10:00:00Z",
        registeredBy=f"arn:aws:iam::{ACCOUNT}:user/someone",
        enableFaultInjection=False,
    )
    for container in described["containerDefinitions"]:
        container.setdefault("cpu", 0)
        container.setdefault("essential", True)
        container.setdefault("environment", [])
        container.setdefault("mountPoints", [])
        container.update(volumesFrom=[], systemControls=[])
        container["environment"].reverse()
        for mapping in container["portMappings"]:
            mapping["hostPort"] = mapping["containerPort"]
    described["containerDefinitions"].reverse()
    return described


def test_normalize_ignores_what_aws_adds():
    spec = _spec()
    described = _as_described(spec)
    assert normalize_task_definition(described) == normalize_task_definition(spec)
    assert task_definition_diff(described, spec) == []
    # the normalizer doesn't hide real differences
    assert task_definition_diff(described, _spec(cpu=512, memory=1024)) == [
        "cpu 256 -> 512",
        "memory 512 -> 1024",
        "container products memory",
    ]
    assert task_definition_diff(described, _spec(db_instance_id="other-db")) == [
        "container products environment"
    ]
    # a revision from before the app read the secret itself (ECS injected it) is replaced
    injected = _as_described(spec)
    app = next(c for c in injected["containerDefinitions"] if c["name"] == "products")
    app["environment"] = [e for e in app["environment"] if e["name"] != "DB_SECRET_ARN"]
    app["secrets"] = [{"name": "DB_PASSWORD", "valueFrom": f"{SECRET_ARN}:password::"}]
    assert task_definition_diff(injected, spec) == ["container products environment, secrets"]
    sidecar_essential = _as_described(spec)
    sidecar = next(
        c for c in sidecar_essential["containerDefinitions"] if c["name"] == XRAY_CONTAINER
    )
    sidecar["essential"] = True
    assert task_definition_diff(sidecar_essential, spec) == [
        f"container {XRAY_CONTAINER} essential"
    ]


def _service(**overrides) -> dict:
    service = {
        "serviceName": "microservices-products-service",
        "status": "ACTIVE",
        "taskDefinition": "arn:aws:ecs:us-east-1:1:task-definition/microservices-products:2",
        "events": [
            {"message": "(service microservices-products-service) has reached a steady state."}
        ],
        "deployments": [
            {
                "id": "ecs-svc/1",
                "status": "PRIMARY",
                "desiredCount": 2,
                "runningCount": 2,
                "rolloutState": "COMPLETED",
            }
        ],
    }
    service.update(overrides)
    return service


def test_deployment_state_steady_rolling_failed_and_rolled_back():
    td = "arn:aws:ecs:us-east-1:1:task-definition/microservices-products:2"
    assert deployment_state(_service(), td)[0] is True
    rolling = _service(
        deployments=[
            {"id": "ecs-svc/2", "status": "PRIMARY", "desiredCount": 2, "runningCount": 1,
             "rolloutState": "IN_PROGRESS"},
            {"id": "ecs-svc/1", "status": "ACTIVE", "desiredCount": 2, "runningCount": 2,
             "rolloutState": "COMPLETED"},
        ]
    )  # fmt: skip
    done, seen = deployment_state(rolling, td)
    assert not done and "1/2 tasks running" in seen
    # moto reports no rollout state for some deployments: counts decide
    no_rollout = _service()
    del no_rollout["deployments"][0]["rolloutState"]
    assert deployment_state(no_rollout, td)[0] is True

    failed = _service(
        events=[{"message": "(service microservices-products-service) deployment failed: tasks failed to start."}],
        deployments=[
            {"id": "ecs-svc/2", "status": "PRIMARY", "desiredCount": 2, "runningCount": 0,
             "rolloutState": "FAILED", "rolloutStateReason": "ECS deployment circuit breaker: tasks failed to start."},
        ],
    )  # fmt: skip
    with pytest.raises(StepError) as err:
        deployment_state(failed, td)
    assert "microservices-products-service" in str(err.value)
    assert "tasks failed to start" in str(err.value)
    with pytest.raises(StepError, match="rolled back"):
        deployment_state(_service(), td.replace(":2", ":3"))


def test_desired_count_is_left_to_auto_scaling_within_its_bounds():
    desired = service_spec(
        service="products",
        task_definition="arn:td:2",
        desired_count=2,
        port=8080,
        subnet_ids=["subnet-1", "subnet-2"],
        security_group_id="sg-1",
        target_group_arn="arn:tg",
    )
    found = {**json.loads(json.dumps(desired)), "desiredCount": 3}
    found["networkConfiguration"]["awsvpcConfiguration"]["subnets"].reverse()
    assert service_changes(found, desired, (2, 4)) == ({}, [], [])
    changes, details, _ = service_changes(found, desired, None)
    assert changes == {"desiredCount": 2} and details == ["desired count 3 -> 2"]
    changes, _, _ = service_changes({**found, "desiredCount": 6}, desired, (2, 4))
    assert changes == {"desiredCount": 2}
    _, _, refused = service_changes({**found, "launchType": "EC2"}, desired, (2, 4))
    assert refused == ["launch type EC2 -> FARGATE"]


# ---------------------------------------------------------------- against moto


def test_ecs_lifecycle(ecs_lab):
    creates = {("ecs-cluster", CLUSTER)}
    creates |= {("log-group", g) for g in LOG_GROUPS}
    creates |= {("task-definition", f) for f in FAMILIES.values()}
    creates |= {("ecs-service", s) for s in SERVICES.values()}
    creates |= {("scalable-target", f"service/{CLUSTER}/{s}") for s in SERVICES.values()}
    creates |= {("scaling-policy", f"{s}-cpu") for s in SERVICES.values()}
    outputs = assert_lifecycle(ecs_lab, "ecs", creates)
    assert outputs["cluster_arn"] == f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}"
    assert outputs["services"] == {
        k: f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{v}" for k, v in SERVICES.items()
    }
    assert outputs["task_definitions"] == {
        k: f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{v}:1" for k, v in FAMILIES.items()
    }
    assert_nothing_left()


def test_ecs_is_as_configured_and_holds_no_password(ecs_lab, tmp_path):
    lab = ecs_lab
    lab.run("apply", ["ecs"])
    ecs = client("ecs")
    images = lab.state.outputs("ecr")["images"]
    tgs = lab.state.outputs("alb")["target_group_arns"]
    roles = lab.state.outputs("iam")
    db = lab.state.outputs("rds")
    private = set(lab.state.outputs("vpc")["private_subnet_ids"])
    ecs_sg = lab.state.outputs("sg")["group_ids"]["microservices-ecs-sg"]
    address = client("rds").describe_db_instances(DBInstanceIdentifier=db["identifier"])[
        "DBInstances"
    ][0]["Endpoint"]["Address"]
    origin_arn = lab.state.outputs("alb")["origin_secret_arn"]
    origin = client("secretsmanager").get_secret_value(SecretId=origin_arn)["SecretString"]

    cluster = ecs.describe_clusters(clusters=[CLUSTER], include=["SETTINGS", "TAGS"])["clusters"][0]
    assert cluster["settings"] == [{"name": "containerInsights", "value": "enabled"}]
    assert cluster["capacityProviders"] == ["FARGATE"]
    assert {"key": "msctl:lab", "value": "microservices"} in cluster["tags"]

    for service, family in FAMILIES.items():
        described = ecs.describe_task_definition(taskDefinition=family, include=["TAGS"])
        td = described["taskDefinition"]
        assert (td["cpu"], td["memory"], td["networkMode"]) == ("256", "512", "awsvpc")
        assert td["requiresCompatibilities"] == ["FARGATE"]
        assert td["executionRoleArn"] == roles["task_execution_role_arn"]
        assert td["taskRoleArn"] == roles["task_role_arn"]
        assert {"key": "msctl:step", "value": "ecs"} in described["tags"]
        containers = {c["name"]: c for c in td["containerDefinitions"]}
        assert set(containers) == {service, XRAY_CONTAINER}
        app, xray = containers[service], containers[XRAY_CONTAINER]
        assert app["image"] == images[service] and "@sha256:" in app["image"]
        assert app["portMappings"] == [{"containerPort": 8080, "protocol": "tcp"}]
        assert app["memory"] + xray["memory"] <= 512
        env = {e["name"]: e["value"] for e in app["environment"]}
        # The instance's identifier, never its endpoint: the tasks find it themselves.
        assert address not in json.dumps(td, default=str)
        assert env == {
            "DB_INSTANCE_ID": "microservices-db",
            "DB_NAME": "postgres",
            "DB_SECRET_ARN": db["secret_arn"],
            "DB_SSLMODE": "require",  # RDS serves TLS: never in clear
            "ORIGIN_SECRET_SHA256": hashlib.sha256(origin.encode()).hexdigest(),
            "AWS_REGION": REGION,
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:2000",
        }
        # Read-only root filesystems; the app's one writable place is the task's scratch /tmp.
        assert app["readonlyRootFilesystem"] is True and xray["readonlyRootFilesystem"] is True
        assert app["mountPoints"] == [
            {"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}
        ]
        assert not xray.get("mountPoints")
        (volume,) = td["volumes"]
        assert volume["name"] == "tmp" and not volume.get("host", {}).get("sourcePath")
        # The app reads the rotating secret itself: nothing for ECS to inject at start.
        assert not app.get("secrets")
        assert app["logConfiguration"] == {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": f"/ecs/{family}",
                "awslogs-region": REGION,
                "awslogs-stream-prefix": "ecs",
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        }
        check = app["healthCheck"]
        assert "http://127.0.0.1:8080/health" in " ".join(check["command"])
        assert (check["interval"], check["retries"], check["startPeriod"]) == (15, 3, 30)
        assert xray["image"] == XRAY_IMAGE and xray["essential"] is False
        assert xray["portMappings"] == [{"containerPort": 2000, "protocol": "udp"}]
        assert xray["logConfiguration"]["options"]["awslogs-group"] == f"/ecs/{family}"

    services = ecs.describe_services(
        cluster=CLUSTER, services=list(SERVICES.values()), include=["TAGS"]
    )["services"]
    assert len(services) == 2
    for svc in services:
        name = next(k for k, v in SERVICES.items() if v == svc["serviceName"])
        assert svc["status"] == "ACTIVE" and svc["launchType"] == "FARGATE"
        assert svc["desiredCount"] == 2
        assert svc["taskDefinition"].endswith(f"task-definition/{FAMILIES[name]}:1")
        vpc = svc["networkConfiguration"]["awsvpcConfiguration"]
        assert set(vpc["subnets"]) == private
        assert vpc["securityGroups"] == [ecs_sg] and vpc["assignPublicIp"] == "DISABLED"
        assert svc["loadBalancers"] == [
            {"targetGroupArn": tgs[name], "containerName": name, "containerPort": 8080}
        ]
        deployment = svc["deploymentConfiguration"]
        assert deployment["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert (deployment["minimumHealthyPercent"], deployment["maximumPercent"]) == (100, 200)
        assert svc["healthCheckGracePeriodSeconds"] == 60
        assert svc["propagateTags"] == "SERVICE"
        assert svc.get("enableExecuteCommand", False) is False  # moto leaves it out
        assert {"key": "msctl:name", "value": svc["serviceName"]} in svc["tags"]

    targets = {t["ResourceId"]: t for t in scalable_targets()}
    assert set(targets) == {f"service/{CLUSTER}/{s}" for s in SERVICES.values()}
    for target in targets.values():
        assert target["ScalableDimension"] == SCALABLE_DIMENSION
        assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 4)
    policies = client("application-autoscaling").describe_scaling_policies(ServiceNamespace="ecs")[
        "ScalingPolicies"
    ]
    assert {p["PolicyName"] for p in policies} == {f"{s}-cpu" for s in SERVICES.values()}
    for policy in policies:
        tracking = policy["TargetTrackingScalingPolicyConfiguration"]
        assert policy["PolicyType"] == "TargetTrackingScaling"
        assert tracking["TargetValue"] == 70.0
        assert tracking["PredefinedMetricSpecification"] == {
            "PredefinedMetricType": "ECSServiceAverageCPUUtilization"
        }

    groups = client("logs").describe_log_groups(logGroupNamePrefix="/ecs/")["logGroups"]
    assert {(g["logGroupName"], g.get("retentionInDays")) for g in groups} == {
        (g, 7) for g in LOG_GROUPS
    }

    assert_no_password(tmp_path, lab)
    # The services get the origin secret's hash, never the secret.
    revisions = [
        json.dumps(ecs.describe_task_definition(taskDefinition=f), default=str)
        for f in FAMILIES.values()
    ]
    state = [p.read_text() for p in (tmp_path / "state").rglob("*") if p.is_file()]
    assert not [text for text in [*revisions, *state] if origin in text]


def test_new_revision_only_when_the_definition_changes(ecs_lab, tmp_path):
    lab = ecs_lab
    lab.run("apply", ["ecs"])
    lab.recorder.calls.clear()
    again = only(lab, "apply")
    assert again.results["ecs"].status is Status.NOCHANGE
    assert ("ecs", "RegisterTaskDefinition") not in lab.recorder.calls

    bigger = load_config(
        ROOT / "config" / "lab.yaml",
        [
            f"ecs.services.{s}.{k}={v}"
            for s in FAMILIES
            for k, v in (("cpu", 512), ("memory", 1024))
        ],
    )
    changed = Lab(bigger, tmp_path / "state")
    plan = only(changed, "plan")
    assert {(c.action, c.kind, c.name) for c in changed.changes(plan, "ecs")} == {
        *{("update", "task-definition", f) for f in FAMILIES.values()},
        *{("update", "ecs-service", s) for s in SERVICES.values()},
    }
    only(changed, "apply")
    registered = [c for c in changed.recorder.calls if c == ("ecs", "RegisterTaskDefinition")]
    assert len(registered) == 2  # one new revision per family
    ecs = client("ecs")
    for service, family in FAMILIES.items():
        assert len(active_revisions(family)) == 2
        td = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
        assert (td["revision"], td["cpu"], td["memory"]) == (2, "512", "1024")
        svc = ecs.describe_services(cluster=CLUSTER, services=[SERVICES[service]])["services"][0]
        assert svc["taskDefinition"] == td["taskDefinitionArn"]
    changed.recorder.calls.clear()
    only(changed, "apply")
    assert ("ecs", "RegisterTaskDefinition") not in changed.recorder.calls
    assert_no_password(tmp_path, lab, changed)

    # auto scaling moved the count within 2..4: left alone; outside it: restored
    products = SERVICES["products"]
    ecs.update_service(cluster=CLUSTER, service=products, desiredCount=3)
    assert changed.changes(only(changed, "plan"), "ecs") == []
    ecs.update_service(cluster=CLUSTER, service=products, desiredCount=6)
    plan = only(changed, "plan")
    assert [(c.kind, c.name, c.detail) for c in changed.changes(plan, "ecs")] == [
        ("ecs-service", products, "desired count 6 -> 2")
    ]
    only(changed, "apply")
    svc = ecs.describe_services(cluster=CLUSTER, services=[products])["services"][0]
    assert svc["desiredCount"] == 2

    # a rollout the circuit breaker stopped fails the step, naming the service and the cause
    def failed_rollout(parsed, **_kwargs):
        for svc in parsed.get("services", []):
            if svc["serviceName"] == products:
                svc["deployments"][0].update(
                    rolloutState="FAILED",
                    rolloutStateReason="ECS deployment circuit breaker: tasks failed to start.",
                )
                svc["events"] = [{"message": "task stopped: CannotPullContainerError"}]

    changed.ctx.clients.ecs.meta.events.register("after-call.ecs.DescribeServices", failed_rollout)
    failed = runner.run(changed.ctx, changed.steps, "apply", selected=["ecs"]).results["ecs"]
    assert failed.status is Status.FAILED
    assert products in failed.error and "CannotPullContainerError" in failed.error
    changed.ctx.clients.ecs.meta.events.unregister(
        "after-call.ecs.DescribeServices", failed_rollout
    )

    only(changed, "destroy")
    assert_nothing_left()


def test_foreign_cluster_and_family_are_neither_adopted_nor_deleted(ecs_lab):
    """A same-named cluster without the lab's tag stops `up`; `down` leaves it, its service
    and that service's scalable target alone. So for another lab's task definition family."""
    lab = ecs_lab
    lab.run("apply", [s for s in runner.select(lab.steps, ["ecs"], "apply") if s != "ecs"])
    ecs, aas = client("ecs"), client("application-autoscaling")
    container = [{"name": "app", "image": "nginx", "memory": 128}]
    ecs.register_task_definition(family="someone-else", containerDefinitions=container)
    arn = ecs.create_cluster(clusterName=CLUSTER)["cluster"]["clusterArn"]
    ecs.create_service(
        cluster=CLUSTER, serviceName="theirs", taskDefinition="someone-else:1", desiredCount=1
    )
    theirs = f"service/{CLUSTER}/theirs"
    aas.register_scalable_target(
        ServiceNamespace="ecs",
        ResourceId=theirs,
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=1,
        MaxCapacity=2,
    )

    def notes() -> list[str]:
        return [e.message for e in lab.events if e.kind == "note"]

    up = runner.run(lab.ctx, lab.steps, "apply", selected=["ecs"]).results["ecs"]
    assert up.status is Status.FAILED
    assert up.error == (
        f"ecs-cluster {CLUSTER} ({arn}) exists but isn't lab microservices's: "
        "it has no msctl:lab tag"
    )
    only(lab, "destroy")
    assert (
        f"ecs-cluster {CLUSTER} ({arn}) isn't lab microservices's (it has no msctl:lab tag): left alone"
        in notes()
    )
    assert ecs.describe_clusters(clusters=[CLUSTER])["clusters"][0]["status"] == "ACTIVE"
    assert (
        ecs.describe_services(cluster=CLUSTER, services=["theirs"])["services"][0]["status"]
        == "ACTIVE"
    )
    assert [t["ResourceId"] for t in scalable_targets()] == [theirs]

    aas.deregister_scalable_target(
        ServiceNamespace="ecs", ResourceId=theirs, ScalableDimension=SCALABLE_DIMENSION
    )
    ecs.delete_service(cluster=CLUSTER, service="theirs", force=True)
    ecs.delete_cluster(cluster=CLUSTER)
    family = FAMILIES["products"]
    other = ecs.register_task_definition(
        family=family, containerDefinitions=container, tags=[{"key": "msctl:lab", "value": "other"}]
    )["taskDefinition"]["taskDefinitionArn"]
    up = runner.run(lab.ctx, lab.steps, "apply", selected=["ecs"]).results["ecs"]
    assert up.status is Status.FAILED
    assert up.error == (
        f"task-definition {family} ({other}) exists but isn't lab microservices's: "
        "it is tagged msctl:lab=other"
    )
    only(lab, "destroy")
    assert (
        f"task-definition {family} ({other}) isn't lab microservices's (it is tagged msctl:lab=other): left alone"
        in notes()
    )
    assert active_revisions(family) == [other]
    assert active_revisions(FAMILIES["orders"]) == []
    assert live_services() == [] and scalable_targets() == []
    assert client("logs").describe_log_groups(logGroupNamePrefix="/ecs/")["logGroups"] == []


def test_down_removes_the_log_groups_container_insights_wrote_for_the_labs_cluster(lab):
    """AWS writes /aws/ecs/containerinsights/<cluster>/performance itself, untagged."""
    lab.run("apply", ["ecs"])
    logs = boto3.client("logs", region_name="us-east-1")
    logs.create_log_group(
        logGroupName="/aws/ecs/containerinsights/microservices-cluster/performance"
    )
    logs.create_log_group(logGroupName="/aws/ecs/containerinsights/someone-elses/performance")
    lab.run("destroy", ["ecs"])
    left = [
        g["logGroupName"]
        for g in logs.describe_log_groups(logGroupNamePrefix="/aws/ecs/")["logGroups"]
    ]
    assert left == ["/aws/ecs/containerinsights/someone-elses/performance"]
