"""nat: Elastic IP, NAT gateway in the first public subnet, private default route (seed 1.1).

A step of its own because the NAT gateway takes 1.5-2 min on AWS and only the container
tasks (image pulls, AWS APIs) need it: the rest of the lab doesn't wait for it.
"""

from __future__ import annotations

import hashlib

from ..aws.tags import LAB, NAME, as_dict, ec2_filters, ec2_spec
from ..engine.model import is_pending
from ..engine.step import Resource, Step, StepError, StepRun, only_one
from .vpc import DEFAULT_ROUTE, default_route_fix

LIVE_NAT_STATES = ["pending", "available"]
NAT_CREATE_TIMEOUT = 600
NAT_DELETE_TIMEOUT = 600
NEW_ID_TIMEOUT = 60


class NatStep(Step):
    name = "nat"
    requires = ("vpc",)
    services = ("ec2",)
    description = "Elastic IP, NAT gateway, private default route"

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.vpc
        ec2 = run.clients.ec2
        lab = run.ctx.lab
        net = run.outputs_of("vpc")
        subnet_id = net["public_subnet_ids"][0]
        eip_name = f"{cfg.nat_gateway}-eip"

        allocation_id = run.ensure(
            "elastic-ip",
            eip_name,
            id_key="AllocationId",
            find=lambda: find_eip(ec2, lab, eip_name),
            create=lambda: ec2.allocate_address(
                Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", run.tags(eip_name))
            ),
        )
        nat_id = run.ensure(
            "nat-gateway",
            cfg.nat_gateway,
            id_key="NatGatewayId",
            after=[subnet_id, allocation_id],
            find=lambda: find_nat(ec2, lab, cfg.nat_gateway),
            create=lambda: ec2.create_nat_gateway(
                SubnetId=subnet_id,
                AllocationId=allocation_id,
                ClientToken=_token(lab, cfg.nat_gateway),
                TagSpecifications=ec2_spec("natgateway", run.tags(cfg.nat_gateway)),
            )["NatGateway"],
        )
        run.wait(
            f"NAT gateway {cfg.nat_gateway}",
            lambda: _nat_state(ec2, nat_id),
            timeout=NAT_CREATE_TIMEOUT,
        )
        rt_id = net["private_route_table_id"]
        rt = (
            {"RouteTableId": rt_id, "Routes": []}
            if is_pending(rt_id)
            # The vpc step may have created it a moment ago: EC2 reads are eventually
            # consistent, and a new id can answer NotFound for a few seconds.
            else run.retry(
                lambda: ec2.describe_route_tables(RouteTableIds=[rt_id])["RouteTables"][0],
                codes=("InvalidRouteTableID.NotFound",),
                timeout=NEW_ID_TIMEOUT,
                reason=f"the new route table {rt_id} is not visible yet",
            )
        )
        fix = default_route_fix(ec2, rt, {"NatGatewayId": nat_id})
        run.setting(
            "route",
            f"{cfg.private_route_table} {DEFAULT_ROUTE}",
            ok=fix is None,
            detail=fix.detail if fix else f"-> {nat_id}",
            apply=fix.apply if fix else lambda: None,
            action="create" if fix and is_pending(rt_id, nat_id) else "update",
        )
        return {"nat_gateway_id": nat_id, "elastic_ip_allocation_id": allocation_id}

    def teardown(self, run: StepRun) -> None:
        cfg = run.config.vpc
        ec2 = run.clients.ec2
        lab = run.ctx.lab
        # AWS order: delete the NAT and wait until it is gone, then release its EIP.
        run.remove(
            "nat-gateway",
            cfg.nat_gateway,
            find=lambda: find_nat(ec2, lab, cfg.nat_gateway),
            delete=lambda nat: _delete_nat(run, nat["NatGatewayId"]),
        )
        eip_name = f"{cfg.nat_gateway}-eip"
        run.remove(
            "elastic-ip",
            eip_name,
            find=lambda: find_eip(ec2, lab, eip_name),
            delete=lambda eip: run.retry(
                lambda: ec2.release_address(AllocationId=eip["AllocationId"]),
                codes=("InvalidIPAddress.InUse", "AuthFailure", "DependencyViolation"),
                timeout=120,
                reason="the deleted NAT gateway still holds the address",
            ),
        )


def _token(lab: str, name: str) -> str:
    return hashlib.sha256(f"{lab}/{name}".encode()).hexdigest()[:32]


def find_eip(ec2, lab: str, name: str) -> Resource | None:
    addresses = ec2.describe_addresses(Filters=ec2_filters(lab, name))["Addresses"]
    return only_one(addresses, f"Elastic IPs named {name}")


def find_nat(ec2, lab: str, name: str) -> Resource | None:
    # Deleted NAT gateways stay visible for about an hour: only live ones count.
    filters = ec2_filters(lab, name) + [{"Name": "state", "Values": LIVE_NAT_STATES}]
    nats = ec2.describe_nat_gateways(Filters=filters)["NatGateways"]
    # moto ignores tag filters on this call: check the tags (harmless on AWS).
    wanted = {LAB: lab, NAME: name}
    nats = [
        n
        for n in nats
        if n.get("State") in LIVE_NAT_STATES and wanted.items() <= as_dict(n.get("Tags")).items()
    ]
    return only_one(nats, f"NAT gateways named {name}")


def _nat_state(ec2, nat_id: str) -> tuple[bool, str]:
    nats = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
    state = nats[0]["State"] if nats else "not visible yet"
    if state == "failed":
        raise StepError(
            f"NAT gateway {nat_id} failed: {nats[0].get('FailureMessage', '')}",
            hint="run `msctl down --only nat` and `msctl up` again",
        )
    return state == "available", state


def _delete_nat(run: StepRun, nat_id: str) -> None:
    ec2 = run.clients.ec2
    ec2.delete_nat_gateway(NatGatewayId=nat_id)

    def gone() -> tuple[bool, str]:
        nats = ec2.describe_nat_gateways(NatGatewayIds=[nat_id])["NatGateways"]
        state = nats[0]["State"] if nats else "deleted"
        return state == "deleted", state

    run.wait(f"NAT gateway {nat_id} to be deleted", gone, timeout=NAT_DELETE_TIMEOUT)
