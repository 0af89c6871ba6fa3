"""The deletion rules of the strict AWS layer (strict.py): what AWS refuses to delete while
something still uses it, and moto deletes anyway. Each rule looks at moto's current state
through the layer's unhooked inspector clients and answers AWS's exact error, or None.

`StrictAws` mixes these in; they read its lags (a NAT gateway or DB instance AWS still reports
as deleting, a CloudFront update still deploying) and, in timed mode, its `timed` states.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LIVE_NAT = ("pending", "available")
LIVE_SERVICE = ("ACTIVE", "DRAINING")
GONE_DB = ("deleted",)


@dataclass(frozen=True)
class Violation:
    code: str
    message: str
    status: int = 400


class DeletionRules:
    def deletion_rules(self) -> dict[tuple[str, str], Callable[[dict], Violation | None]]:
        """(service, operation) -> its rule."""
        return {
            ("ec2", "ReleaseAddress"): self.rule_release_address,
            ("ec2", "DetachInternetGateway"): self.rule_detach_internet_gateway,
            ("ec2", "DeleteSecurityGroup"): self.rule_delete_security_group,
            ("ec2", "DeleteSubnet"): self.rule_delete_subnet,
            ("rds", "DeleteDBSubnetGroup"): self.rule_delete_db_subnet_group,
            ("rds", "DeleteDBInstance"): self.rule_delete_db_instance,
            ("cloudfront", "DeleteDistribution"): self.rule_delete_distribution,
            ("iam", "DeletePolicy"): self.rule_delete_policy,
            ("ecs", "DeleteCluster"): self.rule_delete_cluster,
            ("acm", "DeleteCertificate"): self.rule_delete_certificate,
        }

    # ------------------------------------------------------------------ what AWS still holds

    def _nat_live(self, nat: dict) -> bool:
        nat_id = nat["NatGatewayId"]
        return (
            nat.get("State") in LIVE_NAT
            or self._nat_deleting.active(nat_id)
            or self._timed_changing("nat-gateway", nat_id)
        )

    def _db_deleting_instances(self) -> list[dict]:
        return self._db_deleting.payloads() + self._timed_going("db-instance")

    def _timed_changing(self, kind: str, ident: str) -> bool:
        return self.timed is not None and self.timed.changing(kind, ident)

    def _timed_going(self, kind: str) -> list[dict]:
        """Deleted resources AWS still holds (timed mode): they still count as dependents."""
        return self.timed.going(kind) if self.timed else []

    # ------------------------------------------------------------------ what moto holds

    def _nats(self) -> list[dict]:
        return self.inspector("ec2").describe_nat_gateways()["NatGateways"]

    def _dead_nat_enis(self) -> set[str]:
        """moto keeps a deleted NAT gateway's network interface (and the EIP on it); AWS
        removes both once the gateway is gone."""
        return {
            address.get("NetworkInterfaceId")
            for nat in self._nats()
            if not self._nat_live(nat)
            for address in nat.get("NatGatewayAddresses", [])
        }

    def _enis(self, **filters: str) -> list[dict]:
        described = self.inspector("ec2").describe_network_interfaces(
            Filters=[{"Name": k, "Values": [v]} for k, v in filters.items()]
        )["NetworkInterfaces"]
        dead = self._dead_nat_enis()
        return [eni for eni in described if eni["NetworkInterfaceId"] not in dead]

    def _load_balancers(self) -> list[dict]:
        described = self.inspector("elbv2").describe_load_balancers()["LoadBalancers"]
        return described + self._timed_going("load-balancer")

    def _db_instances(self) -> list[dict]:
        live = [
            i
            for i in self.inspector("rds").describe_db_instances()["DBInstances"]
            if i.get("DBInstanceStatus") not in GONE_DB
        ]
        names = {i["DBInstanceIdentifier"] for i in live}
        return live + [
            i for i in self._db_deleting_instances() if i["DBInstanceIdentifier"] not in names
        ]

    def _ecs_services(self) -> list[dict]:
        ecs = self.inspector("ecs")
        found = []
        for cluster in ecs.list_clusters()["clusterArns"]:
            arns = ecs.list_services(cluster=cluster)["serviceArns"]
            for first in range(0, len(arns), 10):
                described = ecs.describe_services(
                    cluster=cluster, services=arns[first : first + 10]
                )
                found += [s for s in described["services"] if s.get("status") in LIVE_SERVICE]
        return found + self._timed_going("ecs-service")

    # ------------------------------------------------------------------ the rules

    def rule_release_address(self, params: dict) -> Violation | None:
        allocation = params.get("AllocationId")
        if not allocation:
            return None
        for nat in self._nats():
            addresses = [a.get("AllocationId") for a in nat.get("NatGatewayAddresses", [])]
            if allocation in addresses and self._nat_live(nat):
                return Violation(
                    "AuthFailure", "You do not have permission to access the specified resource."
                )
        found = self.inspector("ec2").describe_addresses(
            Filters=[{"Name": "allocation-id", "Values": [allocation]}]
        )["Addresses"]
        dead = self._dead_nat_enis()
        for address in found:
            if address.get("AssociationId") and address.get("NetworkInterfaceId") not in dead:
                return Violation(
                    "InvalidIPAddress.InUse", f"Address {address.get('PublicIp')} is in use."
                )
        return None

    def rule_detach_internet_gateway(self, params: dict) -> Violation | None:
        vpc_id = params.get("VpcId")
        mapped = [
            nat["NatGatewayId"]
            for nat in self._nats()
            if nat.get("VpcId") == vpc_id
            and self._nat_live(nat)
            and nat.get("ConnectivityType", "public") == "public"
        ]
        vpc_enis = {e["NetworkInterfaceId"] for e in self._enis(**{"vpc-id": vpc_id})}
        addresses = self.inspector("ec2").describe_addresses()["Addresses"]
        mapped += [a["PublicIp"] for a in addresses if a.get("NetworkInterfaceId") in vpc_enis]
        mapped += [
            lb["LoadBalancerName"]
            for lb in self._load_balancers()
            if lb.get("VpcId") == vpc_id
            and lb.get("Scheme", "internet-facing") == "internet-facing"
        ]
        if mapped:
            return Violation(
                "DependencyViolation",
                f"Network {vpc_id} has some mapped public address(es). Please unmap those "
                "public address(es) before detaching the gateway.",
            )
        return None

    def rule_delete_security_group(self, params: dict) -> Violation | None:
        group_id = params.get("GroupId")
        if not group_id:
            return None
        users: list[str] = []
        for group in self.inspector("ec2").describe_security_groups()["SecurityGroups"]:
            if group["GroupId"] == group_id:
                continue
            for perm in group.get("IpPermissions", []) + group.get("IpPermissionsEgress", []):
                if any(p.get("GroupId") == group_id for p in perm.get("UserIdGroupPairs", [])):
                    users.append(f"rule of {group['GroupId']}")
        users += [e["NetworkInterfaceId"] for e in self._enis(**{"group-id": group_id})]
        users += [
            lb["LoadBalancerName"]
            for lb in self._load_balancers()
            if group_id in lb.get("SecurityGroups", [])
        ]
        users += [
            db["DBInstanceIdentifier"]
            for db in self._db_instances()
            if group_id in [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])]
        ]
        users += [
            s["serviceName"]
            for s in self._ecs_services()
            if group_id in _awsvpc(s).get("securityGroups", [])
        ]
        if users:
            return Violation("DependencyViolation", f"resource {group_id} has a dependent object")
        return None

    def rule_delete_subnet(self, params: dict) -> Violation | None:
        subnet_id = params.get("SubnetId")
        if not subnet_id:
            return None
        users = [e["NetworkInterfaceId"] for e in self._enis(**{"subnet-id": subnet_id})]
        users += [
            n["NatGatewayId"]
            for n in self._nats()
            if n.get("SubnetId") == subnet_id and self._nat_live(n)
        ]
        users += [
            lb["LoadBalancerName"]
            for lb in self._load_balancers()
            if subnet_id in [z.get("SubnetId") for z in lb.get("AvailabilityZones", [])]
        ]
        users += [
            db["DBInstanceIdentifier"]
            for db in self._db_instances()
            if subnet_id
            in [s["SubnetIdentifier"] for s in (db.get("DBSubnetGroup") or {}).get("Subnets", [])]
        ]
        users += [
            s["serviceName"]
            for s in self._ecs_services()
            if subnet_id in _awsvpc(s).get("subnets", [])
        ]
        if users:
            return Violation(
                "DependencyViolation",
                f"The subnet '{subnet_id}' has dependencies and cannot be deleted.",
            )
        return None

    def rule_delete_db_subnet_group(self, params: dict) -> Violation | None:
        name = params.get("DBSubnetGroupName")
        for db in self._db_instances():
            if (db.get("DBSubnetGroup") or {}).get("DBSubnetGroupName") == name:
                return Violation(
                    "InvalidDBSubnetGroupStateFault",
                    f"Cannot delete the subnet group '{name}' because at least one database "
                    f"instance: {db['DBInstanceIdentifier']} is still using it.",
                )
        return None

    def rule_delete_db_instance(self, params: dict) -> Violation | None:
        if params.get("SkipFinalSnapshot") is True or params.get("FinalDBSnapshotIdentifier"):
            return None
        return Violation(
            "InvalidParameterCombination",
            "FinalDBSnapshotIdentifier is required unless SkipFinalSnapshot is specified.",
        )

    def rule_delete_distribution(self, params: dict) -> Violation | None:
        dist_id = params.get("Id", "")
        try:
            config = self.inspector("cloudfront").get_distribution_config(Id=dist_id)
        except self.inspector("cloudfront").exceptions.NoSuchDistribution:
            return None
        deploying = self._cf_in_progress.active(dist_id) or self._timed_changing(
            "distribution", dist_id
        )
        if config["DistributionConfig"].get("Enabled") or deploying:
            return Violation(
                "DistributionNotDisabled",
                "The distribution you are trying to delete has not been disabled.",
                409,
            )
        return None

    def _note_certificate(self, dist_id: str) -> None:
        """The certificate a distribution serves before an update: CloudFront lets go of it
        only once the update has deployed."""
        try:
            config = self.inspector("cloudfront").get_distribution_config(Id=dist_id)
        except self.inspector("cloudfront").exceptions.NoSuchDistribution:
            return
        arn = (config["DistributionConfig"].get("ViewerCertificate") or {}).get("ACMCertificateArn")
        with self._lock:
            if arn:
                self._cf_cert_before[dist_id] = arn
            else:
                self._cf_cert_before.pop(dist_id, None)

    def rule_delete_certificate(self, params: dict) -> Violation | None:
        arn = params.get("CertificateArn", "")
        cf = self.inspector("cloudfront")
        users = []
        for item in (cf.list_distributions().get("DistributionList") or {}).get("Items") or []:
            config = cf.get_distribution_config(Id=item["Id"])["DistributionConfig"]
            if (config.get("ViewerCertificate") or {}).get("ACMCertificateArn") == arn:
                users.append(item["Id"])
        with self._lock:
            releasing = [d for d, before in self._cf_cert_before.items() if before == arn]
        users += [
            d
            for d in releasing
            if self._cf_in_progress.active(d) or self._timed_changing("distribution", d)
        ]
        if users:
            return Violation("ResourceInUseException", f"Certificate {arn} is in use.")
        return None

    def rule_delete_policy(self, params: dict) -> Violation | None:
        arn = params.get("PolicyArn", "")
        entities = self.inspector("iam").list_entities_for_policy(PolicyArn=arn)
        if entities["PolicyRoles"] or entities["PolicyUsers"] or entities["PolicyGroups"]:
            return Violation("DeleteConflict", "Cannot delete a policy attached to entities.", 409)
        return None

    def rule_delete_cluster(self, params: dict) -> Violation | None:
        cluster = params.get("cluster", "")
        arns = self.inspector("ecs").list_services(cluster=cluster)["serviceArns"]
        draining = [
            s
            for s in self._timed_going("ecs-service")
            if cluster in (s.get("clusterArn"), s.get("clusterArn", "").rsplit("/", 1)[-1])
        ]
        if not arns and not draining:
            return None
        described = (
            self.inspector("ecs").describe_services(cluster=cluster, services=arns[:10])
            if arns
            else {"services": []}
        )
        if draining or any(s.get("status") in LIVE_SERVICE for s in described["services"]):
            return Violation(
                "ClusterContainsServicesException",
                "The Cluster cannot be deleted while Services are active.",
            )
        return None


def _awsvpc(service: dict) -> dict:
    return (service.get("networkConfiguration") or {}).get("awsvpcConfiguration") or {}
