"""The whole lab under the strict layer's timed states (tests/support/timed.py): every create
answers at once, but NAT gateways stay pending, the database creating (no endpoint), the load
balancer provisioning, the services rolling out, the distribution deploying, functions
Pending, changes PENDING and the certificate PENDING_VALIDATION for as long as AWS takes,
scaled down to a fraction of a second per AWS minute; deletes likewise. `up`, `up` again with
nothing to change, and `down` must all succeed, and nothing may be left.

Outcomes only, never durations: the run must have seen the states, and finished waiting for
each resource (up) or its removal (down) before it said it was done."""

from __future__ import annotations

import io
import time
import zipfile

import boto3
import pytest

from msctl.engine.model import Status
from tests.support.inventory import duplicates
from tests.support.strict import StrictAws, scaled_sleeps
from tests.support.timed import Timings

from .test_lab_strict import lab_config, look  # noqa: F401  (the lab with a domain)
from .test_strict_layer import TRUST, World, code_of, distribution_config

SEED = 21
SCALE = 0.25  # real seconds per AWS minute: RDS's 7 minutes take 1.75 s
SLEEP_SCALE = 0.1
OK = {Status.COMPLETE, Status.NOCHANGE, Status.UNSUPPORTED}
# States a lifecycle can't finish without waiting out, each lasting half a second or more
# here (or, for Route 53, many times): a stalled machine still sees them. The shorter ones
# are checked by their outcome below (ready before `up` ended, gone before `down` ended).
MUST_SEE = {
    "nat-gateway pending",
    "db-instance creating",
    "db-instance deleting",
    "ecs-service IN_PROGRESS",
    "distribution InProgress",
    "route53-change PENDING",
    "certificate PENDING_VALIDATION",
}
# The lab works end to end only once these are ready.
NEEDED = (
    "nat-gateway",
    "db-instance",
    "load-balancer",
    "ecs-service",
    "lambda-function",
    "distribution",
    "certificate",
)


@pytest.fixture
def timed_lab(lab, monkeypatch):
    # moto issues a DNS-validated certificate once it is this old: the layer decides instead.
    monkeypatch.setattr("moto.settings.ACM_VALIDATION_WAIT", 0)
    scaled_sleeps(monkeypatch, SLEEP_SCALE)
    strict = StrictAws(seed=SEED, timings=Timings.aws(scale=SCALE)).install(lab.ctx.session)
    return lab, strict


def test_the_whole_lab_waits_for_aws_states(timed_lab):
    lab, strict = timed_lab
    timed = strict.timed

    applied = lab.run("apply", None)
    up_done = time.monotonic()
    assert {r.status for r in applied.results.values()} <= OK
    assert duplicates(look(lab.config)) == {}
    built = [x for x in timed.lives.values() if x.kind in NEEDED]
    assert {x.kind for x in built} == set(NEEDED)
    # `up` said done only after everything the lab needs was ready (a wait that saw it).
    assert [(x.kind, x.id) for x in built if x.ready is None or x.ready > up_done] == []

    checks = lab.run("verify", None)
    assert [(n, c) for n, r in checks.results.items() for c in r.checks if not c.ok] == []

    lab.recorder.calls.clear()
    again = lab.run("apply", None)
    assert {n: r.changes for n, r in again.results.items() if r.changes} == {}
    assert lab.recorder.mutating() == []

    lab.run("destroy", None)
    down_done = time.monotonic()
    assert look(lab.config) == {}
    # Every slow resource was deleted, and `down` waited until AWS had let go of it.
    lives = list(timed.lives.values())
    assert [(x.kind, x.id) for x in lives if x.deleted is None and x.kind in NEEDED] == []
    assert [(x.kind, x.id) for x in lives if x.gone is not None and x.gone > down_done] == []

    report = strict.report()
    print(f"timed layer: {report}")
    assert MUST_SEE - set(report["states"]) == set()
    # Rules may be hit here (a group whose deleted load balancer's interfaces are still in
    # it answers DependencyViolation until they go, as on AWS): the outcomes above say they
    # were waited out.
    timeline = [r for r in timed.timeline() if r["created"] is not None]
    assert [r for r in timeline if r["ready"] is None or r["ready"] < r["created"]] == []
    assert [r for r in timeline if r["deleted"] is not None and r["gone"] < r["deleted"]] == []


# ---------------------------------------------------------------- the states, one by one
# A clock driven by hand (1.0 = one AWS minute): deterministic, and no test sleeps.


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wait(self, minutes: float) -> None:
        self.now += minutes


class TimedWorld(World):
    def __init__(self):
        self.session = boto3.Session(region_name="us-east-1")
        self.strict = StrictAws(timings=Timings.aws(scale=1.0)).install(self.session)
        self.clock = self.strict.timed.clock = Clock()
        self._clients = {}


@pytest.fixture
def w(aws):
    return TimedWorld()


def db_status(w) -> tuple[str, bool]:
    db = w.rds.describe_db_instances(DBInstanceIdentifier="db")["DBInstances"][0]
    return db["DBInstanceStatus"], "Endpoint" in db


def test_a_database_creates_without_an_endpoint_and_refuses_changes_meanwhile(w):
    net = w.network()
    w.database(net)  # answers at once
    assert db_status(w) == ("creating", False)
    modify = lambda: w.rds.modify_db_instance(DBInstanceIdentifier="db", BackupRetentionPeriod=1)  # noqa: E731
    delete = lambda: w.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)  # noqa: E731
    assert code_of(modify) == code_of(delete) == "InvalidDBInstanceState"
    w.clock.wait(6.9)
    assert db_status(w) == ("creating", False)
    w.clock.wait(0.1)
    assert db_status(w) == ("available", True)

    assert code_of(delete) is None
    assert db_status(w) == ("deleting", True)
    listed = w.rds.describe_db_instances()["DBInstances"]
    assert [(d["DBInstanceIdentifier"], d["DBInstanceStatus"]) for d in listed] == [
        ("db", "deleting")
    ]
    assert code_of(lambda: w.database(net)) == "DBInstanceAlreadyExists"
    subnet_group = lambda: w.rds.delete_db_subnet_group(DBSubnetGroupName="dbs")  # noqa: E731
    assert code_of(subnet_group) == "InvalidDBSubnetGroupStateFault"
    w.clock.wait(2.5)
    assert code_of(lambda: db_status(w)) == "DBInstanceNotFound"
    assert code_of(subnet_group) is None
    # The create's answer and two reads showed it creating; two reads showed it deleting.
    assert w.strict.report()["states"] == {"db-instance creating": 3, "db-instance deleting": 2}


def test_services_roll_out_once_their_nat_gateway_is_up_and_drain_when_deleted(w):
    net = w.network()
    tags = [{"ResourceType": "natgateway", "Tags": [{"Key": "msctl:step", "Value": "nat"}]}]
    allocation = w.ec2.allocate_address(Domain="vpc")["AllocationId"]
    nat = w.ec2.create_nat_gateway(
        SubnetId=net["subnets"][1], AllocationId=allocation, TagSpecifications=tags
    )["NatGateway"]
    assert nat["State"] == "pending"
    table = w.ec2.create_route_table(VpcId=net["vpc"])["RouteTable"]["RouteTableId"]
    w.ec2.associate_route_table(RouteTableId=table, SubnetId=net["subnets"][0])
    w.ec2.create_route(
        RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", NatGatewayId=nat["NatGatewayId"]
    )
    w.service(net)  # in subnets[0]: its tasks pull their image through the NAT gateway

    def seen():
        svc = w.ecs.describe_services(cluster="c", services=["s"])["services"][0]
        deployment = svc["deployments"][0]
        return svc["status"], svc["runningCount"], svc["pendingCount"], deployment["rolloutState"]

    def nat_state():
        ids = [nat["NatGatewayId"]]
        return w.ec2.describe_nat_gateways(NatGatewayIds=ids)["NatGateways"][0]["State"]

    assert seen() == ("ACTIVE", 0, 0, "IN_PROGRESS")
    w.clock.wait(2)
    assert (nat_state(), seen()) == ("available", ("ACTIVE", 0, 1, "IN_PROGRESS"))
    w.clock.wait(2.5)
    assert seen() == ("ACTIVE", 1, 0, "COMPLETED")

    w.ecs.delete_service(cluster="c", service="s", force=True)
    assert seen()[0] == "DRAINING"
    assert code_of(lambda: w.service(net)) == "InvalidParameterException"
    assert code_of(lambda: w.ecs.delete_cluster(cluster="c")) == "ClusterContainsServicesException"
    w.clock.wait(1)
    assert seen()[0] == "INACTIVE"
    assert code_of(lambda: w.ecs.delete_cluster(cluster="c")) is None

    w.ec2.delete_nat_gateway(NatGatewayId=nat["NatGatewayId"])
    assert nat_state() == "deleting"
    release = lambda: w.ec2.release_address(AllocationId=allocation)  # noqa: E731
    assert code_of(release) == "AuthFailure"
    w.clock.wait(1)
    assert nat_state() == "deleted"
    assert code_of(release) is None
    nats = [r for r in w.strict.timed.timeline(since=0) if r["kind"] == "nat-gateway"]
    assert [(r["step"], r["created"], r["ready"], r["deleted"], r["gone"]) for r in nats] == [
        ("nat", 0.0, 2.0, 5.5, 6.5)
    ]


def test_a_load_balancer_answers_with_its_dns_name_and_its_interfaces_outlive_it(w):
    net = w.network()
    lb = w.elb.create_load_balancer(Name="lb", Subnets=net["subnets"], SecurityGroups=[net["sg"]])
    created = lb["LoadBalancers"][0]
    assert created["State"]["Code"] == "provisioning" and created["DNSName"]
    arn = created["LoadBalancerArn"]
    group = w.elb.create_target_group(
        Name="tg", Protocol="HTTP", Port=80, VpcId=net["vpc"], TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    forward = [{"Type": "forward", "TargetGroupArn": group}]
    w.elb.create_listener(LoadBalancerArn=arn, Protocol="HTTP", Port=80, DefaultActions=forward)
    w.elb.register_targets(TargetGroupArn=group, Targets=[{"Id": "10.0.1.10"}])

    def state():
        return w.elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"][0]["State"]

    assert state()["Code"] == "provisioning"
    w.clock.wait(3)
    assert state()["Code"] == "active"
    w.elb.delete_load_balancer(LoadBalancerArn=arn)
    assert code_of(state) == "LoadBalancerNotFound"
    subnet = lambda: w.ec2.delete_subnet(SubnetId=net["subnets"][1])  # noqa: E731
    assert code_of(subnet) == "DependencyViolation"
    w.clock.wait(1)
    assert code_of(subnet) is None


def test_a_distribution_deploys_after_each_change_with_a_certificate_once_issued(w):
    zone = w.route53.create_hosted_zone(Name="example.com", CallerReference="z")
    assert zone["ChangeInfo"]["Status"] == "PENDING"
    arn = w.acm.request_certificate(DomainName="example.com", ValidationMethod="DNS")[
        "CertificateArn"
    ]
    cert = lambda: w.acm.describe_certificate(CertificateArn=arn)["Certificate"]  # noqa: E731
    record = cert()["DomainValidationOptions"][0]["ResourceRecord"]
    change = w.route53.change_resource_record_sets(
        HostedZoneId=zone["HostedZone"]["Id"],
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": record["Name"],
                        "Type": "CNAME",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": record["Value"]}],
                    },
                }
            ]
        },
    )["ChangeInfo"]
    assert change["Status"] == "PENDING" and change["Id"] != zone["ChangeInfo"]["Id"]
    status = lambda: w.route53.get_change(Id=change["Id"])["ChangeInfo"]["Status"]  # noqa: E731
    config = {
        **distribution_config(),
        "Aliases": {"Quantity": 1, "Items": ["example.com"]},
        "ViewerCertificate": {"ACMCertificateArn": arn, "SSLSupportMethod": "sni-only"},
    }
    create = lambda: w.cloudfront.create_distribution(DistributionConfig=config)  # noqa: E731
    assert (status(), cert()["Status"], code_of(create)) == (
        "PENDING",
        "PENDING_VALIDATION",
        "InvalidViewerCertificate",
    )
    w.clock.wait(0.5)
    assert (status(), cert()["Status"]) == ("INSYNC", "PENDING_VALIDATION")
    w.clock.wait(2)
    assert cert()["Status"] == "ISSUED"

    dist = create()["Distribution"]
    assert dist["Status"] == "InProgress"
    cf = w.cloudfront
    get = lambda: cf.get_distribution(Id=dist["Id"])["Distribution"]["Status"]  # noqa: E731
    w.clock.wait(3.5)
    assert get() == "Deployed"
    current = cf.get_distribution_config(Id=dist["Id"])
    disabled = {**current["DistributionConfig"], "Enabled": False}
    cf.update_distribution(Id=dist["Id"], IfMatch=current["ETag"], DistributionConfig=disabled)
    delete = lambda: cf.delete_distribution(  # noqa: E731
        Id=dist["Id"], IfMatch=cf.get_distribution_config(Id=dist["Id"])["ETag"]
    )
    assert (get(), code_of(delete)) == ("InProgress", "DistributionNotDisabled")
    w.clock.wait(3.5)
    assert (get(), code_of(delete)) == ("Deployed", None)


def test_a_function_is_pending_then_active_and_takes_one_update_at_a_time(w):
    role = w.iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return 1\n")
    created = w.lam.create_function(
        FunctionName="f",
        Runtime="python3.12",
        Handler="handler.lambda_handler",
        Role=role,
        Code={"ZipFile": code.getvalue()},
    )
    assert (created["State"], created["StateReasonCode"]) == ("Pending", "Creating")
    update = lambda: w.lam.update_function_configuration(FunctionName="f", Timeout=5)  # noqa: E731

    def seen():
        fn = w.lam.get_function(FunctionName="f")["Configuration"]
        return fn["State"], fn.get("LastUpdateStatus")

    assert (seen(), code_of(update)) == (("Pending", None), "ResourceConflictException")
    w.clock.wait(0.1)
    assert (seen(), code_of(update)) == (("Active", "Successful"), None)
    assert (seen(), code_of(update)) == (("Active", "InProgress"), "ResourceConflictException")
    w.clock.wait(0.1)
    assert seen() == ("Active", "Successful")
