"""vpc, nat and sg against moto: the lifecycle, AWS's teardown order, and drift repair."""

from __future__ import annotations

import boto3

from msctl.aws.tags import LAB

from .conftest import assert_lifecycle


def tagged_ec2(lab_name: str) -> dict[str, int]:
    """Everything in EC2 still tagged with the lab, by kind (deleted NATs excluded)."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    f = [{"Name": f"tag:{LAB}", "Values": [lab_name]}]
    nats = [
        n for n in ec2.describe_nat_gateways(Filters=f)["NatGateways"] if n["State"] != "deleted"
    ]
    counts = {
        "vpc": len(ec2.describe_vpcs(Filters=f)["Vpcs"]),
        "subnet": len(ec2.describe_subnets(Filters=f)["Subnets"]),
        "igw": len(ec2.describe_internet_gateways(Filters=f)["InternetGateways"]),
        "rt": len(ec2.describe_route_tables(Filters=f)["RouteTables"]),
        "sg": len(ec2.describe_security_groups(Filters=f)["SecurityGroups"]),
        "eip": len(ec2.describe_addresses(Filters=f)["Addresses"]),
        "nat": len(nats),
    }
    return {k: v for k, v in counts.items() if v}


def default_group_rules(vpc_id: str) -> tuple[list, list]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    (group,) = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": ["default"]},
        ]
    )["SecurityGroups"]
    return group["IpPermissions"], group["IpPermissionsEgress"]


def test_vpc_lifecycle(lab):
    outputs = assert_lifecycle(
        lab,
        "vpc",
        {
            ("vpc", "microservices-vpc"),
            ("subnet", "microservices-public-1"),
            ("subnet", "microservices-public-2"),
            ("subnet", "microservices-private-1"),
            ("subnet", "microservices-private-2"),
            ("internet-gateway", "microservices-igw"),
            ("route-table", "microservices-public-rt"),
            ("route-table", "microservices-private-rt"),
        },
    )
    assert len(outputs["public_subnet_ids"]) == 2
    assert tagged_ec2(lab.config.lab) == {}


def test_vpc_matches_the_seed(lab):
    lab.run("apply", ["vpc"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    out = lab.state.outputs("vpc")
    vpc_id = out["vpc_id"]
    assert ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"] == "10.0.0.0/16"
    for attr, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        assert ec2.describe_vpc_attribute(VpcId=vpc_id, Attribute=attr)[key]["Value"] is True
    subnets = ec2.describe_subnets(SubnetIds=out["public_subnet_ids"] + out["private_subnet_ids"])[
        "Subnets"
    ]
    layout = {(s["CidrBlock"], s["AvailabilityZone"], s["MapPublicIpOnLaunch"]) for s in subnets}
    # No subnet hands out public IPs (AWS FSBP EC2.15): the ALB and the NAT gateway have
    # their own addresses; tasks and the database are private.
    assert layout == {
        ("10.0.1.0/24", "us-east-1a", False),
        ("10.0.2.0/24", "us-east-1b", False),
        ("10.0.11.0/24", "us-east-1a", False),
        ("10.0.12.0/24", "us-east-1b", False),
    }
    # The default security group has no rules at all (AWS FSBP EC2.2, CIS 5.4).
    assert default_group_rules(vpc_id) == ([], [])
    public = ec2.describe_route_tables(RouteTableIds=[out["public_route_table_id"]])["RouteTables"][
        0
    ]
    assert {a["SubnetId"] for a in public["Associations"]} == set(out["public_subnet_ids"])
    default = [r for r in public["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert default[0]["GatewayId"] == out["internet_gateway_id"]
    for s in subnets:
        tags = {t["Key"]: t["Value"] for t in s["Tags"]}
        assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "vpc"


def test_nat_lifecycle_routes_private_subnets(lab):
    outputs = assert_lifecycle(
        lab,
        "nat",
        {
            ("elastic-ip", "microservices-nat-eip"),
            ("nat-gateway", "microservices-nat"),
        },
    )
    assert outputs["nat_gateway_id"].startswith("nat-")
    lab.run("destroy", ["vpc"])
    assert tagged_ec2(lab.config.lab) == {}


def test_nat_routes_private_table(lab):
    lab.run("apply", ["nat"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    rt_id = lab.state.outputs("vpc")["private_route_table_id"]
    rt = ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0]
    default = [r for r in rt["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"]
    assert default[0]["NatGatewayId"] == lab.state.outputs("nat")["nat_gateway_id"]
    nat = ec2.describe_nat_gateways(NatGatewayIds=[default[0]["NatGatewayId"]])["NatGateways"][0]
    assert nat["SubnetId"] == lab.state.outputs("vpc")["public_subnet_ids"][0]


def test_sg_lifecycle_has_exactly_the_seed_rules(lab):
    outputs = assert_lifecycle(
        lab,
        "sg",
        {
            ("security-group", "microservices-alb-sg"),
            ("security-group", "microservices-ecs-sg"),
            ("security-group", "microservices-rds-sg"),
        },
    )
    assert set(outputs["group_ids"]) == {
        "microservices-alb-sg",
        "microservices-ecs-sg",
        "microservices-rds-sg",
    }
    lab.run("destroy", ["vpc"])
    assert tagged_ec2(lab.config.lab) == {}


def test_sg_rules_reference_the_right_groups(lab):
    lab.run("apply", ["sg"])
    ids = lab.state.outputs("sg")["group_ids"]
    ec2 = boto3.client("ec2", region_name="us-east-1")

    def ingress(name):
        sg = ec2.describe_security_groups(GroupIds=[ids[name]])["SecurityGroups"][0]
        rules = set()
        for p in sg["IpPermissions"]:
            rules |= {(p["FromPort"], r["CidrIp"]) for r in p.get("IpRanges", [])}
            rules |= {(p["FromPort"], g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
        return rules

    assert ingress("microservices-alb-sg") == {(80, "0.0.0.0/0"), (443, "0.0.0.0/0")}
    assert ingress("microservices-ecs-sg") == {
        (80, ids["microservices-alb-sg"]),
        (8080, ids["microservices-alb-sg"]),
    }
    assert ingress("microservices-rds-sg") == {(5432, ids["microservices-ecs-sg"])}


def test_vpc_empties_its_default_group_and_turns_off_public_ips_again(lab):
    lab.run("apply", ["vpc"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    out = lab.state.outputs("vpc")
    vpc_id = out["vpc_id"]
    (default,) = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": ["default"]},
        ]
    )["SecurityGroups"]
    # What AWS gives every new VPC's default group, back by hand.
    ec2.authorize_security_group_ingress(
        GroupId=default["GroupId"],
        IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": default["GroupId"]}]}],
    )
    ec2.authorize_security_group_egress(
        GroupId=default["GroupId"],
        IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}],
    )
    public = out["public_subnet_ids"][0]
    ec2.modify_subnet_attribute(SubnetId=public, MapPublicIpOnLaunch={"Value": True})

    plan = lab.changes(lab.run("plan", ["vpc"]), "vpc")
    assert {(c.action, c.name, c.detail) for c in plan} == {
        (
            "update",
            "microservices-vpc",
            f"default security group: revoke ingress all traffic from {default['GroupId']}",
        ),
        (
            "update",
            "microservices-vpc",
            "default security group: revoke egress all traffic from 0.0.0.0/0",
        ),
        ("update", "microservices-public-1", "map public IP on launch off"),
    }
    checks = lab.run("verify", ["vpc"], expect_ok=False).results["vpc"].checks
    assert {c.name for c in checks if not c.ok} == {
        "vpc microservices-vpc",
        "subnet microservices-public-1",
    }
    lab.run("apply", ["vpc"])
    assert default_group_rules(vpc_id) == ([], [])
    subnet = ec2.describe_subnets(SubnetIds=[public])["Subnets"][0]
    assert subnet["MapPublicIpOnLaunch"] is False
    assert lab.changes(lab.run("plan", ["vpc"]), "vpc") == []


def test_sg_revokes_a_rule_added_by_hand(lab):
    lab.run("apply", ["sg"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    rds = lab.state.outputs("sg")["group_ids"]["microservices-rds-sg"]
    ec2.authorize_security_group_ingress(
        GroupId=rds,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    plan = lab.run("plan", ["sg"])
    assert [(c.action, c.name) for c in lab.changes(plan, "sg")] == [
        ("delete", "microservices-rds-sg tcp 5432 from 0.0.0.0/0")
    ]
    checks = lab.run("verify", ["sg"], expect_ok=False).results["sg"].checks
    assert [c.name for c in checks if not c.ok] == [
        "ingress-rule microservices-rds-sg tcp 5432 from 0.0.0.0/0"
    ]
    lab.run("apply", ["sg"])
    assert lab.changes(lab.run("plan", ["sg"]), "sg") == []


def ingress_rules(group_id: str) -> set[tuple]:
    """(protocol, from, to, source) of every ingress rule, each source on its own."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    sg = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    rules = set()
    for p in sg["IpPermissions"]:
        ports = (p["IpProtocol"], p.get("FromPort"), p.get("ToPort"))
        rules |= {(*ports, r["CidrIp"]) for r in p.get("IpRanges", [])}
        rules |= {(*ports, r["CidrIpv6"]) for r in p.get("Ipv6Ranges", [])}
        rules |= {(*ports, r["PrefixListId"]) for r in p.get("PrefixListIds", [])}
        rules |= {(*ports, g["GroupId"]) for g in p.get("UserIdGroupPairs", [])}
    return rules


def test_sg_reports_and_revokes_every_widened_rule(lab):
    """Rules the config doesn't name, however they differ from the seed's: another source
    sort (IPv6, a prefix list), a port range, another protocol, all traffic."""
    lab.run("apply", ["sg"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ids = lab.state.outputs("sg")["group_ids"]
    rds, ecs = ids["microservices-rds-sg"], ids["microservices-ecs-sg"]
    seeded = ingress_rules(rds)
    prefix_list = ec2.create_managed_prefix_list(
        PrefixListName="office",
        MaxEntries=1,
        AddressFamily="IPv4",
        Entries=[{"Cidr": "1.2.3.0/24"}],
    )["PrefixList"]["PrefixListId"]
    tcp = {"IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432}
    widened = [
        ({**tcp, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}, "tcp 5432 from ::/0"),
        ({**tcp, "PrefixListIds": [{"PrefixListId": prefix_list}]}, f"tcp 5432 from {prefix_list}"),
        (
            {**tcp, "ToPort": 5433, "UserIdGroupPairs": [{"GroupId": ecs}]},
            "tcp 5432-5433 from microservices-ecs-sg",
        ),
        (
            {
                "IpProtocol": "tcp",
                "FromPort": 0,
                "ToPort": 65535,
                "IpRanges": [{"CidrIp": "10.0.0.0/16"}],
            },
            "tcp 0-65535 from 10.0.0.0/16",
        ),
        (
            {**tcp, "IpProtocol": "udp", "UserIdGroupPairs": [{"GroupId": ecs}]},
            "udp 5432 from microservices-ecs-sg",
        ),
        (
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": ecs}]},
            "all traffic from microservices-ecs-sg",
        ),
    ]
    for permission, _ in widened:
        ec2.authorize_security_group_ingress(GroupId=rds, IpPermissions=[permission])
    names = {f"microservices-rds-sg {name}" for _, name in widened}

    plan = lab.changes(lab.run("plan", ["sg"]), "sg")
    assert {(c.action, c.name, c.detail) for c in plan} == {
        ("delete", name, "not in config: revoke") for name in names
    }
    checks = lab.run("verify", ["sg"], expect_ok=False).results["sg"].checks
    assert {c.name for c in checks if not c.ok} == {f"ingress-rule {n}" for n in names}
    assert [c.ok for c in checks if c.name.endswith("tcp 5432 from microservices-ecs-sg")] == [True]

    lab.run("apply", ["sg"])
    assert ingress_rules(rds) == seeded == {("tcp", 5432, 5432, ecs)}
    assert lab.changes(lab.run("plan", ["sg"]), "sg") == []


def test_vpc_repairs_a_missing_association_and_adopts_without_state(lab):
    lab.run("apply", ["vpc"])
    ec2 = boto3.client("ec2", region_name="us-east-1")
    rt_id = lab.state.outputs("vpc")["public_route_table_id"]
    rt = ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0]
    ec2.disassociate_route_table(AssociationId=rt["Associations"][0]["RouteTableAssociationId"])
    lab.state.delete()
    plan = lab.run("plan", ["vpc"])
    assert [c.action for c in lab.changes(plan, "vpc")] == ["update"]
    lab.run("apply", ["vpc"])
    assert lab.state.outputs("vpc")["public_route_table_id"] == rt_id
    assert lab.changes(lab.run("plan", ["vpc"]), "vpc") == []


def test_interrupted_create_resumes_without_a_duplicate(lab):
    """The process died after CreateVpc succeeded but before the state recorded it."""
    ec2 = boto3.client("ec2", region_name="us-east-1")
    lab.state.journal_intent("vpc", "vpc:microservices-vpc", "create")
    tags = [{"Key": k, "Value": v} for k, v in lab.ctx.tags("vpc", "microservices-vpc").items()]
    orphan = ec2.create_vpc(
        CidrBlock="10.0.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}]
    )["Vpc"]["VpcId"]
    lab.run("apply", ["vpc"])
    assert lab.state.outputs("vpc")["vpc_id"] == orphan
    assert tagged_ec2(lab.config.lab)["vpc"] == 1
    assert lab.state.open_intents("vpc") == []
    notes = [e.message for e in lab.events if e.kind == "note"]
    assert any("interrupted while creating vpc:microservices-vpc" in n for n in notes)


def test_two_tagged_copies_are_an_error_not_a_guess(lab):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    tags = [{"Key": k, "Value": v} for k, v in lab.ctx.tags("vpc", "microservices-vpc").items()]
    for _ in range(2):
        ec2.create_vpc(
            CidrBlock="10.0.0.0/16", TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}]
        )
    result = lab.run("apply", ["vpc"], expect_ok=False)
    assert (
        "found 2 vpc resources named microservices-vpc tagged for this lab"
        in result.results["vpc"].error
    )
