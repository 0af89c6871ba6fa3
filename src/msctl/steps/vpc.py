"""vpc: the VPC, four subnets in two AZs, internet gateway and route tables (seed 1.1).

The NAT gateway and its Elastic IP are the `nat` step, so that everything that needs only
subnets (security groups, RDS, the ALB and the edge) starts without waiting ~2 min for NAT.

Two of AWS's Foundational Security Best Practices: the VPC's default security group has no
rules (EC2.2; nothing of the lab uses it, and a resource put in it by mistake then reaches
nothing), and no subnet gives instances a public IP on launch (EC2.15; the ALB and the NAT
gateway have addresses of their own, the tasks and the database stay private).
"""

from __future__ import annotations

from ..aws.tags import ec2_spec
from ..engine.step import StepError
from ..resources import Resource
from ..resources.ec2 import INTERNET_GATEWAY, ROUTE_TABLE, SUBNET, VPC
from .base import LabStep
from .run import Fix, StepRun
from .sg_rules import label, live_rules

DEFAULT_ROUTE = "0.0.0.0/0"


class VpcStep(LabStep):
    name = "vpc"
    requires = ()
    services = ("ec2",)
    description = "VPC, subnets, internet gateway, route tables"
    kinds = (VPC, SUBNET, INTERNET_GATEWAY, ROUTE_TABLE)

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.vpc
        ec2 = run.clients.ec2

        vpc_id = run.ensure(
            VPC,
            cfg.name,
            create=lambda: _create_vpc(run, cfg),
            fixes=lambda vpc: _vpc_fixes(ec2, vpc, cfg),
        )
        subnets: dict[str, str] = {}
        for subnet in (*cfg.public_subnets, *cfg.private_subnets):
            subnets[subnet.name] = run.ensure(
                SUBNET,
                subnet.name,
                after=[vpc_id],
                create=lambda s=subnet: ec2.create_subnet(
                    VpcId=vpc_id,
                    CidrBlock=str(s.cidr),
                    AvailabilityZone=s.az,
                    TagSpecifications=ec2_spec("subnet", run.tags(s.name)),
                )["Subnet"],
                fixes=lambda found, s=subnet: _subnet_fixes(ec2, found, s),
            )
        igw_id = run.ensure(
            INTERNET_GATEWAY,
            cfg.internet_gateway,
            create=lambda: ec2.create_internet_gateway(
                TagSpecifications=ec2_spec("internet-gateway", run.tags(cfg.internet_gateway)),
            )["InternetGateway"],
            fixes=lambda igw: _igw_fixes(ec2, igw, vpc_id),
            after=[vpc_id],
        )
        public_ids = [subnets[s.name] for s in cfg.public_subnets]
        private_ids = [subnets[s.name] for s in cfg.private_subnets]
        public_rt = self._route_table(
            run, cfg.public_route_table, vpc_id, public_ids, {"GatewayId": igw_id}
        )
        private_rt = self._route_table(run, cfg.private_route_table, vpc_id, private_ids, None)
        return {
            "vpc_id": vpc_id,
            "public_subnet_ids": public_ids,
            "private_subnet_ids": private_ids,
            "internet_gateway_id": igw_id,
            "public_route_table_id": public_rt,
            "private_route_table_id": private_rt,
        }

    def _route_table(
        self,
        run: StepRun,
        name: str,
        vpc_id: str,
        subnet_ids: list[str],
        default_target: dict | None,
    ) -> str:
        """A route table with its subnet associations and, if given, its default route.
        (The private table's default route to the NAT gateway belongs to the nat step.)"""
        ec2 = run.clients.ec2
        return run.ensure(
            ROUTE_TABLE,
            name,
            after=[vpc_id, *subnet_ids],
            create=lambda: ec2.create_route_table(
                VpcId=vpc_id,
                TagSpecifications=ec2_spec("route-table", run.tags(name)),
            )["RouteTable"],
            fixes=lambda rt: route_table_fixes(ec2, rt, subnet_ids, default_target),
        )


# ---------------------------------------------------------------- create and fix


def _create_vpc(run: StepRun, cfg) -> Resource:
    ec2 = run.clients.ec2
    vpc = ec2.create_vpc(
        CidrBlock=str(cfg.cidr),
        TagSpecifications=ec2_spec("vpc", run.tags(cfg.name)),
    )["Vpc"]
    run.wait(
        f"VPC {cfg.name}",
        lambda: _vpc_state(ec2, vpc["VpcId"]),
        timeout=120,
    )
    return vpc


def _vpc_state(ec2, vpc_id: str) -> tuple[bool, str]:
    vpcs = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    state = vpcs[0]["State"] if vpcs else "not visible yet"
    return state == "available", state


def _vpc_fixes(ec2, vpc: Resource, cfg) -> list[Fix]:
    fixes = []
    if vpc["CidrBlock"] != str(cfg.cidr):
        fixes.append(replace_fix(f"CIDR {vpc['CidrBlock']} -> {cfg.cidr}", f"VPC {cfg.name}"))
    for attribute, key in (
        ("enableDnsSupport", "EnableDnsSupport"),
        ("enableDnsHostnames", "EnableDnsHostnames"),
    ):
        current = ec2.describe_vpc_attribute(VpcId=vpc["VpcId"], Attribute=attribute)
        if not current[key]["Value"]:
            fixes.append(
                Fix(
                    f"{attribute} on",
                    lambda k=key: ec2.modify_vpc_attribute(
                        VpcId=vpc["VpcId"], **{k: {"Value": True}}
                    ),
                )
            )
    return fixes + _default_group_fixes(ec2, vpc["VpcId"])


def _default_group_fixes(ec2, vpc_id: str) -> list[Fix]:
    """Revoke every rule of the VPC's default security group (it can't be deleted)."""
    groups = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": ["default"]},
        ]
    )["SecurityGroups"]
    fixes = []
    for group in groups:
        for direction, field, revoke in (
            ("ingress", "IpPermissions", ec2.revoke_security_group_ingress),
            ("egress", "IpPermissionsEgress", ec2.revoke_security_group_egress),
        ):
            rules = live_rules(group.get(field) or [])
            if rules:
                detail = f"default security group: revoke {direction} " + ", ".join(
                    map(label, rules)
                )
                fixes.append(Fix(detail, _revoking(revoke, group["GroupId"], list(rules.values()))))
    return fixes


def _revoking(revoke, group_id: str, permissions: list[dict]):
    return lambda: revoke(GroupId=group_id, IpPermissions=permissions)


def _subnet_fixes(ec2, subnet: Resource, cfg) -> list[Fix]:
    fixes = []
    if subnet["CidrBlock"] != str(cfg.cidr) or subnet["AvailabilityZone"] != cfg.az:
        fixes.append(
            replace_fix(
                f"{subnet['CidrBlock']} in {subnet['AvailabilityZone']} -> {cfg.cidr} in {cfg.az}",
                f"subnet {cfg.name}",
            )
        )
    if subnet.get("MapPublicIpOnLaunch"):
        fixes.append(
            Fix(
                "map public IP on launch off",
                lambda: ec2.modify_subnet_attribute(
                    SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": False}
                ),
            )
        )
    return fixes


def replace_fix(detail: str, what: str) -> Fix:
    def refuse():
        raise StepError(
            f"{what} can't be changed in place ({detail})",
            hint="run `msctl down` and `msctl up` to rebuild the network, or restore the config",
        )

    return Fix(detail, refuse, action="replace")


def _igw_fixes(ec2, igw: Resource, vpc_id: str) -> list[Fix]:
    attached = [a["VpcId"] for a in igw.get("Attachments", []) if a.get("State") != "detached"]
    if vpc_id in attached:
        return []
    return [
        Fix(
            f"attach to {vpc_id}",
            lambda: ec2.attach_internet_gateway(
                InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc_id
            ),
        )
    ]


def route_table_fixes(
    ec2, rt: Resource, subnet_ids: list[str], default_target: dict | None
) -> list[Fix]:
    """Associations with exactly these subnets, and the default route (if given)."""
    rt_id = rt["RouteTableId"]
    fixes = []
    associated = {a["SubnetId"] for a in rt.get("Associations", []) if a.get("SubnetId")}
    for subnet_id in subnet_ids:
        if subnet_id not in associated:
            fixes.append(
                Fix(
                    f"associate {subnet_id}",
                    lambda s=subnet_id: ec2.associate_route_table(RouteTableId=rt_id, SubnetId=s),
                )
            )
    if default_target is not None:
        fix = default_route_fix(ec2, rt, default_target)
        if fix:
            fixes.append(fix)
    return fixes


def default_route_fix(ec2, rt: Resource, target: dict) -> Fix | None:
    """0.0.0.0/0 to the target ({"GatewayId": igw} or {"NatGatewayId": nat}), created or replaced."""
    rt_id = rt["RouteTableId"]
    current = next(
        (r for r in rt.get("Routes", []) if r.get("DestinationCidrBlock") == DEFAULT_ROUTE), None
    )
    ((key, value),) = target.items()
    if current is None:
        return Fix(
            f"route {DEFAULT_ROUTE} -> {value}",
            lambda: ec2.create_route(
                RouteTableId=rt_id, DestinationCidrBlock=DEFAULT_ROUTE, **target
            ),
        )
    if current.get(key) != value or current.get("State") == "blackhole":
        return Fix(
            f"route {DEFAULT_ROUTE} -> {value}",
            lambda: ec2.replace_route(
                RouteTableId=rt_id, DestinationCidrBlock=DEFAULT_ROUTE, **target
            ),
        )
    return None
