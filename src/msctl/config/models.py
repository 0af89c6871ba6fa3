"""The lab config's pydantic models (unknown keys refused) and the rules that span fields."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from . import names


def _name(pattern: str, max_length: int, what: str):
    return Annotated[
        str,
        StringConstraints(pattern=pattern, min_length=1, max_length=max_length),
        Field(description=what),
    ]


# AWS naming rules, each from the service's API reference.
LabName = _name(r"^[a-z][a-z0-9-]*$", 32, "lowercase letters, digits and hyphens")
Ec2Name = _name(r"^[\x20-\x7e]+$", 255, "printable ASCII")
TableName = _name(r"^[A-Za-z0-9_.-]{3,255}$", 255, "3-255 of A-Z a-z 0-9 _ . -")
RdsIdentifier = _name(r"^[A-Za-z](?:[A-Za-z0-9]|-[A-Za-z0-9])*$", 63, "letter first, no --")
# RDS stores parameter group names in lowercase: only lowercase compares equal.
RdsParameterGroup = _name(r"^[a-z](?:[a-z0-9]|-[a-z0-9])*$", 255, "lowercase, letter first, no --")
IamName = _name(r"^[\w+=,.@-]+$", 64, "IAM name characters")
FunctionName = _name(r"^[A-Za-z0-9_-]+$", 64, "letters, digits, - and _")
RepoName = _name(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$", 256, "ECR")
ElbName = _name(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$", 32, "ELB name")
EcsName = _name(r"^[A-Za-z0-9_-]+$", 255, "letters, digits, - and _")
LogGroup = _name(r"^[.\-_/#A-Za-z0-9]+$", 512, "log group characters")
StageName = _name(r"^[A-Za-z0-9_]+$", 128, "letters, digits and _")
BucketPrefix = _name(r"^[a-z0-9][a-z0-9-]*$", 54, "lowercase bucket characters")
# A short key a list entry names itself by (<lab>-<key>-sg, <lab>-<key>).
ShortKey = _name(r"^[a-z][a-z0-9-]*$", 32, "lowercase letters, digits and hyphens")
Port = Annotated[int, Field(ge=1, le=65535)]
RetentionDays = Literal[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CorsConfig(Model):
    allowed_origins: list[str] = Field(min_length=1)
    allowed_headers: list[str] = Field(min_length=1)
    allowed_methods: list[str] = Field(min_length=1)


class SubnetConfig(Model):
    name: Ec2Name
    cidr: ipaddress.IPv4Network
    az: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}-[a-z]+-\d[a-z]$")]


class VpcConfig(Model):
    name: Ec2Name
    cidr: ipaddress.IPv4Network
    public_subnets: list[SubnetConfig] = Field(min_length=2, max_length=2)
    private_subnets: list[SubnetConfig] = Field(min_length=2, max_length=2)
    internet_gateway: Ec2Name
    nat_gateway: Ec2Name
    public_route_table: Ec2Name
    private_route_table: Ec2Name


class IngressRule(Model):
    port: Port
    from_cidr: ipaddress.IPv4Network | None = None
    from_group: Ec2Name | None = None
    description: Annotated[str, StringConstraints(max_length=255)] = ""


class SecurityGroupConfig(Model):
    key: ShortKey | None = None  # the name is <lab>-<key>-sg unless given
    name: Ec2Name
    description: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    ingress: list[IngressRule] = []


class SgConfig(Model):
    groups: list[SecurityGroupConfig] = Field(min_length=1)


class TableConfig(Model):
    key: ShortKey | None = None  # the name is <lab>-<key> unless given
    name: TableName
    partition_key: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    ttl_attribute: str | None = None


class DynamoDbConfig(Model):
    tables: list[TableConfig] = Field(min_length=1)
    # A key-schema change deletes and recreates the table (and its data) only when true.
    allow_replace: bool = False


class RdsConfig(Model):
    subnet_group: Annotated[str, StringConstraints(pattern=r"^[a-z0-9 ._-]+$", max_length=255)]
    identifier: RdsIdentifier
    engine_version: Annotated[str, StringConstraints(pattern=r"^\d+(\.\d+)?$")]
    instance_class: Annotated[str, StringConstraints(pattern=r"^db\.[a-z0-9]+\.[a-z0-9]+$")]
    allocated_storage: Annotated[int, Field(ge=20, le=65536)]
    storage_type: Literal["gp2", "gp3", "io1", "io2", "standard"]
    master_username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]\w{0,62}$")]
    db_name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]\w{0,62}$")]
    security_group: Ec2Name
    # The instance's parameters: rds.force_ssl=1, so every connection must use TLS.
    parameter_group: RdsParameterGroup
    final_snapshot: bool = False
    deletion_protection: bool = False
    multi_az: bool = False  # a standby in the second AZ: twice the instance's cost


class S3Config(Model):
    bucket_prefix: BucketPrefix
    site_dir: Path


FunctionKey = Literal["auth", "users", "notifications", "authorizer"]


class IamConfig(Model):
    # One role per function: each gets only what its own code calls.
    lambda_roles: dict[FunctionKey, IamName]
    task_execution_role: IamName
    task_role: IamName


class FunctionConfig(Model):
    name: FunctionName
    source: Path


class LambdaConfig(Model):
    # The lab's functions use Python 3.11 APIs (lab/functions): no older runtime.
    runtime: Literal["python3.11", "python3.12", "python3.13"]
    memory_mb: Annotated[int, Field(ge=128, le=10240)]
    timeout_seconds: Annotated[int, Field(ge=1, le=900)]
    session_ttl_hours: Annotated[int, Field(ge=1, le=720)]
    functions: dict[FunctionKey, FunctionConfig]


class EcrConfig(Model):
    repositories: dict[str, RepoName] = Field(min_length=1)
    keep_images: Annotated[int, Field(ge=1, le=1000)] = 5
    images: dict[str, Annotated[str, StringConstraints(min_length=1)]] = {}


class TargetGroupConfig(Model):
    name: ElbName
    path_pattern: Annotated[str, StringConstraints(pattern=r"^/[\w*/.-]*$", max_length=128)]


class AlbConfig(Model):
    name: ElbName
    security_group: Ec2Name
    health_check_path: Annotated[str, StringConstraints(pattern=r"^/")]
    deregistration_delay_seconds: Annotated[int, Field(ge=0, le=3600)]
    certificate_arn: Annotated[str, StringConstraints(pattern=r"^arn:aws[\w-]*:acm:")] | None = None
    target_groups: dict[str, TargetGroupConfig] = Field(min_length=1)


class ServiceConfig(Model):
    source: Path
    family: EcsName
    service: EcsName
    cpu: Literal[256, 512, 1024, 2048, 4096, 8192, 16384]
    memory: Annotated[int, Field(ge=512, le=122880)]  # in MiB; the pairs: FARGATE_MEMORY
    port: Port
    desired_count: Annotated[int, Field(ge=0, le=100)]
    log_group: LogGroup


class AutoscalingConfig(Model):
    min_capacity: Annotated[int, Field(ge=0, le=100)]
    max_capacity: Annotated[int, Field(ge=1, le=100)]
    cpu_target_percent: Annotated[float, Field(gt=0, le=100)]


class EcsConfig(Model):
    cluster: EcsName
    container_insights: bool = True
    security_group: Ec2Name
    services: dict[str, ServiceConfig] = Field(min_length=1)
    autoscaling: AutoscalingConfig


class ThrottleConfig(Model):
    rate_limit: Annotated[float, Field(gt=0)]
    burst_limit: Annotated[int, Field(gt=0)]


class ApigwConfig(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
    description: str = ""
    stage: StageName
    throttle: ThrottleConfig
    access_log_group: LogGroup


class CloudFrontConfig(Model):
    comment: Annotated[str, StringConstraints(max_length=128)] = ""
    api_path_pattern: Annotated[str, StringConstraints(pattern=r"^/[\w*/.-]+\*$")]
    price_class: Literal["PriceClass_100", "PriceClass_200", "PriceClass_All"]


class Route53Config(Model):
    domain: (
        Annotated[
            str, StringConstraints(pattern=r"^([a-z0-9-]{1,63}\.)+[a-z]{2,63}$", max_length=253)
        ]
        | None
    ) = None
    record: Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,63}$")] = "api"


class CloudWatchConfig(Model):
    dashboard: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,255}$")]
    log_retention_days: RetentionDays = 7
    alarm_email: Annotated[str, StringConstraints(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")] | None = (
        None
    )


class XrayConfig(Model):
    group: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,32}$")]
    sampling_rate: Annotated[float, Field(ge=0, le=1)]


S3_STATE = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/-]*)?$"


class StateConfig(Model):
    """Where the lab's state lives: `local` (the state dir, .msctl/ by default) or an S3
    bucket and prefix shared by a team (written as `s3://bucket/prefix`)."""

    backend: Literal["local", "s3"] = "local"
    url: Annotated[str, StringConstraints(pattern=S3_STATE, max_length=1024)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data):
        if isinstance(data, str):
            return {"backend": "s3", "url": data} if data.startswith("s3://") else {"backend": data}
        return data

    @model_validator(mode="after")
    def _url_for_s3(self):
        if (self.backend == "s3") != (self.url is not None):
            raise ValueError("the s3 backend needs url: s3://bucket/prefix; local takes none")
        return self

    @property
    def location(self) -> str | None:
        """The S3 URL, or None for the local state dir."""
        return self.url.rstrip("/") if self.url else None


class LabConfig(Model):
    lab: LabName
    region: Annotated[str, StringConstraints(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$")]
    cors: CorsConfig
    vpc: VpcConfig
    sg: SgConfig
    dynamodb: DynamoDbConfig
    rds: RdsConfig
    s3: S3Config
    iam: IamConfig
    lambda_: LambdaConfig = Field(alias="lambda")
    ecr: EcrConfig
    alb: AlbConfig
    ecs: EcsConfig
    apigw: ApigwConfig
    cloudfront: CloudFrontConfig
    route53: Route53Config
    cloudwatch: CloudWatchConfig
    xray: XrayConfig
    state: StateConfig = StateConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # The directory the config file lives in; relative source paths resolve against its parent
    # project (config/lab.yaml -> project root) so msctl runs from anywhere.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _derive_names(cls, data):
        return names.fill(data) if isinstance(data, dict) else data

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else (self.base_dir / relative).resolve()


# ---------------------------------------------------------------- cross-field checks


def cross_checks(config: LabConfig) -> list[tuple[tuple, str]]:
    """Rules that span fields; each returns (location, message)."""
    return [
        *_check_subnets(config.vpc),
        *_check_groups(config),
        *_check_services(config),
        *_check_bucket(config),
        *_check_roles(config),
    ]


def _check_subnets(vpc: VpcConfig) -> list[tuple[tuple, str]]:
    problems = []
    subnets = [("public_subnets", i, s) for i, s in enumerate(vpc.public_subnets)]
    subnets += [("private_subnets", i, s) for i, s in enumerate(vpc.private_subnets)]
    for kind, i, subnet in subnets:
        if not subnet.cidr.subnet_of(vpc.cidr):
            problems.append(
                (("vpc", kind, i, "cidr"), f"{subnet.cidr} is not inside the VPC CIDR {vpc.cidr}")
            )
    for a in range(len(subnets)):
        for b in range(a + 1, len(subnets)):
            if subnets[a][2].cidr.overlaps(subnets[b][2].cidr):
                kind, i, s = subnets[b]
                other = f"vpc.{subnets[a][0]}[{subnets[a][1]}]"
                problems.append(((("vpc", kind, i, "cidr")), f"{s.cidr} overlaps {other}"))
    for kind in ("public_subnets", "private_subnets"):
        azs = {s.az for s in getattr(vpc, kind)}
        if len(azs) != 2:
            problems.append((("vpc", kind), "the two subnets must be in two different AZs"))
    names = [s.name for _, _, s in subnets]
    for kind, i, s in subnets:
        if names.count(s.name) > 1:
            problems.append((("vpc", kind, i, "name"), f"subnet name {s.name!r} is used twice"))
    return problems


def _check_groups(config: LabConfig) -> list[tuple[tuple, str]]:
    problems = []
    names = [g.name for g in config.sg.groups]
    for i, group in enumerate(config.sg.groups):
        if names.count(group.name) > 1:
            problems.append((("sg", "groups", i, "name"), f"group {group.name!r} is defined twice"))
        for j, rule in enumerate(group.ingress):
            loc = ("sg", "groups", i, "ingress", j)
            if (rule.from_cidr is None) == (rule.from_group is None):
                problems.append((loc, "set exactly one of from_cidr or from_group"))
            elif rule.from_group is not None and rule.from_group not in names:
                problems.append(
                    (
                        loc + ("from_group",),
                        f"no security group named {rule.from_group!r} in sg.groups",
                    )
                )
    for loc, name in (
        (("rds", "security_group"), config.rds.security_group),
        (("alb", "security_group"), config.alb.security_group),
        (("ecs", "security_group"), config.ecs.security_group),
    ):
        if name not in names:
            problems.append((loc, f"no security group named {name!r} in sg.groups"))
    return problems + _world_open(config)


# Only the load balancer faces the internet, and only on the web's ports (AWS Foundational
# Security Best Practices EC2.18's authorized ports; no SSH or RDP: EC2.13, EC2.14, CIS 5.2).
WORLD_PORTS = (80, 443)


def _world_open(config: LabConfig) -> list[tuple[tuple, str]]:
    """Ingress from 0.0.0.0/0 on the groups the database and the tasks use, or to any port
    but 80 and 443 on any group."""
    inward = {
        config.rds.security_group: "the database's group (rds.security_group)",
        config.ecs.security_group: "the ECS tasks' group (ecs.security_group)",
    }
    problems = []
    for i, group in enumerate(config.sg.groups):
        for j, rule in enumerate(group.ingress):
            if rule.from_cidr is None or rule.from_cidr.prefixlen:
                continue
            opened = inward.get(group.name)
            if opened is None and rule.port not in WORLD_PORTS:
                opened = f"port {rule.port} of {group.name} (only 80 and 443 may be)"
            if opened:
                problems.append(
                    (
                        ("sg", "groups", i, "ingress", j, "from_cidr"),
                        f"port {rule.port} from {rule.from_cidr} opens {opened} to the whole "
                        "internet: allow it from a group (from_group) or a narrower range",
                    )
                )
    return problems


# The task memory (MiB) Fargate runs with each task CPU size (ECS RegisterTaskDefinition).
FARGATE_MEMORY = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}


def _fargate_sizes(cpu: int) -> str:
    sizes = FARGATE_MEMORY[cpu]
    if len(sizes) <= 3:
        return f"{', '.join(map(str, sizes[:-1]))} or {sizes[-1]}"
    return f"{sizes[0]} to {sizes[-1]} in steps of {sizes[1] - sizes[0]}"


def _check_services(config: LabConfig) -> list[tuple[tuple, str]]:
    problems = []
    for name, service in config.ecs.services.items():
        if service.memory not in FARGATE_MEMORY[service.cpu]:
            problems.append(
                (
                    ("ecs", "services", name, "memory"),
                    f"Fargate runs {service.cpu} CPU units with {_fargate_sizes(service.cpu)} "
                    f"MiB of memory, not {service.memory}",
                )
            )
    services = set(config.ecs.services)
    for section, keys in (
        ("ecr", ("repositories",)),
        ("alb", ("target_groups",)),
    ):
        for key in keys:
            declared = set(getattr(getattr(config, section), key))
            if declared != services:
                problems.append(
                    (
                        (section, key),
                        f"must name the same services as ecs.services ({', '.join(sorted(services))})",
                    )
                )
    for name in config.ecr.images:
        if name not in services:
            problems.append((("ecr", "images", name), f"{name!r} is not a service in ecs.services"))
    scaling = config.ecs.autoscaling
    if scaling.min_capacity > scaling.max_capacity:
        problems.append((("ecs", "autoscaling", "min_capacity"), "must not exceed max_capacity"))
    for name, service in config.ecs.services.items():
        if not (scaling.min_capacity <= service.desired_count <= scaling.max_capacity):
            problems.append(
                (
                    ("ecs", "services", name, "desired_count"),
                    "must lie within autoscaling min..max capacity",
                )
            )
    return problems


def _check_bucket(config: LabConfig) -> list[tuple[tuple, str]]:
    prefix = config.s3.bucket_prefix
    if prefix.endswith("-") or "--" in prefix:
        return [(("s3", "bucket_prefix"), "must not end with '-' or contain '--'")]
    return []


def _check_roles(config: LabConfig) -> list[tuple[tuple, str]]:
    problems = []
    functions = set(config.lambda_.functions)
    if set(config.iam.lambda_roles) != functions:
        problems.append(
            (
                ("iam", "lambda_roles"),
                f"must name a role for each function in lambda.functions "
                f"({', '.join(sorted(functions))})",
            )
        )
    roles = [*config.iam.lambda_roles.values(), config.iam.task_execution_role]
    roles.append(config.iam.task_role)
    for name in sorted({r for r in roles if roles.count(r) > 1}):
        problems.append((("iam",), f"role {name!r} is named twice: each role needs its own name"))
    return problems
