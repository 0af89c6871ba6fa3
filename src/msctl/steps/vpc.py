"""vpc: the VPC, four subnets in two AZs, internet gateway and route tables (seed 1.1).

The NAT gateway and its Elastic IP are the `nat` step, so that everything that needs only
subnets (security groups, RDS, the ALB and the edge) starts without waiting ~2 min for NAT.
"""

from __future__ import annotations

from ..aws.tags import ec2_filters, ec2_spec
from ..engine.step import Fix, Resource, Step, StepError, StepRun, only_one

DEFAULT_ROUTE = "0.0.0.0/0"
# DependencyViolation clears once ENIs of deleted ALBs, tasks and databases are gone.
DRAIN_TIMEOUT = 600


class VpcStep(Step):
    name = "vpc"
    requires = ()
    services = ("ec2",)
    description = "VPC, subnets, internet gateway, route tables"

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.vpc
        ec2 = run.clients.ec2
        lab = run.ctx.lab

        vpc_id = run.ensure(
            "vpc",
            cfg.name,
            id_key="VpcId",
            find=lambda: find_vpc(ec2, lab, cfg.name),
            create=lambda: _create_vpc(run, cfg),
            fixes=lambda vpc: _vpc_fixes(ec2, vpc, cfg),
        )
        subnets: dict[str, str] = {}
        for public, group in ((True, cfg.public_subnets), (False, cfg.private_subnets)):
            for subnet in group:
                subnets[subnet.name] = run.ensure(
                    "subnet",
                    subnet.name,
                    id_key="SubnetId",
                    after=[vpc_id],
                    find=lambda s=subnet: _find_tagged(
                        ec2.describe_subnets, "Subnets", lab, s.name
                    ),
                    create=lambda s=subnet: ec2.create_subnet(
                        VpcId=vpc_id,
                        CidrBlock=str(s.cidr),
                        AvailabilityZone=s.az,
                        TagSpecifications=ec2_spec("subnet", run.tags(s.name)),
                    )["Subnet"],
                    fixes=lambda found, s=subnet, p=public: _subnet_fixes(ec2, found, s, p),
                )
        igw_id = run.ensure(
            "internet-gateway",
            cfg.internet_gateway,
            id_key="InternetGatewayId",
            find=lambda: _find_tagged(
                ec2.describe_internet_gateways, "InternetGateways", lab, cfg.internet_gateway
            ),
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
            "route-table",
            name,
            id_key="RouteTableId",
            after=[vpc_id, *subnet_ids],
            find=lambda: _find_tagged(ec2.describe_route_tables, "RouteTables", run.ctx.lab, name),
            create=lambda: ec2.create_route_table(
                VpcId=vpc_id,
                TagSpecifications=ec2_spec("route-table", run.tags(name)),
            )["RouteTable"],
            fixes=lambda rt: route_table_fixes(ec2, rt, subnet_ids, default_target),
        )

    def teardown(self, run: StepRun) -> None:
        cfg = run.config.vpc
        ec2 = run.clients.ec2
        lab = run.ctx.lab
        for name in (cfg.public_route_table, cfg.private_route_table):
            run.remove(
                "route-table",
                name,
                find=lambda n=name: _find_tagged(ec2.describe_route_tables, "RouteTables", lab, n),
                delete=lambda rt: _delete_route_table(run, rt),
            )
        run.remove(
            "internet-gateway",
            cfg.internet_gateway,
            find=lambda: _find_tagged(
                ec2.describe_internet_gateways, "InternetGateways", lab, cfg.internet_gateway
            ),
            delete=lambda igw: _delete_igw(run, igw),
        )
        for subnet in (*cfg.public_subnets, *cfg.private_subnets):
            run.remove(
                "subnet",
                subnet.name,
                find=lambda s=subnet: _find_tagged(ec2.describe_subnets, "Subnets", lab, s.name),
                delete=lambda found: delete_subnet(run, ec2, found["SubnetId"]),
            )
        run.remove(
            "vpc",
            cfg.name,
            find=lambda: find_vpc(ec2, lab, cfg.name),
            delete=lambda found: delete_vpc(run, ec2, found["VpcId"]),
        )


# ---------------------------------------------------------------- lookups


def _find_tagged(describe, key: str, lab: str, name: str) -> Resource | None:
    items = describe(Filters=ec2_filters(lab, name))[key]
    return only_one(items, f"{key} named {name}")


def find_vpc(ec2, lab: str, name: str) -> Resource | None:
    vpcs = ec2.describe_vpcs(Filters=ec2_filters(lab, name))["Vpcs"]
    return only_one(vpcs, f"VPCs named {name}")


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
    return fixes


def _subnet_fixes(ec2, subnet: Resource, cfg, public: bool) -> list[Fix]:
    fixes = []
    if subnet["CidrBlock"] != str(cfg.cidr) or subnet["AvailabilityZone"] != cfg.az:
        fixes.append(
            replace_fix(
                f"{subnet['CidrBlock']} in {subnet['AvailabilityZone']} -> {cfg.cidr} in {cfg.az}",
                f"subnet {cfg.name}",
            )
        )
    if subnet.get("MapPublicIpOnLaunch", False) != public:
        fixes.append(
            Fix(
                f"map public IP on launch {'on' if public else 'off'}",
                lambda: ec2.modify_subnet_attribute(
                    SubnetId=subnet["SubnetId"], MapPublicIpOnLaunch={"Value": public}
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


# ---------------------------------------------------------------- delete


def delete_subnet(run: StepRun, ec2, subnet_id: str) -> None:
    run.retry(
        lambda: ec2.delete_subnet(SubnetId=subnet_id),
        codes=("DependencyViolation",),
        timeout=DRAIN_TIMEOUT,
        reason="network interfaces of deleted services are still draining",
    )


def delete_vpc(run: StepRun, ec2, vpc_id: str) -> None:
    run.retry(
        lambda: ec2.delete_vpc(VpcId=vpc_id),
        codes=("DependencyViolation",),
        timeout=DRAIN_TIMEOUT,
        reason="resources inside the VPC are still being deleted",
    )


def _delete_route_table(run: StepRun, rt: Resource) -> None:
    ec2 = run.clients.ec2
    for assoc in rt.get("Associations", []):
        if not assoc.get("Main"):
            ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
    run.retry(
        lambda: ec2.delete_route_table(RouteTableId=rt["RouteTableId"]),
        codes=("DependencyViolation",),
        timeout=120,
        reason="route table associations are still being removed",
    )


def _delete_igw(run: StepRun, igw: Resource) -> None:
    ec2 = run.clients.ec2
    igw_id = igw["InternetGatewayId"]
    for attachment in igw.get("Attachments", []):
        # "has mapped public addresses" clears once the NAT's EIP and the ALB's addresses are gone.
        run.retry(
            lambda a=attachment: ec2.detach_internet_gateway(
                InternetGatewayId=igw_id, VpcId=a["VpcId"]
            ),
            codes=("DependencyViolation",),
            timeout=DRAIN_TIMEOUT,
            reason="public addresses in the VPC are still being released",
        )
    ec2.delete_internet_gateway(InternetGatewayId=igw_id)
