"""sg: the three security groups and exactly the seed's ingress rules (seed 1.2).

Rules are compared whole (`sg_rules`): a rule the config doesn't name, whatever its protocol,
port range or source (an IPv6 range, a prefix list, another group), is drift that `plan` and
`status` report and `up` revokes.
"""

from __future__ import annotations

from ..aws.tags import ec2_spec
from ..engine.model import Pending
from ..resources import Resource
from ..resources.ec2 import SECURITY_GROUP
from .base import LabStep
from .run import Fix, StepRun
from .sg_rules import RuleKey, label, live_rules, tcp_key
from .vpc import replace_fix


class SgStep(LabStep):
    name = "sg"
    requires = ("vpc",)
    services = ("ec2",)
    description = "security groups for the ALB, ECS tasks and RDS"
    kinds = (SECURITY_GROUP,)  # rules naming other groups are revoked before any delete

    def reconcile(self, run: StepRun) -> dict:
        ec2 = run.clients.ec2
        vpc_id = run.outputs_of("vpc")["vpc_id"]
        groups = run.config.sg.groups
        ids: dict[str, str] = {}
        found: dict[str, Resource] = {}
        # All groups first: rules reference each other.
        for group in groups:

            def find(g=group):
                found[g.name] = SECURITY_GROUP.find(ec2, g.name, run.ctx.lab)
                return found[g.name]

            def create(g=group):
                created = ec2.create_security_group(
                    GroupName=g.name,
                    Description=g.description,
                    VpcId=vpc_id,
                    TagSpecifications=ec2_spec("security-group", run.tags(g.name)),
                )
                found[g.name] = {"GroupId": created["GroupId"], "IpPermissions": []}
                return found[g.name]

            ids[group.name] = run.ensure(
                SECURITY_GROUP,
                group.name,
                after=[vpc_id],
                find=find,
                create=create,
                fixes=lambda sg, g=group: _description_fix(sg, g),
            )
        names = {ident: name for name, ident in ids.items()}
        for group in groups:
            current = live_rules((found.get(group.name) or {}).get("IpPermissions", []))
            desired = {_rule_key(r, ids): r for r in group.ingress}
            for key, rule in desired.items():
                run.setting(
                    "ingress-rule",
                    f"{group.name} {label(key, names)}",
                    ok=key in current,
                    detail="authorize",
                    action="create",
                    apply=lambda r=rule, g=group: _authorize(ec2, ids[g.name], r, ids),
                )
            for key, permission in current.items():
                if key not in desired:
                    run.setting(
                        "ingress-rule",
                        f"{group.name} {label(key, names)}",
                        ok=False,
                        detail="not in config: revoke",
                        action="delete",
                        apply=lambda g=group, p=permission: ec2.revoke_security_group_ingress(
                            GroupId=ids[g.name], IpPermissions=[p]
                        ),
                    )
        return {"group_ids": ids}


def _description_fix(sg: Resource, group) -> list[Fix]:
    if sg.get("Description", group.description) == group.description:
        return []
    return [
        replace_fix(
            f"description {sg['Description']!r} -> {group.description!r}",
            f"security group {group.name}",
        )
    ]


def _rule_key(rule, ids: dict[str, str]) -> RuleKey:
    if rule.from_cidr is not None:
        return tcp_key(rule.port, f"cidr:{rule.from_cidr}")
    return tcp_key(rule.port, f"group:{ids[rule.from_group]}")


def _authorize(ec2, group_id: str, rule, ids: dict[str, str]) -> None:
    permission = {"IpProtocol": "tcp", "FromPort": rule.port, "ToPort": rule.port}
    if rule.from_cidr is not None:
        permission["IpRanges"] = [{"CidrIp": str(rule.from_cidr), "Description": rule.description}]
    else:
        source = ids[rule.from_group]
        assert not isinstance(source, Pending)
        permission["UserIdGroupPairs"] = [{"GroupId": source, "Description": rule.description}]
    ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=[permission])
