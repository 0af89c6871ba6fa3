"""The strict AWS layer (tests/support/strict.py): each rule fires in the wrong order and not
in the right one; each fault is injected in the service's own shape, botocore retries the
throttling ones, and the same seed injects the same faults."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.retries.standard import ExponentialBackoff

from msctl.aws.clients import CLIENT_CONFIG
from tests.support.strict import ROLE_NOT_ASSUMABLE, Faults, StrictAws

REGION = "us-east-1"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)
POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}],
    }
)


class World:
    """A hooked session (what msctl uses) and moto's view through plain clients."""

    def __init__(self, faults: Faults | None = None, seed: int = 1):
        self.session = boto3.Session(region_name=REGION)
        self.strict = StrictAws(seed=seed, faults=faults).install(self.session)
        self._clients: dict[str, object] = {}

    def __getattr__(self, service: str):
        if service.startswith("_"):
            raise AttributeError(service)
        name = {"elb": "elbv2", "lam": "lambda"}.get(service, service)
        if name not in self._clients:
            self._clients[name] = self.session.client(name, config=CLIENT_CONFIG)
        return self._clients[name]

    def network(self) -> dict:
        vpc = self.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [
            self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=az)[
                "Subnet"
            ]["SubnetId"]
            for i, az in ((1, "us-east-1a"), (2, "us-east-1b"))
        ]
        igw = self.ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        self.ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
        sg = self.ec2.create_security_group(GroupName="a", Description="a", VpcId=vpc)["GroupId"]
        return {"vpc": vpc, "subnets": subnets, "igw": igw, "sg": sg}

    def nat(self, subnet: str) -> tuple[str, str]:
        allocation = self.ec2.allocate_address(Domain="vpc")["AllocationId"]
        nat = self.ec2.create_nat_gateway(SubnetId=subnet, AllocationId=allocation)
        return nat["NatGateway"]["NatGatewayId"], allocation

    def database(self, net: dict, identifier: str = "db") -> None:
        self.rds.create_db_subnet_group(
            DBSubnetGroupName="dbs", DBSubnetGroupDescription="d", SubnetIds=net["subnets"]
        )
        self.rds.create_db_instance(
            DBInstanceIdentifier=identifier,
            Engine="postgres",
            DBInstanceClass="db.t3.micro",
            AllocatedStorage=20,
            MasterUsername="postgres",
            MasterUserPassword="not-a-real-one-1",
            DBSubnetGroupName="dbs",
            VpcSecurityGroupIds=[net["sg"]],
        )

    def load_balancer(self, net: dict) -> str:
        return self.elb.create_load_balancer(
            Name="lb", Subnets=net["subnets"], SecurityGroups=[net["sg"]]
        )["LoadBalancers"][0]["LoadBalancerArn"]

    def service(self, net: dict) -> None:
        self.ecs.create_cluster(clusterName="c")
        self.ecs.register_task_definition(
            family="f",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[{"name": "app", "image": "app", "memory": 512}],
        )
        self.ecs.create_service(
            cluster="c",
            serviceName="s",
            taskDefinition="f",
            desiredCount=1,
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": [net["subnets"][0]],
                    "securityGroups": [net["sg"]],
                }
            },
        )


@pytest.fixture
def world(aws):
    return World()


def code_of(call) -> str | None:
    try:
        call()
    except ClientError as exc:
        return exc.response["Error"]["Code"]
    return None


# ---------------------------------------------------------------- the rules


def test_an_eip_is_released_only_after_its_nat_gateway_is_gone(world):
    net = world.network()
    nat, allocation = world.nat(net["subnets"][0])
    assert code_of(lambda: world.ec2.release_address(AllocationId=allocation)) == "AuthFailure"
    world.ec2.delete_nat_gateway(NatGatewayId=nat)
    assert code_of(lambda: world.ec2.release_address(AllocationId=allocation)) is None
    assert world.strict.rules == {"ec2.ReleaseAddress AuthFailure": 1}


def test_the_gateway_detaches_only_without_mapped_public_addresses(world):
    net = world.network()
    detach = lambda: world.ec2.detach_internet_gateway(  # noqa: E731
        InternetGatewayId=net["igw"], VpcId=net["vpc"]
    )
    nat, allocation = world.nat(net["subnets"][0])
    assert code_of(detach) == "DependencyViolation"
    world.ec2.delete_nat_gateway(NatGatewayId=nat)
    world.ec2.release_address(AllocationId=allocation)
    lb = world.load_balancer(net)  # internet-facing: public addresses in the VPC
    assert code_of(detach) == "DependencyViolation"
    world.elb.delete_load_balancer(LoadBalancerArn=lb)
    assert code_of(detach) is None
    assert world.strict.rules == {"ec2.DetachInternetGateway DependencyViolation": 2}


def test_a_security_group_goes_only_when_nothing_uses_it(world):
    net = world.network()
    sg = net["sg"]
    delete = lambda: world.ec2.delete_security_group(GroupId=sg)  # noqa: E731
    other = world.ec2.create_security_group(GroupName="b", Description="b", VpcId=net["vpc"])
    rule = {
        "IpProtocol": "tcp",
        "FromPort": 80,
        "ToPort": 80,
        "UserIdGroupPairs": [{"GroupId": sg}],
    }
    world.ec2.authorize_security_group_ingress(GroupId=other["GroupId"], IpPermissions=[rule])
    assert code_of(delete) == "DependencyViolation"  # another group's rule names it
    world.ec2.revoke_security_group_ingress(GroupId=other["GroupId"], IpPermissions=[rule])

    lb = world.load_balancer(net)
    assert code_of(delete) == "DependencyViolation"
    world.elb.delete_load_balancer(LoadBalancerArn=lb)

    world.database(net)
    assert code_of(delete) == "DependencyViolation"
    world.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)

    world.service(net)
    assert code_of(delete) == "DependencyViolation"
    world.ecs.delete_service(cluster="c", service="s", force=True)

    assert code_of(delete) is None
    assert world.strict.rules == {"ec2.DeleteSecurityGroup DependencyViolation": 4}


def test_a_subnet_goes_only_when_nothing_is_in_it(world):
    net = world.network()
    subnet = net["subnets"][0]
    delete = lambda: world.ec2.delete_subnet(SubnetId=subnet)  # noqa: E731
    nat, allocation = world.nat(subnet)
    assert code_of(delete) == "DependencyViolation"
    world.ec2.delete_nat_gateway(NatGatewayId=nat)  # moto keeps its interface; AWS doesn't
    world.ec2.release_address(AllocationId=allocation)

    lb = world.load_balancer(net)
    assert code_of(delete) == "DependencyViolation"
    world.elb.delete_load_balancer(LoadBalancerArn=lb)

    world.database(net)
    assert code_of(delete) == "DependencyViolation"
    world.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)

    world.service(net)
    assert code_of(delete) == "DependencyViolation"
    world.ecs.delete_service(cluster="c", service="s", force=True)

    world.ec2.create_network_interface(SubnetId=subnet)
    assert code_of(delete) == "DependencyViolation"
    eni = world.ec2.describe_network_interfaces(
        Filters=[{"Name": "subnet-id", "Values": [subnet]}]
    )["NetworkInterfaces"]
    for interface in eni:
        if interface["NetworkInterfaceId"] not in world.strict._dead_nat_enis():
            world.ec2.delete_network_interface(NetworkInterfaceId=interface["NetworkInterfaceId"])

    assert code_of(delete) is None
    assert world.strict.rules == {"ec2.DeleteSubnet DependencyViolation": 5}


def test_a_db_subnet_group_goes_after_its_instance(world):
    net = world.network()
    world.database(net)
    delete = lambda: world.rds.delete_db_subnet_group(DBSubnetGroupName="dbs")  # noqa: E731
    assert code_of(delete) == "InvalidDBSubnetGroupStateFault"
    world.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)
    assert code_of(delete) is None


def test_a_db_instance_delete_needs_a_snapshot_choice(world):
    world.database(world.network())
    no_choice = lambda: world.rds.delete_db_instance(DBInstanceIdentifier="db")  # noqa: E731
    assert code_of(no_choice) == "InvalidParameterCombination"
    assert (
        code_of(
            lambda: world.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)
        )
        is None
    )


def distribution_config(enabled: bool = True) -> dict:
    return {
        "CallerReference": "ref",
        "Comment": "",
        "Enabled": enabled,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "o",
                    "DomainName": "example.com",
                    "CustomOriginConfig": {
                        "HTTPPort": 80,
                        "HTTPSPort": 443,
                        "OriginProtocolPolicy": "https-only",
                    },
                }
            ],
        },
        "DefaultCacheBehavior": {
            "TargetOriginId": "o",
            "ViewerProtocolPolicy": "allow-all",
            "CachePolicyId": "658327ea-f89d-4fab-a63d-7e88639e58f6",
        },
    }


def test_a_distribution_goes_only_once_its_disable_has_deployed(aws):
    w = World(faults=Faults(state_lag=1.0, lasts=(2, 2)))
    cf = w.cloudfront
    dist = cf.create_distribution(DistributionConfig=distribution_config())["Distribution"]
    delete = lambda: cf.delete_distribution(  # noqa: E731
        Id=dist["Id"], IfMatch=cf.get_distribution_config(Id=dist["Id"])["ETag"]
    )
    assert code_of(delete) == "DistributionNotDisabled"  # enabled
    current = cf.get_distribution_config(Id=dist["Id"])
    cf.update_distribution(
        Id=dist["Id"],
        IfMatch=current["ETag"],
        DistributionConfig={**current["DistributionConfig"], "Enabled": False},
    )
    assert code_of(delete) == "DistributionNotDisabled"  # the disable is still deploying
    statuses = [cf.get_distribution(Id=dist["Id"])["Distribution"]["Status"] for _ in range(3)]
    assert statuses == ["InProgress", "InProgress", "Deployed"]
    assert code_of(delete) is None
    assert w.strict.rules == {"cloudfront.DeleteDistribution DistributionNotDisabled": 2}
    assert code_of(lambda: cf.get_distribution(Id=dist["Id"])) == "NoSuchDistribution"


def test_a_certificate_goes_once_cloudfront_let_go_of_it(aws):
    w = World(faults=Faults(state_lag=1.0, lasts=(1, 1)))
    cf = w.cloudfront
    arn = w.acm.request_certificate(DomainName="api.example.com")["CertificateArn"]
    config = {
        **distribution_config(),
        "Aliases": {"Quantity": 1, "Items": ["api.example.com"]},
        "ViewerCertificate": {"ACMCertificateArn": arn, "SSLSupportMethod": "sni-only"},
    }
    dist = cf.create_distribution(DistributionConfig=config)["Distribution"]["Id"]
    delete = lambda: w.acm.delete_certificate(CertificateArn=arn)  # noqa: E731
    assert code_of(delete) == "ResourceInUseException"  # the distribution serves it
    current = cf.get_distribution_config(Id=dist)
    cf.update_distribution(
        Id=dist,
        IfMatch=current["ETag"],
        DistributionConfig={
            **current["DistributionConfig"],
            "Aliases": {"Quantity": 0},
            "ViewerCertificate": {"CloudFrontDefaultCertificate": True},
        },
    )
    assert code_of(delete) == "ResourceInUseException"  # until the update has deployed
    assert cf.get_distribution(Id=dist)["Distribution"]["Status"] == "InProgress"
    assert cf.get_distribution(Id=dist)["Distribution"]["Status"] == "Deployed"
    assert code_of(delete) is None
    assert w.strict.rules == {"acm.DeleteCertificate ResourceInUseException": 2}


def test_a_policy_goes_only_when_detached_and_moto_guards_roles(world):
    iam = world.iam
    iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)
    arn = iam.create_policy(
        PolicyName="p",
        PolicyDocument=POLICY,
    )["Policy"]["Arn"]
    iam.attach_role_policy(RoleName="r", PolicyArn=arn)
    assert code_of(lambda: iam.delete_policy(PolicyArn=arn)) == "DeleteConflict"
    # moto refuses a role with policies by itself (no rule needed): attached, then inline.
    assert code_of(lambda: iam.delete_role(RoleName="r")) == "DeleteConflict"
    iam.detach_role_policy(RoleName="r", PolicyArn=arn)
    iam.put_role_policy(RoleName="r", PolicyName="i", PolicyDocument=POLICY)
    assert code_of(lambda: iam.delete_role(RoleName="r")) == "DeleteConflict"
    iam.delete_role_policy(RoleName="r", PolicyName="i")
    assert code_of(lambda: iam.delete_policy(PolicyArn=arn)) is None
    assert code_of(lambda: iam.delete_role(RoleName="r")) is None
    assert world.strict.rules == {"iam.DeletePolicy DeleteConflict": 1}


def test_a_cluster_goes_only_without_active_services(world):
    world.service(world.network())
    delete = lambda: world.ecs.delete_cluster(cluster="c")  # noqa: E731
    assert code_of(delete) == "ClusterContainsServicesException"
    world.ecs.delete_service(cluster="c", service="s", force=True)
    assert code_of(delete) is None


# ---------------------------------------------------------------- the faults


THROTTLED = [
    ("ec2", lambda c: c.describe_vpcs(), "RequestLimitExceeded"),
    ("iam", lambda c: c.list_roles(), "Throttling"),
    ("dynamodb", lambda c: c.list_tables(), "ThrottlingException"),
    ("lambda", lambda c: c.list_functions(), "TooManyRequestsException"),
    ("apigateway", lambda c: c.get_rest_apis(), "TooManyRequestsException"),
    ("s3", lambda c: c.list_buckets(), "SlowDown"),
    ("cloudfront", lambda c: c.list_distributions(), "Throttling"),
]


def test_throttling_answers_in_each_protocol_and_botocore_retries_it(aws, monkeypatch):
    # botocore's own retry decides; only its backoff sleep is skipped here.
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda _self, _context: 0.0)
    once = Config(retries={"mode": "standard", "max_attempts": 1})
    for service, call, code in THROTTLED:
        w = World(faults=Faults(throttle=1.0, max_throttles=1))
        retried = call(w.session.client(service, config=CLIENT_CONFIG))
        assert retried["ResponseMetadata"]["RetryAttempts"] == 1, service
        assert w.strict.faults == {"throttle": 1}, service

        # Past botocore's attempts the throttling error itself surfaces, parsed.
        w = World(faults=Faults(throttle=1.0, max_throttles=9))
        with pytest.raises(ClientError) as raised:
            call(w.session.client(service, config=once))
        assert raised.value.response["Error"]["Code"] == code, service


def test_a_throttled_create_never_reaches_moto(aws, monkeypatch):
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda _self, _context: 0.0)
    w = World(faults=Faults(throttle=1.0, max_throttles=2))
    w.ec2.create_vpc(CidrBlock="10.9.0.0/16")
    assert w.strict.faults == {"throttle": 2}
    vpcs = boto3.client("ec2", region_name=REGION).describe_vpcs()["Vpcs"]
    assert [v["CidrBlock"] for v in vpcs].count("10.9.0.0/16") == 1


def test_a_new_id_is_not_visible_for_a_few_describes(aws):
    w = World(faults=Faults(not_found=1.0, lasts=(2, 2)))
    vpc = w.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    describe = lambda: w.ec2.describe_vpcs(VpcIds=[vpc])  # noqa: E731
    assert [code_of(describe) for _ in range(3)] == [
        "InvalidVpcID.NotFound",
        "InvalidVpcID.NotFound",
        None,
    ]
    assert w.strict.faults == {"not_found": 2}


def test_a_new_id_refuses_the_writes_that_name_it_for_a_while(aws):
    w = World(faults=Faults(not_found_write=1.0, lasts=(2, 2)))
    vpc = w.ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = w.ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    rule = [
        {
            "IpProtocol": "tcp",
            "FromPort": 5432,
            "ToPort": 5432,
            "IpRanges": [{"CidrIp": "10.0.0.0/16"}],
        }
    ]
    authorize = lambda: w.ec2.authorize_security_group_ingress(  # noqa: E731
        GroupId=group, IpPermissions=rule
    )
    assert [code_of(authorize) for _ in range(3)] == [
        "InvalidGroup.NotFound",
        "InvalidGroup.NotFound",
        None,
    ]
    # Reads are not affected by this fault: the group was there all along.
    assert w.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]
    assert w.strict.faults == {"not_found_write": 2}


def test_writes_are_counted_per_target_and_content(aws):
    w = World()
    w.s3.create_bucket(Bucket="counted")
    for _ in range(2):
        w.s3.put_bucket_versioning(Bucket="counted", VersioningConfiguration={"Status": "Enabled"})
    w.s3.put_bucket_versioning(Bucket="counted", VersioningConfiguration={"Status": "Suspended"})
    w.s3.list_buckets()
    # One key per (operation, target, content): the two Enabled writes share one, the list
    # (a read) has none.
    assert sorted((k.split(" ", 1)[0], n) for k, n in w.strict.writes.items()) == [
        ("s3.CreateBucket", 1),
        ("s3.PutBucketVersioning", 1),
        ("s3.PutBucketVersioning", 2),
    ]
    duplicates = w.strict.duplicate_writes()
    assert list(duplicates.values()) == [2]
    assert "Enabled" in next(iter(duplicates))


def test_tags_on_create_bucket_are_denied_and_the_bucket_not_made(aws):
    w = World(faults=Faults(deny_bucket_tags=True))
    tagged = {"Tags": [{"Key": "msctl:lab", "Value": "x"}]}
    denied = lambda: w.s3.create_bucket(  # noqa: E731
        Bucket="tagged", CreateBucketConfiguration=tagged
    )
    assert code_of(denied) == "AccessDenied"
    assert "tagged" not in [b["Name"] for b in w.s3.list_buckets()["Buckets"]]
    w.s3.create_bucket(Bucket="tagged")  # without tags it is allowed
    assert w.strict.faults == {"bucket_tags_denied": 1}


def test_a_new_role_is_not_assumable_by_lambda_at_once(aws):
    w = World(faults=Faults(role_propagation=1.0, lasts=(1, 1)))
    role = w.iam.create_role(RoleName="r", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return 1\n")
    create = lambda: w.lam.create_function(  # noqa: E731
        FunctionName="f",
        Runtime="python3.12",
        Handler="handler.lambda_handler",
        Role=role,
        Code={"ZipFile": code.getvalue()},
    )
    with pytest.raises(ClientError) as raised:
        create()
    assert raised.value.response["Error"] == {
        "Code": "InvalidParameterValueException",
        "Message": ROLE_NOT_ASSUMABLE,
    }
    assert code_of(create) is None
    assert w.strict.faults == {"role_propagation": 1}


def test_dependencies_drain_for_a_while_after_a_delete(aws):
    w = World(faults=Faults(dependency_drain=1.0, lasts=(2, 2)))
    subnet = w.network()["subnets"][0]
    delete = lambda: w.ec2.delete_subnet(SubnetId=subnet)  # noqa: E731
    assert [code_of(delete) for _ in range(3)] == [
        "DependencyViolation",
        "DependencyViolation",
        None,
    ]


def test_state_lags_behind_creates_and_deletes(aws):
    w = World(faults=Faults(state_lag=1.0, lasts=(1, 1)))
    net = w.network()
    nat, _allocation = w.nat(net["subnets"][0])
    describe = lambda: w.ec2.describe_nat_gateways(NatGatewayIds=[nat])["NatGateways"][0]  # noqa: E731
    assert [describe()["State"] for _ in range(2)] == ["pending", "available"]
    w.ec2.delete_nat_gateway(NatGatewayId=nat)
    assert [describe()["State"] for _ in range(2)] == ["deleting", "deleted"]

    w.database(net)
    status = lambda: w.rds.describe_db_instances(DBInstanceIdentifier="db")["DBInstances"][0]  # noqa: E731
    first = status()
    assert first["DBInstanceStatus"] == "creating" and "Endpoint" not in first
    assert status()["DBInstanceStatus"] == "available"
    w.rds.delete_db_instance(DBInstanceIdentifier="db", SkipFinalSnapshot=True)
    # While the instance is still deleting, its subnet group can't go.
    delete_group = lambda: w.rds.delete_db_subnet_group(DBSubnetGroupName="dbs")  # noqa: E731
    assert code_of(delete_group) == "InvalidDBSubnetGroupStateFault"
    assert status()["DBInstanceStatus"] == "deleting"
    assert code_of(status) == "DBInstanceNotFound"
    assert code_of(delete_group) is None
    assert w.strict.faults["state_lag"] == 4


def test_the_same_seed_injects_the_same_faults(aws):
    faults = Faults(not_found=0.5, dependency_drain=0.5, delay=0.5, max_delay=0.001)

    def run(seed: int) -> list:
        w = World(faults=faults, seed=seed)
        for i in range(8):
            vpc = w.ec2.create_vpc(CidrBlock=f"10.{i}.0.0/16")["Vpc"]["VpcId"]
            code_of(lambda v=vpc: w.ec2.describe_vpcs(VpcIds=[v]))
            while code_of(lambda v=vpc: w.ec2.delete_vpc(VpcId=v)) == "DependencyViolation":
                pass
        return [(kind, op) for kind, op, _detail in w.strict.events]

    assert run(3) == run(3)
    assert run(3) != run(4)
