"""The sweep after `down`'s walk, against moto: orphans an interrupted run leaves are found by
their tags and removed (with the state file lost), what can't be removed is listed with its
id and hourly cost, and `msctl down` exits 1 for it."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from rich.console import Console

from msctl import report, sweep
from msctl.aws.tags import LAB, as_dict, as_list, ec2_spec
from msctl.cli import main
from msctl.engine.step import StepError

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
LOG_ROLE = "microservices-apigateway-cloudwatch"  # kept by the apigw step and the sweep


def client(service: str, **kwargs):
    return boto3.client(service, region_name=REGION, **kwargs)


# ---------------------------------------------------------------- what AWS reports


def still_tagged(lab: str, **kwargs) -> set[tuple[str, str]]:
    """Everything tagged for the lab, asked of each service directly (not via the sweep)."""

    def c(service):
        return client(service, **kwargs)

    def tagged(tags) -> bool:
        return (tags if isinstance(tags, dict) else as_dict(tags)).get(LAB) == lab

    found: set[tuple[str, str]] = set()
    ec2 = c("ec2")
    f = [{"Name": f"tag:{LAB}", "Values": [lab]}]
    for kind, call, key, ident in (
        ("vpc", ec2.describe_vpcs, "Vpcs", "VpcId"),
        ("subnet", ec2.describe_subnets, "Subnets", "SubnetId"),
        (
            "internet-gateway",
            ec2.describe_internet_gateways,
            "InternetGateways",
            "InternetGatewayId",
        ),
        ("route-table", ec2.describe_route_tables, "RouteTables", "RouteTableId"),
        ("security-group", ec2.describe_security_groups, "SecurityGroups", "GroupId"),
        ("elastic-ip", ec2.describe_addresses, "Addresses", "AllocationId"),
    ):
        found |= {(kind, x[ident]) for x in call(Filters=f)[key]}
    found |= {  # moto ignores DescribeNatGateways' tag filters: checked here
        ("nat-gateway", n["NatGatewayId"])
        for n in ec2.describe_nat_gateways()["NatGateways"]
        if n["State"] not in ("deleted", "deleting") and tagged(n.get("Tags"))
    }
    iam = c("iam")
    found |= {
        ("iam-role", r["RoleName"])
        for r in iam.list_roles()["Roles"]
        if tagged(iam.list_role_tags(RoleName=r["RoleName"])["Tags"])
    }
    ecr = c("ecr")
    found |= {
        ("ecr-repository", r["repositoryName"])
        for r in ecr.describe_repositories()["repositories"]
        if tagged(ecr.list_tags_for_resource(resourceArn=r["repositoryArn"])["tags"])
    }
    logs = c("logs")
    found |= {
        ("log-group", g["logGroupName"])
        for g in logs.describe_log_groups()["logGroups"]
        if tagged(logs.list_tags_log_group(logGroupName=g["logGroupName"])["tags"])
    }
    found |= {
        ("rest-api", a["id"])
        for a in c("apigateway").get_rest_apis()["items"]
        if tagged(a.get("tags") or {})
    }
    ddb = c("dynamodb")
    for name in ddb.list_tables()["TableNames"]:
        table = ddb.describe_table(TableName=name)["Table"]
        if tagged(ddb.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]):
            found.add(("table", name))
    lam = c("lambda")
    found |= {
        ("lambda-function", fn["FunctionName"])
        for fn in lam.list_functions()["Functions"]
        if tagged(lam.list_tags(Resource=fn["FunctionArn"])["Tags"])
    }
    s3 = c("s3")
    for bucket in s3.list_buckets()["Buckets"]:
        try:
            tags = s3.get_bucket_tagging(Bucket=bucket["Name"])["TagSet"]
        except s3.exceptions.ClientError:
            continue
        if tagged(tags):
            found.add(("bucket", bucket["Name"]))
    elb = c("elbv2")
    arns = [lb["LoadBalancerArn"] for lb in elb.describe_load_balancers()["LoadBalancers"]]
    arns += [tg["TargetGroupArn"] for tg in elb.describe_target_groups()["TargetGroups"]]
    for arn in arns:
        if tagged(elb.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]["Tags"]):
            found.add(("elb", arn))
    ecs = c("ecs")
    clusters = ecs.list_clusters()["clusterArns"]
    for cluster in ecs.describe_clusters(clusters=clusters, include=["TAGS"])["clusters"]:
        if cluster["status"] == "ACTIVE" and tagged(
            {t["key"]: t["value"] for t in cluster.get("tags", [])}
        ):
            found.add(("ecs-cluster", cluster["clusterName"]))
        services = ecs.list_services(cluster=cluster["clusterArn"])["serviceArns"]
        if services:
            described = ecs.describe_services(cluster=cluster["clusterArn"], services=services)
            found |= {
                ("ecs-service", s["serviceArn"])
                for s in described["services"]
                if s["status"] == "ACTIVE"
            }
    found |= {
        ("task-definition", arn)
        for arn in ecs.list_task_definitions(status="ACTIVE")["taskDefinitionArns"]
    }
    rds = c("rds")
    found |= {
        ("db-instance", db["DBInstanceIdentifier"])
        for db in rds.describe_db_instances()["DBInstances"]
        if tagged(db.get("TagList"))
    }
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        if tagged(rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]):
            found.add(("db-subnet-group", group["DBSubnetGroupName"]))
    cf = c("cloudfront")
    for dist in cf.list_distributions()["DistributionList"].get("Items", []):
        if tagged(cf.list_tags_for_resource(Resource=dist["ARN"])["Tags"].get("Items")):
            found.add(("distribution", dist["Id"]))
    for oac in cf.list_origin_access_controls()["OriginAccessControlList"].get("Items", []):
        if oac["Name"] == f"{lab}-static-oac":
            found.add(("origin-access-control", oac["Id"]))
    cw = c("cloudwatch")
    found |= {
        ("alarm", a["AlarmName"])
        for a in cw.describe_alarms()["MetricAlarms"]
        if tagged(cw.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"])
    }
    found |= {  # dashboards can't be tagged: the lab's is the one of the config's name
        ("dashboard", d["DashboardName"])
        for d in cw.list_dashboards()["DashboardEntries"]
        if d["DashboardName"] == "microservices-dashboard"
    }
    sns = c("sns")
    found |= {
        ("sns-topic", t["TopicArn"])
        for t in sns.list_topics()["Topics"]
        if tagged(sns.list_tags_for_resource(ResourceArn=t["TopicArn"])["Tags"])
    }
    found |= {
        ("secret", s["ARN"])
        for s in c("secretsmanager").list_secrets()["SecretList"]
        if tagged(s.get("Tags"))
    }
    return found


# ---------------------------------------------------------------- orphans


def make_orphans(lab, vpc_id: str, ecs_sg: str) -> set[tuple[str, str]]:
    """What an interrupted run of an older config leaves: lab-tagged, under names the current
    config doesn't have, so the walk (which deletes what the config names) leaves them."""

    def tags(step: str, name: str) -> dict[str, str]:
        return lab.ctx.tags(step, name)

    ec2 = client("ec2")
    eip = ec2.allocate_address(
        Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", tags("nat", "old-nat-eip"))
    )["AllocationId"]
    sg = ec2.create_security_group(
        GroupName="old-sg",
        Description="an older config's group",
        VpcId=vpc_id,
        TagSpecifications=ec2_spec("security-group", tags("sg", "old-sg")),
    )["GroupId"]
    # It names a group of the lab, and is named by one: the sweep revokes before deleting.
    for group, source in ((sg, ecs_sg), (ecs_sg, sg)):
        ec2.authorize_security_group_ingress(
            GroupId=group,
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 9000,
                    "ToPort": 9000,
                    "UserIdGroupPairs": [{"GroupId": source}],
                }
            ],
        )
    iam = client("iam")
    iam.create_role(
        RoleName="microservices-old-role",
        AssumeRolePolicyDocument=json.dumps(
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
        ),
        Tags=as_list(tags("iam", "microservices-old-role")),
    )
    iam.put_role_policy(
        RoleName="microservices-old-role",
        PolicyName="least-privilege",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
            }
        ),
    )
    client("ecr").create_repository(
        repositoryName="microservices/old", tags=as_list(tags("ecr", "microservices/old"))
    )
    client("logs").create_log_group(
        logGroupName="/ecs/microservices-old", tags=tags("ecs", "/ecs/microservices-old")
    )
    api = client("apigateway").create_rest_api(
        name="microservices-old-api", tags=tags("apigw", "microservices-old-api")
    )["id"]
    client("dynamodb").create_table(
        TableName="microservices-old",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=as_list(tags("dynamodb", "microservices-old")),
    )
    return {
        ("elastic-ip", eip),
        ("security-group", sg),
        ("iam-role", "microservices-old-role"),
        ("ecr-repository", "microservices/old"),
        ("log-group", "/ecs/microservices-old"),
        ("rest-api", api),
        ("table", "microservices-old"),
    }


def orphan_nat(lab, allocation_id: str | None = None) -> tuple[str, str]:
    """A lab-tagged NAT gateway (and Elastic IP) in a network of its own. moto's
    DescribeNatGateways ignores tag filters, so while it exists the nat step's own lookup
    sees it as a second copy of the lab's NAT gateway (AWS filters): it is made where the
    walk doesn't look up NAT gateways."""
    ec2 = client("ec2")
    vpc_id = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    if allocation_id is None:
        allocation_id = ec2.allocate_address(
            Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", lab.ctx.tags("nat", "old-eip"))
        )["AllocationId"]
    nat = ec2.create_nat_gateway(
        SubnetId=subnet_id,
        AllocationId=allocation_id,
        TagSpecifications=ec2_spec("natgateway", lab.ctx.tags("nat", "old-nat")),
    )["NatGateway"]["NatGatewayId"]
    return nat, allocation_id


@pytest.fixture
def full_lab(lab, monkeypatch):
    # moto reports this many running tasks per ECS service, so services reach steady state.
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    return lab


# ---------------------------------------------------------------- the sweep


def test_down_removes_an_interrupted_runs_orphans_without_a_state_file(full_lab):
    lab = full_lab
    lab.run("apply", None)  # every registered step
    built = still_tagged(lab.config.lab)
    assert {kind for kind, _ in built} >= {"vpc", "nat-gateway", "db-instance", "distribution"}
    assert {kind for kind, _ in built} >= {"alarm", "dashboard"}
    vpc_id = lab.state.outputs("vpc")["vpc_id"]
    ecs_sg = lab.state.outputs("sg")["group_ids"]["microservices-ecs-sg"]
    orphans = make_orphans(lab, vpc_id, ecs_sg)
    assert orphans <= still_tagged(lab.config.lab)

    lab.state.delete()  # the state file is lost: the walk and the sweep find all by tags
    lab.run("destroy", None)
    # The walk removed what the config names, and only that.
    assert still_tagged(lab.config.lab) == orphans | {("iam-role", LOG_ROLE)}
    eip = next(key for key in orphans if key[0] == "elastic-ip")
    nat = ("nat-gateway", orphan_nat(lab, eip[1])[0])
    orphans.add(nat)

    result = sweep.sweep(lab.ctx)
    assert result.ok, result
    assert orphans <= {(r.kind, r.id) for r in result.removed}
    assert result.remaining == [] and result.problems == []
    assert [(k.kind, k.id) for k in result.kept] == [("iam-role", LOG_ROLE)]
    assert still_tagged(lab.config.lab) == {("iam-role", LOG_ROLE)}
    # Dependents first: the NAT gateway is gone before its Elastic IP is released.
    order = [(r.kind, r.id) for r in result.removed]
    assert order.index(nat) < order.index(eip)
    changes = [e.message for e in lab.events if e.step == "sweep" and e.kind == "change"]
    assert f"delete nat-gateway old-nat ({nat[1]})" in changes
    assert "delete ingress-rule old-sg group references (revoke before deleting groups)" in changes

    again = sweep.sweep(lab.ctx)  # safe to run twice
    assert again.ok and again.removed == [] and again.remaining == []


def test_what_the_sweep_cant_delete_is_listed_with_its_id_and_cost(lab, monkeypatch):
    nat, eip = orphan_nat(lab)

    def refuse(_sw, item, _found):
        raise StepError(f"simulated: AWS refused to delete {item.id}")

    monkeypatch.setitem(
        sweep.KINDS, "nat-gateway", replace(sweep.KINDS["nat-gateway"], delete=refuse)
    )
    result = sweep.sweep(lab.ctx)
    assert not result.ok
    assert [(r.kind, r.id, r.hourly) for r in result.remaining] == [("nat-gateway", nat, 0.045)]
    assert "simulated: AWS refused to delete" in result.remaining[0].note
    assert [(r.kind, r.id) for r in result.removed] == [("elastic-ip", eip)]
    assert ("nat-gateway", nat) in still_tagged(lab.config.lab)

    out = io.StringIO()
    report.print_sweep(Console(file=out, width=100, soft_wrap=True), result)
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "sweep: removed 1 resource(s) still tagged for lab microservices after the walk:",
        f"  - elastic-ip {eip} (old-eip)",
    ]
    assert (
        "Error: 1 resource(s) tagged for lab microservices remain, about $0.0450/hour "
        "($1.08/day):" in lines
    )
    assert any(
        line.startswith(f"  nat-gateway {nat} (old-nat) in us-east-1: $0.0450/hour; simulated")
        for line in lines
    ), lines
    doc = report.sweep_to_json(result)
    assert doc["ok"] is False and doc["remaining"][0]["id"] == nat


def test_tagged_resources_in_deleted_states_are_not_leftovers(lab):
    """The tagging API still lists deleted NAT gateways and inactive task definitions."""
    nat, eip = orphan_nat(lab)
    ecs = client("ecs")
    arn = ecs.register_task_definition(
        family="microservices-old",
        containerDefinitions=[{"name": "app", "image": "nginx", "memory": 128}],
        tags=[{"key": LAB, "value": "microservices"}],
    )["taskDefinition"]["taskDefinitionArn"]
    ecs.deregister_task_definition(taskDefinition=arn)
    client("ec2").delete_nat_gateway(NatGatewayId=nat)
    tagging = client("resourcegroupstaggingapi")
    listed = {
        m["ResourceARN"]
        for m in tagging.get_resources(TagFilters=[{"Key": LAB, "Values": ["microservices"]}])[
            "ResourceTagMappingList"
        ]
    }
    assert any(nat in a for a in listed) and arn in listed  # what moto's tagging API says

    result = sweep.sweep(lab.ctx)
    assert result.ok
    assert [(r.kind, r.id) for r in result.removed] == [("elastic-ip", eip)]


def test_arns_map_to_kinds():
    cases = {
        "arn:aws:ec2:us-east-1:1:natgateway/nat-1": ("nat-gateway", "nat-1"),
        "arn:aws:ec2:us-east-1:1:elastic-ip/eipalloc-1": ("elastic-ip", "eipalloc-1"),
        "arn:aws:ecs:us-east-1:1:cluster/c": ("ecs-cluster", "c"),
        "arn:aws:lambda:us-east-1:1:function:f": ("lambda-function", "f"),
        "arn:aws:logs:us-east-1:1:log-group:/ecs/x:*": ("log-group", "/ecs/x"),
        "arn:aws:rds:us-east-1:1:subgrp:g": ("db-subnet-group", "g"),
        "arn:aws:s3:::b": ("bucket", "b"),
        "arn:aws:dynamodb:us-east-1:1:table/t": ("table", "t"),
        "arn:aws:cloudfront::1:distribution/E1": ("distribution", "E1"),
        "arn:aws:apigateway:us-east-1::/restapis/a1": ("rest-api", "a1"),
        "arn:aws:iam::1:role/path/r": ("iam-role", "r"),
        "arn:aws:route53:::hostedzone/Z1": ("hosted-zone", "Z1"),
        "arn:aws:cloudwatch:us-east-1:1:alarm:a": ("alarm", "a"),
    }
    for arn, expected in cases.items():
        item = sweep.item_from_arn(arn, {})
        assert (item.kind, item.id) == expected, arn
    service = sweep.item_from_arn("arn:aws:ecs:us-east-1:1:service/c/s", {"msctl:name": "s"})
    assert (service.kind, service.extra, service.name) == ("ecs-service", {"cluster": "c"}, "s")
    assert (
        sweep.item_from_arn("arn:aws:elasticloadbalancing:us-east-1:1:listener/app/a/1/2", {})
        is None
    )
    assert sweep.item_from_arn("arn:aws:apigateway:us-east-1::/restapis/a1/stages/prod", {}) is None
    odd = sweep.item_from_arn("arn:aws:kinesis:us-east-1:1:stream/s", {})
    assert odd.kind == "unknown" and odd.extra == {"type": "kinesis:stream"}


# ---------------------------------------------------------------- msctl down


@pytest.fixture
def emulator_lab(tmp_path):
    state_dir = tmp_path / "state"
    args = ["-c", str(ROOT / "config" / "lab.yaml"), "--state-dir", str(state_dir)]
    runner = CliRunner()
    started = runner.invoke(main, ["local", "start", "--state-dir", str(state_dir)])
    assert started.exit_code == 0, started.output
    from msctl.local import emulator

    endpoint = emulator.status(state_dir).endpoint
    yield (
        runner,
        args,
        {
            "endpoint_url": endpoint,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
        },
    )
    runner.invoke(main, ["local", "stop", "--state-dir", str(state_dir)])


def test_down_exits_1_while_a_tagged_resource_remains(emulator_lab, monkeypatch):
    runner, args, creds = emulator_lab
    boto3.client("dynamodb", region_name=REGION, **creds).create_table(
        TableName="microservices-old",
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        Tags=[
            {"Key": LAB, "Value": "microservices"},
            {"Key": "msctl:name", "Value": "microservices-old"},
        ],
    )

    def refuse(_sw, _item, _found):
        raise StepError("simulated refusal")

    with monkeypatch.context() as m:
        m.setitem(sweep.KINDS, "table", replace(sweep.KINDS["table"], delete=refuse))
        stuck = runner.invoke(main, ["down", *args])
    assert stuck.exit_code == 1, stuck.output
    assert "Traceback" not in stuck.output
    assert "destroy done" in stuck.output  # the walk itself succeeded
    assert (
        "Error: 1 resource(s) tagged for lab microservices remain, about $0.0000/hour"
        in stuck.output
    )
    assert "  table microservices-old in us-east-1: $0.0000/hour; simulated refusal" in stuck.output

    down = runner.invoke(main, ["down", *args])
    assert down.exit_code == 0, down.output
    assert "sweep: removed 1 resource(s) still tagged for lab microservices" in down.output
    assert "  - table microservices-old" in down.output
    assert still_tagged("microservices", **creds) == set()

    again = runner.invoke(main, ["down", *args, "--output", "json"])
    assert again.exit_code == 0
    doc = json.loads(again.output)
    assert doc["ok"] is True and doc["sweep"]["removed"] == [] and doc["sweep"]["remaining"] == []
