"""The whole lab under the strict AWS layer (tests/support/strict.py): every registered step
applied, verified, applied again without a change, and destroyed, while AWS's deletion rules
are enforced and faults (throttling, ids not yet visible, roles not yet assumable,
dependencies still draining, states that lag, latency) are injected. Then nothing of the
lab is left, asked of each service directly.

Retries really happen (botocore's standard mode for throttling, `run.retry` for the rest);
only their sleeps are scaled down here, so the test stays fast with hundreds of faults."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError

from msctl.config import load_config
from msctl.engine.model import Status
from tests.support.inventory import count, duplicates, inventory
from tests.support.strict import Faults, StrictAws, scaled_sleeps

from .conftest import ROOT

SEED = 21
REGION = "us-east-1"
SLEEP_SCALE = 0.1
# Every fault kind must fire at least this often in one lifecycle.
AT_LEAST = 3
FAULT_KINDS = (
    "throttle",
    "not_found",
    "not_found_write",
    "bucket_tags_denied",
    "role_propagation",
    "dependency_drain",
    "state_lag",
    "apigw_rate",  # the second up's CreateRestApi and CreateDeployment, second down's delete
    "delay",
)


@pytest.fixture
def lab_config():
    """The lab as configured, with a domain so the route53 step takes part too."""
    return load_config(ROOT / "config" / "lab.yaml", ["route53.domain=example.com"])


@pytest.fixture
def strict_lab(lab, monkeypatch):
    # moto issues a DNS-validated certificate once it is this old (default 60 s).
    monkeypatch.setattr("moto.settings.ACM_VALIDATION_WAIT", 0)
    scaled_sleeps(monkeypatch, SLEEP_SCALE)
    strict = StrictAws(seed=SEED, faults=Faults.busy()).install(lab.ctx.session)
    return lab, strict


def look(config):
    found = inventory(lambda service: boto3.client(service, region_name=REGION), config)
    # DB parameter groups (the rds step's newest kind), asked of RDS directly likewise.
    rds = boto3.client("rds", region_name=REGION)
    for group in rds.describe_db_parameter_groups()["DBParameterGroups"]:
        name = group["DBParameterGroupName"]
        tags = rds.list_tags_for_resource(ResourceName=group["DBParameterGroupArn"])["TagList"]
        if {"Key": "msctl:lab", "Value": config.lab} in tags:
            found.setdefault("db-parameter-group", {}).setdefault(name, []).append(name)
    return found


def wrong_order_calls(lab) -> dict[str, str]:
    """Deletes in the wrong order, through the lab's own (hooked) clients: each is refused
    with AWS's error, and changes nothing."""
    clients = lab.ctx.clients
    net = lab.state.outputs("vpc")
    nat = lab.state.outputs("nat")
    sg = lab.state.outputs("sg")["group_ids"]
    cfg = lab.config
    calls = {
        "release the NAT's EIP": lambda: clients.ec2.release_address(
            AllocationId=nat["elastic_ip_allocation_id"]
        ),
        "detach the internet gateway": lambda: clients.ec2.detach_internet_gateway(
            InternetGatewayId=net["internet_gateway_id"], VpcId=net["vpc_id"]
        ),
        "delete a private subnet": lambda: clients.ec2.delete_subnet(
            SubnetId=net["private_subnet_ids"][0]
        ),
        "delete the RDS security group": lambda: clients.ec2.delete_security_group(
            GroupId=sg[cfg.rds.security_group]
        ),
        "delete the DB subnet group": lambda: clients.rds.delete_db_subnet_group(
            DBSubnetGroupName=cfg.rds.subnet_group
        ),
        "delete the DB without a snapshot choice": lambda: clients.rds.delete_db_instance(
            DBInstanceIdentifier=cfg.rds.identifier
        ),
        "delete the enabled distribution": lambda: clients.cloudfront.delete_distribution(
            Id=lab.state.outputs("cloudfront")["distribution_id"], IfMatch="*"
        ),
        "delete the cluster with its services": lambda: clients.ecs.delete_cluster(
            cluster=cfg.ecs.cluster
        ),
        "delete the certificate CloudFront serves": lambda: clients.get(
            "acm", region=REGION
        ).delete_certificate(CertificateArn=lab.state.outputs("route53")["certificate_arn"]),
    }
    refused = {}
    for what, call in calls.items():
        with pytest.raises(ClientError) as raised:
            call()
        refused[what] = raised.value.response["Error"]["Code"]
    return refused


def test_the_whole_lab_survives_strict_aws(strict_lab):
    lab, strict = strict_lab

    applied = lab.run("apply", None)
    assert {r.status for r in applied.results.values()} <= {
        Status.COMPLETE,
        Status.NOCHANGE,
        Status.UNSUPPORTED,
    }
    built = look(lab.config)
    assert duplicates(built) == {}
    # Every write of the first up, counted per target and content: none was made twice.
    first_up = dict(strict.writes)
    assert strict.duplicate_writes() == {}
    scaling = [k for k in first_up if k.startswith("application-autoscaling.PutScalingPolicy ")]
    assert len(scaling) == len(lab.config.ecs.services)

    # The layer is live on the lab's clients: the wrong order is refused as AWS refuses it.
    assert wrong_order_calls(lab) == {
        "release the NAT's EIP": "AuthFailure",
        "detach the internet gateway": "DependencyViolation",
        "delete a private subnet": "DependencyViolation",
        "delete the RDS security group": "DependencyViolation",
        "delete the DB subnet group": "InvalidDBSubnetGroupStateFault",
        "delete the DB without a snapshot choice": "InvalidParameterCombination",
        "delete the enabled distribution": "DistributionNotDisabled",
        "delete the cluster with its services": "ClusterContainsServicesException",
        "delete the certificate CloudFront serves": "ResourceInUseException",
    }
    probed = dict(strict.rules)

    checks = lab.run("verify", None)
    bad = [(n, c) for n, r in checks.results.items() for c in r.checks if not c.ok]
    assert not bad, bad

    lab.recorder.calls.clear()
    again = lab.run("apply", None)
    assert {n: r.changes for n, r in again.results.items() if r.changes} == {}
    assert lab.recorder.mutating() == []

    # What AWS itself writes for the lab: Container Insights' log group of the cluster.
    logs = boto3.client("logs", region_name=REGION)
    insights = f"/aws/ecs/containerinsights/{lab.config.ecs.cluster}/performance"
    logs.create_log_group(logGroupName=insights)

    lab.run("destroy", None)
    left = look(lab.config)
    assert left == {}
    assert logs.describe_log_groups(logGroupNamePrefix=insights)["logGroups"] == []
    # The account is as msctl found it: the API Gateway logging setting unset again.
    apigw = boto3.client("apigateway", region_name=REGION)
    assert not apigw.get_account().get("cloudwatchRoleArn")

    # The same lab again: nothing AWS remembers from the first one (a CloudFront caller
    # reference, an ACM idempotency token) stands in its way, and it goes away again.
    again = lab.run("apply", None)
    assert {r.status for r in again.results.values()} <= {
        Status.COMPLETE,
        Status.NOCHANGE,
        Status.UNSUPPORTED,
    }
    assert duplicates(look(lab.config)) == {}
    lab.run("destroy", None)
    assert look(lab.config) == {}

    report = strict.report()
    print(f"strict layer: {report}; built {count(built)} resources; left {count(left)}")
    fired = {kind: report["faults"].get(kind, 0) for kind in FAULT_KINDS}
    # A bucket is created once per up: the denied tagging fires once per up.
    least = {kind: 2 if kind == "bucket_tags_denied" else AT_LEAST for kind in FAULT_KINDS}
    assert {kind: n for kind, n in fired.items() if n < least[kind]} == {}
    # In the steps' own order no rule AWS enforces was ever hit: only the probes above.
    assert report["rules"] == probed
