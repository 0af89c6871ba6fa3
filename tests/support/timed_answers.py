"""What each service answers while its resources change (timed.py's states), written into the
answers moto gave: a create's answer as AWS gives it, then each describe, get and list as AWS
would show the resource at that moment. moto's own answer is kept for everything the layer
didn't see made.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

STEP_TAG = "msctl:step"


class Answers:
    """A mixin of TimedStates (timed.py): `after` notes creates, updates and deletes from a
    call's answer, and shows the states AWS would show now."""

    def after(self, service: str, op: str, params: dict, parsed: dict) -> None:
        handler = getattr(self, f"_after_{service.replace('-', '_')}", None)
        if handler:
            handler(op, params, parsed)

    def _after_ec2(self, op: str, params: dict, parsed: dict) -> None:
        if op == "CreateNatGateway":
            self.born("nat-gateway", (parsed.get("NatGateway") or {}).get("NatGatewayId"), params)
        elif op == "DeleteNatGateway":
            self.died("nat-gateway", params.get("NatGatewayId", ""))
        elif op != "DescribeNatGateways":
            return
        nats = parsed.get("NatGateways") or (
            [parsed["NatGateway"]] if "NatGateway" in parsed else []
        )
        for nat in nats:
            phase = self.phase("nat-gateway", nat.get("NatGatewayId", ""))
            shown = {"creating": "pending", "deleting": "deleting"}.get(phase or "")
            if shown:
                nat["State"] = shown
                self.saw("nat-gateway", shown)
        filters = params.get("Filter") or params.get("Filters") or []
        wanted = [f["Values"] for f in filters if f.get("Name") == "state"]
        if wanted and "NatGateways" in parsed:
            parsed["NatGateways"] = [n for n in nats if n["State"] in wanted[0]]

    def _after_rds(self, op: str, params: dict, parsed: dict) -> None:
        if "DBInstance" not in parsed and "DBInstances" not in parsed:
            return
        ident = params.get("DBInstanceIdentifier", "")
        if op == "CreateDBInstance":
            self.born("db-instance", ident, params)
        elif op == "DeleteDBInstance":
            parsed["DBInstance"]["DBInstanceStatus"] = "deleting"
            self.died("db-instance", ident, copy.deepcopy(parsed["DBInstance"]))
            return
        instances = parsed.get("DBInstances") or [parsed.get("DBInstance") or {}]
        for instance in instances:
            if self.phase("db-instance", instance.get("DBInstanceIdentifier", "")) == "creating":
                instance["DBInstanceStatus"] = "creating"
                instance.pop("Endpoint", None)
                self.saw("db-instance", "creating")
        if op == "DescribeDBInstances" and not ident and not params.get("Filters"):
            listed = {i.get("DBInstanceIdentifier") for i in instances}
            going = [
                i for i in self.going("db-instance") if i["DBInstanceIdentifier"] not in listed
            ]
            parsed["DBInstances"] += going
            for _ in going:
                self.saw("db-instance", "deleting")

    def _after_elbv2(self, op: str, params: dict, parsed: dict) -> None:
        if op == "CreateLoadBalancer":
            for lb in parsed.get("LoadBalancers") or []:
                self.born("load-balancer", lb["LoadBalancerArn"], params)
        elif op == "DeleteLoadBalancer":
            arn = params.get("LoadBalancerArn", "")
            self.died("load-balancer", arn, self.was("load-balancer", arn))
            return
        for lb in parsed.get("LoadBalancers") or []:
            state = lb.setdefault("State", {})
            if self.phase("load-balancer", lb["LoadBalancerArn"]) == "creating":
                state["Code"] = "provisioning"
                self.saw("load-balancer", "provisioning")
            elif self.life("load-balancer", lb["LoadBalancerArn"]):
                state["Code"] = "active" if state.get("Code") == "provisioning" else state["Code"]

    def _after_ecs(self, op: str, params: dict, parsed: dict) -> None:
        svc = parsed.get("service") or {}
        arn = svc.get("serviceArn", "")
        if op == "CreateService":
            subnets = _awsvpc(svc).get("subnets") or []
            self.born("ecs-service", arn, params, False, subnets=subnets)
        elif op == "DeleteService":
            self.died(
                "ecs-service", arn, {**(self.was("ecs-service", arn) or svc), "status": "DRAINING"}
            )
        elif op == "UpdateService":
            before = self.was("ecs-service", arn) or {}
            new_revision = svc.get("taskDefinition") != before.get("taskDefinition")
            if params.get("forceNewDeployment") or (params.get("taskDefinition") and new_revision):
                self.updated("ecs-service", arn, settle_later=True)
        for service in parsed.get("services") or ([svc] if svc else []):
            self._show_service(service)

    def _show_service(self, svc: dict) -> None:
        arn = svc.get("serviceArn", "")
        phase = self.phase("ecs-service", arn)
        primary = [d for d in svc.get("deployments") or [] if d.get("status") == "PRIMARY"][:1]
        if phase == "deleting":
            svc["status"] = "DRAINING"
            self.saw("ecs-service", "DRAINING")
        elif phase in ("creating", "updating"):
            start = self.life("ecs-service", arn).meta.get("start")
            started = start is not None and self.clock() >= start
            counts = {
                "runningCount": 0,
                "pendingCount": svc.get("desiredCount", 0) if started else 0,
            }
            svc.update(counts)
            for d in primary:
                reason = f"ECS deployment {d.get('id')} in progress."
                d.update(counts, rolloutState="IN_PROGRESS", rolloutStateReason=reason)
            self.saw("ecs-service", "IN_PROGRESS")
        elif phase is None and self.life("ecs-service", arn) and svc.get("status") == "ACTIVE":
            desired = svc.get("desiredCount", 0)
            counts = {"runningCount": desired, "pendingCount": 0}
            svc.update(counts, deployments=primary)
            for d in primary:
                reason = f"ECS deployment {d.get('id')} completed."
                d.update(counts, desiredCount=desired, rolloutState="COMPLETED")
                d["rolloutStateReason"] = reason

    def _after_lambda(self, op: str, params: dict, parsed: dict) -> None:
        name = function_name(params.get("FunctionName") or "")
        if op == "CreateFunction":
            self.born("lambda-function", name, params)
        elif op in ("UpdateFunctionCode", "UpdateFunctionConfiguration"):
            self.updated("lambda-function", name)
        elif op == "DeleteFunction":
            self.died("lambda-function", name)
            return
        config = parsed.get("Configuration") if op == "GetFunction" else parsed
        if not config or "FunctionName" not in config:
            return
        phase = self.phase("lambda-function", name)
        last = ("LastUpdateStatus", "LastUpdateStatusReason", "LastUpdateStatusReasonCode")
        if phase == "creating":
            for key in last:
                config.pop(key, None)
            config.update(State="Pending", StateReasonCode="Creating")
            config["StateReason"] = "The function is being created."
            self.saw("lambda-function", "Pending")
        elif phase == "updating":
            config.update(State="Active", LastUpdateStatus="InProgress")
            config["LastUpdateStatusReason"] = "The function is being updated."
            self.saw("lambda-function", "InProgress")
        elif self.life("lambda-function", name):
            for key in ("StateReason", "StateReasonCode", *last[1:]):
                config.pop(key, None)
            config.update(State="Active", LastUpdateStatus="Successful")

    def _after_cloudfront(self, op: str, params: dict, parsed: dict) -> None:
        dist = parsed.get("Distribution") or {}
        if op.startswith("CreateDistribution"):
            self.born("distribution", dist.get("Id", ""), params)
        elif op == "UpdateDistribution":
            self.updated("distribution", params.get("Id", ""))
        elif op == "DeleteDistribution":
            self.died("distribution", params.get("Id", ""))
            return
        items = (parsed.get("DistributionList") or {}).get("Items") or []
        for item in [dist, *items] if dist else items:
            if self.life("distribution", item.get("Id", "")):
                deploying = self.changing("distribution", item["Id"])
                item["Status"] = "InProgress" if deploying else "Deployed"
                if deploying:
                    self.saw("distribution", "InProgress")

    def _after_route53(self, op: str, params: dict, parsed: dict) -> None:
        info = parsed.get("ChangeInfo")
        if not info:
            return
        if op == "GetChange":
            change = info.get("Id", "").rsplit("/", 1)[-1]
            if self.life("route53-change", change):
                pending = self.changing("route53-change", change)
                info["Status"] = "PENDING" if pending else "INSYNC"
                if pending:
                    self.saw("route53-change", "PENDING")
            return
        names = [
            dns(c["ResourceRecordSet"]["Name"])
            for c in (params.get("ChangeBatch") or {}).get("Changes") or []
            if c.get("Action") in ("CREATE", "UPSERT") and c["ResourceRecordSet"]["Type"] == "CNAME"
        ]
        # moto answers every change with the same id; AWS gives each its own.
        change = f"C{uuid.uuid4().hex[:13].upper()}"
        info.update(Id=f"/change/{change}", Status="PENDING")
        self.born("route53-change", change, params, names=names)
        with self._lock:
            self._cnames.update(dict.fromkeys(names, change))

    def _after_acm(self, op: str, params: dict, parsed: dict) -> None:
        if op == "RequestCertificate":
            self.born("certificate", parsed.get("CertificateArn", ""), params, False)
        elif op == "DeleteCertificate":
            self.died("certificate", params.get("CertificateArn", ""))
        certs = parsed.get("CertificateSummaryList") or [parsed.get("Certificate") or {}]
        for cert in certs:
            arn = cert.get("CertificateArn", "")
            phase = self.phase("certificate", arn)
            if not self.life("certificate", arn) or phase not in (None, "creating"):
                continue
            pending = phase == "creating"
            cert["Status"] = "PENDING_VALIDATION" if pending else "ISSUED"
            for option in cert.get("DomainValidationOptions") or []:
                option["ValidationStatus"] = "PENDING_VALIDATION" if pending else "SUCCESS"
            if pending:
                self.saw("certificate", "PENDING_VALIDATION")
        wanted = params.get("CertificateStatuses")
        if wanted and "CertificateSummaryList" in parsed:
            parsed["CertificateSummaryList"] = [c for c in certs if c.get("Status") in wanted]


def step_of(params: Any) -> str | None:
    """The step tag among a create call's tags, in whichever shape the service takes them."""
    if isinstance(params, dict):
        if params.get("Key", params.get("key")) == STEP_TAG:
            return params.get("Value", params.get("value"))
        if isinstance(params.get(STEP_TAG), str):
            return params[STEP_TAG]
        values = [v for k, v in params.items() if k not in ("ZipFile", "Body")]
    else:
        values = params if isinstance(params, list) else []
    return next((found for v in values if (found := step_of(v))), None)


def read(call: Callable[[], dict]) -> dict | None:
    """A read of moto's state; None when what it names is gone."""
    try:
        return call()
    except ClientError:
        return None


def function_name(ident: str) -> str:
    """A Lambda function's name from its name, ARN or partial ARN."""
    parts = ident.split(":")
    if "function" in parts:
        return parts[parts.index("function") + 1]
    return parts[0]


def dns(name: str) -> str:
    return name.rstrip(".").lower()


def _awsvpc(service: dict) -> dict:
    return (service.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
