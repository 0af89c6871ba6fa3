"""nat: Elastic IP, NAT gateway in the first public subnet, private default route (seed 1.1).

A step of its own because the NAT gateway takes 1.5-2 min on AWS and only the container
tasks (image pulls, AWS APIs) need it: the rest of the lab doesn't wait for it.
"""

from __future__ import annotations

import hashlib

from ..aws.tags import ec2_spec
from ..engine.model import is_pending
from ..resources.ec2 import ELASTIC_IP, NAT_GATEWAY, nat_state
from .base import LabStep
from .run import StepRun
from .vpc import DEFAULT_ROUTE, default_route_fix

NAT_CREATE_TIMEOUT = 600
NAT_CREATE_EXPECTED = 120  # seconds, typically, on AWS (1.5-2 min)
NEW_ID_TIMEOUT = 60


class NatStep(LabStep):
    name = "nat"
    requires = ("vpc",)
    services = ("ec2",)
    description = "Elastic IP, NAT gateway, private default route"
    kinds = (ELASTIC_IP, NAT_GATEWAY)  # deleted NAT first (and waited), then its address

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.vpc
        ec2 = run.clients.ec2
        lab = run.ctx.lab
        net = run.outputs_of("vpc")
        subnet_id = net["public_subnet_ids"][0]
        eip_name = f"{cfg.nat_gateway}-eip"

        allocation_id = run.ensure(
            ELASTIC_IP,
            eip_name,
            create=lambda: ec2.allocate_address(
                Domain="vpc", TagSpecifications=ec2_spec("elastic-ip", run.tags(eip_name))
            ),
        )
        nat_id = run.ensure(
            NAT_GATEWAY,
            cfg.nat_gateway,
            after=[subnet_id, allocation_id],
            create=lambda: ec2.create_nat_gateway(
                SubnetId=subnet_id,
                AllocationId=allocation_id,
                ClientToken=_token(lab, cfg.nat_gateway),
                TagSpecifications=ec2_spec("natgateway", run.tags(cfg.nat_gateway)),
            )["NatGateway"],
        )
        run.wait(
            f"NAT gateway {cfg.nat_gateway}",
            lambda: nat_state(ec2, nat_id),
            timeout=NAT_CREATE_TIMEOUT,
            expected=NAT_CREATE_EXPECTED,
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


def _token(lab: str, name: str) -> str:
    return hashlib.sha256(f"{lab}/{name}".encode()).hexdigest()[:32]
