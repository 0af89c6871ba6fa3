"""Every resource name derives from the lab's name unless the config gives it.

`lab: alice` gives `alice-vpc`, `alice-users`, `alice/products`, ...; `lab: microservices`
gives exactly the seed's names, so `config/lab.yaml` doesn't spell them out and
`--set lab=student07` yields a complete, independent lab. A name in the config still wins.

`fill` runs on the raw config (before validation): it only adds what is missing, inside the
sections that are there, so a missing section or a wrong type is still reported as such.
List entries without a natural key (security groups, tables) name themselves with a short
`key`: `{key: alb}` is `<lab>-alb-sg`, `{key: users}` is `<lab>-users`; a `from_group` or
`*.security_group` may name a group by its key.
"""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

_LAB = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
ELB_NAME_MAX = 32  # load balancers and target groups (ELBv2 API reference)
XRAY_GROUP_MAX = 32


def fit(lab: str, suffix: str, limit: int) -> str:
    """`<lab><suffix>`, or, when that is over `limit`, the lab's name shortened and made
    unique again with a hash of the whole of it (two long lab names never collide)."""
    name = f"{lab}{suffix}"
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(lab.encode()).hexdigest()[:6]
    head = lab[: max(limit - len(suffix) - len(digest) - 1, 0)].rstrip("-")
    return f"{head}-{digest}{suffix}" if head else f"{digest}{suffix}"


def admin_secret_name(lab: str) -> str:
    """The admin step's secret: the first admin user's password."""
    return f"{lab}/admin"


def origin_secret_name(lab: str) -> str:
    """The alb step's secret: the header value only API Gateway sends the ALB."""
    return f"{lab}/alb-origin"


def _dict(parent: Any, key: str) -> dict | None:
    value = parent.get(key) if isinstance(parent, dict) else None
    return value if isinstance(value, dict) else None


def _default(section: dict | None, key: str, value: str) -> None:
    if section is not None and section.get(key) is None:
        section[key] = value


def fill(data: dict) -> dict:
    """A copy of the raw config with every missing resource name derived from `lab`."""
    data = copy.deepcopy(data)
    lab = data.get("lab")
    # An invalid lab name is reported on its own; derive from a placeholder meanwhile.
    lab = lab if isinstance(lab, str) and _LAB.match(lab) else "lab"

    vpc = _dict(data, "vpc")
    for key, suffix in (
        ("name", "vpc"),
        ("internet_gateway", "igw"),
        ("nat_gateway", "nat"),
        ("public_route_table", "public-rt"),
        ("private_route_table", "private-rt"),
    ):
        _default(vpc, key, f"{lab}-{suffix}")
    for kind in ("public", "private"):
        subnets = vpc.get(f"{kind}_subnets") if vpc else None
        for i, subnet in enumerate(subnets if isinstance(subnets, list) else []):
            _default(subnet if isinstance(subnet, dict) else None, "name", f"{lab}-{kind}-{i + 1}")

    groups = _sg_groups(data, lab)
    rds = _dict(data, "rds")
    _default(rds, "subnet_group", f"{lab}-db-subnet-group")
    _default(rds, "identifier", f"{lab}-db")
    _default(rds, "parameter_group", f"{lab}-db-params")
    for section in ("rds", "alb", "ecs"):
        _security_group(_dict(data, section), section, groups, lab)

    tables = (_dict(data, "dynamodb") or {}).get("tables")
    for table in tables if isinstance(tables, list) else []:
        if isinstance(table, dict) and table.get("name") is None and table.get("key"):
            table["name"] = f"{lab}-{table['key']}"

    _default(_dict(data, "s3"), "bucket_prefix", f"{lab}-static")

    functions = _dict(_dict(data, "lambda"), "functions") or {}
    for key, function in functions.items():
        _default(function if isinstance(function, dict) else None, "name", f"{lab}-{key}")
    if data.get("iam") is None:  # every value in it is a name: the section may be left out
        data["iam"] = {}
    iam = _dict(data, "iam")
    if iam is not None:
        if iam.get("lambda_roles") is None:
            iam["lambda_roles"] = {}
        roles = _dict(iam, "lambda_roles")
        for key in functions:
            _default(roles, key, f"{lab}-lambda-{key}-role")
        _default(iam, "task_execution_role", f"{lab}-ecs-task-execution-role")
        _default(iam, "task_role", f"{lab}-ecs-task-role")

    ecs = _dict(data, "ecs")
    services = _dict(ecs, "services") or {}
    _default(ecs, "cluster", f"{lab}-cluster")
    for key, service in services.items():
        service = service if isinstance(service, dict) else None
        _default(service, "family", f"{lab}-{key}")
        _default(service, "service", f"{lab}-{key}-service")
        _default(service, "log_group", f"/ecs/{lab}-{key}")
    ecr = _dict(data, "ecr")
    if ecr is not None:
        if ecr.get("repositories") is None:
            ecr["repositories"] = {}
        for key in services:
            _default(_dict(ecr, "repositories"), key, f"{lab}/{key}")

    alb = _dict(data, "alb")
    _default(alb, "name", fit(lab, "-alb", ELB_NAME_MAX))
    for key, group in (_dict(alb, "target_groups") or {}).items():
        _default(
            group if isinstance(group, dict) else None, "name", fit(lab, f"-{key}-tg", ELB_NAME_MAX)
        )

    apigw = _dict(data, "apigw")
    _default(apigw, "name", f"{lab}-api")
    _default(apigw, "access_log_group", f"/aws/apigateway/{lab}-api")
    _default(_dict(data, "cloudfront"), "comment", f"{lab} lab")
    _default(_dict(data, "cloudwatch"), "dashboard", f"{lab}-dashboard")
    _default(_dict(data, "xray"), "group", lab[:XRAY_GROUP_MAX])
    return data


def _sg_groups(data: dict, lab: str) -> dict[str, str]:
    """Name the security groups that give only a key; resolve `from_group` keys to names.
    Returns {key: name}."""
    groups = (_dict(data, "sg") or {}).get("groups")
    groups = [g for g in groups if isinstance(g, dict)] if isinstance(groups, list) else []
    for group in groups:
        if group.get("name") is None and isinstance(group.get("key"), str):
            group["name"] = f"{lab}-{group['key']}-sg"
    names = {g["name"] for g in groups if isinstance(g.get("name"), str)}
    by_key = {g["key"]: g.get("name") for g in groups if isinstance(g.get("key"), str)}
    for group in groups:
        rules = group.get("ingress")
        for rule in rules if isinstance(rules, list) else []:
            if isinstance(rule, dict):
                source = rule.get("from_group")
                if isinstance(source, str) and source not in names and source in by_key:
                    rule["from_group"] = by_key[source]
    return by_key


def _security_group(section: dict | None, key: str, groups: dict[str, str], lab: str) -> None:
    """`rds.security_group` (and alb's, ecs's): the group of the same key by default; a key
    given there stands for that group's name."""
    if section is None:
        return
    chosen = section.get("security_group")
    if chosen is None:
        section["security_group"] = groups.get(key) or f"{lab}-{key}-sg"
    elif isinstance(chosen, str) and chosen in groups and chosen not in groups.values():
        section["security_group"] = groups[chosen]


def resource_names(config) -> dict[str, str]:
    """Every AWS name the config gives a resource, by its dotted place in the config."""
    names: dict[str, str] = {}
    vpc = config.vpc
    for key in ("name", "internet_gateway", "nat_gateway", "public_route_table"):
        names[f"vpc.{key}"] = getattr(vpc, key)
    names["vpc.private_route_table"] = vpc.private_route_table
    for kind in ("public_subnets", "private_subnets"):
        for i, subnet in enumerate(getattr(vpc, kind)):
            names[f"vpc.{kind}[{i}].name"] = subnet.name
    for i, group in enumerate(config.sg.groups):
        names[f"sg.groups[{i}].name"] = group.name
    for i, table in enumerate(config.dynamodb.tables):
        names[f"dynamodb.tables[{i}].name"] = table.name
    for key in ("subnet_group", "identifier", "parameter_group"):
        names[f"rds.{key}"] = getattr(config.rds, key)
    names["s3.bucket_prefix"] = config.s3.bucket_prefix
    for key, role in config.iam.lambda_roles.items():
        names[f"iam.lambda_roles.{key}"] = role
    names["iam.task_execution_role"] = config.iam.task_execution_role
    names["iam.task_role"] = config.iam.task_role
    for key, function in config.lambda_.functions.items():
        names[f"lambda.functions.{key}.name"] = function.name
    for key, repo in config.ecr.repositories.items():
        names[f"ecr.repositories.{key}"] = repo
    names["alb.name"] = config.alb.name
    for key, group in config.alb.target_groups.items():
        names[f"alb.target_groups.{key}.name"] = group.name
    names["ecs.cluster"] = config.ecs.cluster
    for key, service in config.ecs.services.items():
        for field in ("family", "service", "log_group"):
            names[f"ecs.services.{key}.{field}"] = getattr(service, field)
    names["apigw.name"] = config.apigw.name
    names["apigw.access_log_group"] = config.apigw.access_log_group
    names["cloudwatch.dashboard"] = config.cloudwatch.dashboard
    names["xray.group"] = config.xray.group
    return names
