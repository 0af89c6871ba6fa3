"""EC2 networking: VPC, subnet, internet gateway, route table, security group, Elastic IP,
NAT gateway.

EC2 names aren't unique: these kinds are found by the lab's tags (`msctl:lab` plus the
`msctl:name` the lab calls them), never by a Name, and listed the same way. The filters are
checked again on what comes back (an emulator may ignore some of them).

Deleting follows the orderings AWS enforces (aws-facts.md): a subnet, group or VPC answers
DependencyViolation while network interfaces of deleted services drain; the internet gateway
can't detach while the NAT gateway's Elastic IP is mapped; the Elastic IP can't be released
before its NAT gateway is deleted.
"""

from __future__ import annotations

from typing import ClassVar

from .. import costs
from ..aws.tags import LAB, NAME, as_dict, ec2_filters
from ..aws.waiters import Wait
from ..engine.step import StepError
from .base import Kind, Resource, first, only_one

# DependencyViolation clears once ENIs of deleted ALBs, tasks and databases are gone.
DRAIN_TIMEOUT = 600
NAT_DELETE_TIMEOUT = 600
NAT_DELETE_EXPECTED = 60  # seconds, typically, on AWS
EIP_RELEASE_TIMEOUT = 120
LIVE_NAT_STATES = ("pending", "available")


class Ec2Kind(Kind):
    service = "ec2"
    scanned = True
    describe_call: ClassVar[str]  # "describe_vpcs"
    ids_param: ClassVar[str]  # "VpcIds"
    list_key: ClassVar[str]  # "Vpcs"

    def describe(self, client, ident: str) -> Resource | None:
        return first(
            getattr(client, self.describe_call)(**{self.ids_param: [ident]})[self.list_key]
        )

    def tagged(self, client, lab: str | None, name: str | None = None, extra: list | None = None):
        """Its resources tagged for the lab (lab None: for any lab), alive."""
        filters = ec2_filters(lab, name) if lab else [{"Name": "tag-key", "Values": [LAB]}]
        found = getattr(client, self.describe_call)(Filters=filters + (extra or []))
        wanted = {LAB: lab, **({NAME: name} if name is not None else {})} if lab else {}
        return [
            r
            for r in found[self.list_key]
            if wanted.items() <= as_dict(r.get("Tags")).items() and self.alive(r)
        ]

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]

    def find(self, client, name: str, lab: str) -> Resource | None:
        return only_one(self.tagged(client, lab, name), f"{self.name} resources named {name}")

    def scan(self, client, lab: str | None):
        return self.tagged(client, lab)


class Vpc(Ec2Kind):
    name = "vpc"
    tagging_type = "ec2:vpc"
    id_key = "VpcId"
    describe_call, ids_param, list_key = "describe_vpcs", "VpcIds", "Vpcs"

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        run.retry(
            lambda: ec2.delete_vpc(VpcId=resource["VpcId"]),
            codes=("DependencyViolation",),
            timeout=DRAIN_TIMEOUT,
            reason="resources inside the VPC are still being deleted",
        )


class Subnet(Ec2Kind):
    name = "subnet"
    tagging_type = "ec2:subnet"
    id_key = "SubnetId"
    describe_call, ids_param, list_key = "describe_subnets", "SubnetIds", "Subnets"

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        run.retry(
            lambda: ec2.delete_subnet(SubnetId=resource["SubnetId"]),
            codes=("DependencyViolation",),
            timeout=DRAIN_TIMEOUT,
            reason="network interfaces of deleted services are still draining",
        )


class InternetGateway(Ec2Kind):
    name = "internet-gateway"
    tagging_type = "ec2:internet-gateway"
    id_key = "InternetGatewayId"
    describe_call = "describe_internet_gateways"
    ids_param, list_key = "InternetGatewayIds", "InternetGateways"

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        igw_id = resource["InternetGatewayId"]
        for attachment in resource.get("Attachments", []):
            # "has mapped public addresses" clears once the NAT's EIP and the ALB are gone.
            run.retry(
                lambda a=attachment: ec2.detach_internet_gateway(
                    InternetGatewayId=igw_id, VpcId=a["VpcId"]
                ),
                codes=("DependencyViolation",),
                timeout=DRAIN_TIMEOUT,
                reason="public addresses in the VPC are still being released",
            )
        ec2.delete_internet_gateway(InternetGatewayId=igw_id)


class RouteTable(Ec2Kind):
    name = "route-table"
    tagging_type = "ec2:route-table"
    id_key = "RouteTableId"
    describe_call, ids_param, list_key = "describe_route_tables", "RouteTableIds", "RouteTables"

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        for assoc in resource.get("Associations", []):
            if not assoc.get("Main"):
                ec2.disassociate_route_table(AssociationId=assoc["RouteTableAssociationId"])
        run.retry(
            lambda: ec2.delete_route_table(RouteTableId=resource["RouteTableId"]),
            codes=("DependencyViolation",),
            timeout=120,
            reason="route table associations are still being removed",
        )


class SecurityGroup(Ec2Kind):
    name = "security-group"
    tagging_type = "ec2:security-group"
    id_key = "GroupId"
    name_key = "GroupName"
    describe_call, ids_param, list_key = "describe_security_groups", "GroupIds", "SecurityGroups"

    def prepare(self, run, resources: list[Resource]) -> None:
        """A group can't be deleted while another group's rule names it: revoke those."""
        ec2 = self.client(run.ctx)
        for group in resources:
            referencing = [p for p in group.get("IpPermissions", []) if p.get("UserIdGroupPairs")]
            if referencing:
                run.setting(
                    "ingress-rule",
                    f"{group.get('GroupName', group['GroupId'])} group references",
                    ok=False,
                    detail="revoke before deleting groups",
                    action="delete",
                    apply=lambda g=group["GroupId"], p=referencing: (
                        ec2.revoke_security_group_ingress(GroupId=g, IpPermissions=p)
                    ),
                )

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        run.retry(
            lambda: ec2.delete_security_group(GroupId=resource["GroupId"]),
            codes=("DependencyViolation", "InvalidGroup.InUse"),
            timeout=DRAIN_TIMEOUT,
            reason="network interfaces of deleted tasks, databases or load balancers "
            "still use the group",
        )


class ElasticIp(Ec2Kind):
    name = "elastic-ip"
    tagging_type = "ec2:elastic-ip"
    id_key = "AllocationId"
    hourly = costs.PUBLIC_IPV4
    describe_call, ids_param, list_key = "describe_addresses", "AllocationIds", "Addresses"

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return super().label(resource, tags) or resource.get("PublicIp", "")

    def delete(self, run, resource: Resource) -> None:
        ec2 = self.client(run.ctx)
        run.retry(
            lambda: ec2.release_address(AllocationId=resource["AllocationId"]),
            codes=("InvalidIPAddress.InUse", "AuthFailure", "DependencyViolation"),
            timeout=EIP_RELEASE_TIMEOUT,
            reason="a deleted NAT gateway still holds the address",
        )


class NatGateway(Ec2Kind):
    name = "nat-gateway"
    tagging_type = "ec2:natgateway"
    id_key = "NatGatewayId"
    hourly = costs.NAT_GATEWAY
    missing = ("NatGatewayNotFound",)
    describe_call, ids_param, list_key = "describe_nat_gateways", "NatGatewayIds", "NatGateways"

    def alive(self, resource: Resource) -> bool:
        # Deleted ones stay listed for an hour; deleting and failed ones don't bill.
        return resource.get("State") in LIVE_NAT_STATES

    def tagged(self, client, lab: str, name: str | None = None, extra: list | None = None):
        state = [{"Name": "state", "Values": list(LIVE_NAT_STATES)}]
        return super().tagged(client, lab, name, [*(extra or []), *state])

    def delete(self, run, resource: Resource) -> Wait:
        ec2 = self.client(run.ctx)
        nat_id = resource["NatGatewayId"]
        ec2.delete_nat_gateway(NatGatewayId=nat_id)

        def gone() -> tuple[bool, str]:
            nats = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
            state = nats[0]["State"] if nats else "deleted"
            return state == "deleted", state

        return Wait(
            f"NAT gateway {nat_id} to be deleted", gone, NAT_DELETE_TIMEOUT, NAT_DELETE_EXPECTED
        )


def nat_state(ec2, nat_id: str) -> tuple[bool, str]:
    """(available?, state) of a NAT gateway being created; a failed one is an error."""
    nats = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
    state = nats[0]["State"] if nats else "not visible yet"
    if state == "failed":
        raise StepError(
            f"NAT gateway {nat_id} failed: {nats[0].get('FailureMessage', '')}",
            hint="run `msctl down --only nat` and `msctl up` again",
        )
    return state == "available", state


VPC = Vpc()
SUBNET = Subnet()
INTERNET_GATEWAY = InternetGateway()
ROUTE_TABLE = RouteTable()
SECURITY_GROUP = SecurityGroup()
ELASTIC_IP = ElasticIp()
NAT_GATEWAY = NatGateway()
