"""The lab config: pydantic models, YAML loading with line numbers, --set overrides.

Every problem is reported as `<file>:<line>: <dotted.path>: <what was expected>`.
"""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError


class ConfigError(Exception):
    """A user error in the config: `problems` are complete one-line messages."""

    def __init__(self, problems: list[str]):
        self.problems = [_one_line(p) for p in problems]
        super().__init__("\n".join(self.problems))


def _one_line(text: str) -> str:
    """Control characters (a newline inside a quoted key, ...) escaped: one problem, one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


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
IamName = _name(r"^[\w+=,.@-]+$", 64, "IAM name characters")
FunctionName = _name(r"^[A-Za-z0-9_-]+$", 64, "letters, digits, - and _")
RepoName = _name(r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$", 256, "ECR")
ElbName = _name(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$", 32, "ELB name")
EcsName = _name(r"^[A-Za-z0-9_-]+$", 255, "letters, digits, - and _")
LogGroup = _name(r"^[.\-_/#A-Za-z0-9]+$", 512, "log group characters")
StageName = _name(r"^[A-Za-z0-9_]+$", 128, "letters, digits and _")
BucketPrefix = _name(r"^[a-z0-9][a-z0-9-]*$", 54, "lowercase bucket characters")
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
    name: Ec2Name
    description: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    ingress: list[IngressRule] = []


class SgConfig(Model):
    groups: list[SecurityGroupConfig] = Field(min_length=1)


class TableConfig(Model):
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
    final_snapshot: bool = False
    deletion_protection: bool = False


class S3Config(Model):
    bucket_prefix: BucketPrefix
    site_dir: Path


class IamConfig(Model):
    lambda_role: IamName
    task_execution_role: IamName
    task_role: IamName


class FunctionConfig(Model):
    name: FunctionName
    source: Path


class LambdaConfig(Model):
    runtime: Literal["python3.10", "python3.11", "python3.12", "python3.13"]
    memory_mb: Annotated[int, Field(ge=128, le=10240)]
    timeout_seconds: Annotated[int, Field(ge=1, le=900)]
    session_ttl_hours: Annotated[int, Field(ge=1, le=720)]
    functions: dict[Literal["auth", "users", "notifications", "authorizer"], FunctionConfig]


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
    cpu: Literal[256, 512, 1024, 2048, 4096]
    memory: Annotated[int, Field(ge=512, le=30720)]
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

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    # The directory the config file lives in; relative source paths resolve against its parent
    # project (config/lab.yaml -> project root) so msctl runs from anywhere.
    base_dir: Path = Field(default=Path("."), exclude=True)

    def path(self, relative: Path) -> Path:
        return relative if relative.is_absolute() else (self.base_dir / relative).resolve()


# ---------------------------------------------------------------- loading


def load_config(path: Path, overrides: list[str] = ()) -> LabConfig:
    """Read, override and validate. Raises ConfigError with one line per problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {path} not found (pass -c/--config PATH)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read config file {path}: {exc}"]) from None
    if len(text) > MAX_CONFIG_CHARS:
        raise ConfigError(
            [
                f"{path}: {len(text)} characters is far more than a lab config (the limit is "
                f"{MAX_CONFIG_CHARS}); is this the right file?"
            ]
        )
    try:
        node, data = _parse(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    except RecursionError:  # the limits below make this unreachable; never a traceback
        raise ConfigError([f"{path}: YAML nested too deeply to read"]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}:1: the config must be a mapping of sections, not {_kind(data)}"]
        )
    lines = _line_index(node)
    overridden: set[tuple] = set()
    for item in overrides:
        overridden.add(_apply_override(data, item))
    base = path.resolve().parent
    base_dir = base.parent if base.name == "config" else base
    try:
        config = LabConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        problems = [
            _problem(path, lines, overridden, tuple(err["loc"]), _message(err))
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None
    problems = [_problem(path, lines, overridden, loc, msg) for loc, msg in cross_checks(config)]
    if problems:
        raise ConfigError(problems)
    return config


# A YAML "bomb" (billion laughs: anchors whose aliases multiply) composes to a small graph
# but expands to billions of values once constructed and walked, and a recursive alias never
# ends. A lab config is a few hundred values, a few levels deep: these limits are far above
# that and far below harm.
MAX_CONFIG_CHARS = 1_000_000
MAX_YAML_DEPTH = 50
MAX_YAML_VALUES = 100_000


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing (PyYAML's composer recurses),
    and reports a value it can't construct (a date like 2024-13-45, an integer too long to
    convert) as a YAML error with its line instead of a bare ValueError."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_YAML_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"can't read this value: {exc}", node.start_mark
            ) from None


def _parse(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """The composed node graph (for line numbers) and the data, refusing alias bombs."""
    loader = _GuardedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_aliases(path, node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_aliases(path: Path, root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it beyond MAX_YAML_VALUES values or
    MAX_YAML_DEPTH levels, or refer to a node that contains them. Each distinct node is
    visited once (sizes are memoized), so a bomb is caught in the time of its text."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        where = f"{path}:{node.start_mark.line + 1}"
        if done:
            ancestors.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_VALUES:
                raise ConfigError(
                    [
                        f"{where}: YAML aliases expand the config to more than {MAX_YAML_VALUES} "
                        "values (an alias bomb?); write the values out instead"
                    ]
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise ConfigError(
                    [
                        f"{where}: YAML aliases nest the config more than {MAX_YAML_DEPTH} "
                        "levels deep; write the values out instead"
                    ]
                )
            continue
        if key in size:
            continue
        ancestors.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in ancestors:
                raise ConfigError(
                    [
                        f"{where}: a YAML alias refers to a value that contains it; a config "
                        "can't be recursive"
                    ]
                )
            if id(child) not in size:
                stack.append((child, False))


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(
        type(value), type(value).__name__
    )


def _line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map each path (tuple of keys and indexes) to its 1-based line in the file."""
    index: dict[tuple, int] = {}

    def walk(n: yaml.Node, loc: tuple) -> None:
        index[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = loc + (key.value,)
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, loc + (i,))

    if node is not None:
        walk(node, ())
    return index


def _apply_override(data: dict, item: str) -> tuple:
    key, sep, raw = item.partition("=")
    parts = tuple(p for p in key.strip().split("."))
    if not sep or not all(parts):
        raise ConfigError(
            [f"--set {item}: expected dotted.key=value, e.g. --set rds.instance_class=db.t3.small"]
        )
    try:
        value = _parse(Path("--set"), raw)[1] if raw.strip() else ""
    except (yaml.YAMLError, ConfigError, RecursionError):
        value = raw
    target = data
    for i, part in enumerate(parts[:-1]):
        child = target.get(part) if isinstance(target, dict) else None
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                [f"--set {item}: {where} is not a section, cannot set {key} inside it"]
            )
        target = child
    target[parts[-1]] = value
    return parts


def _problem(path: Path, lines: dict, overridden: set, loc: tuple, message: str) -> str:
    loc = tuple("lambda" if part == "lambda_" else part for part in loc)
    dotted = _dotted(loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in overridden:
            return f"--set {_dotted(loc[:n])}: {dotted}: {message}"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{path}:{lines[loc[:n]]}: {dotted}: {message}"
    return f"{path}: {dotted}: {message}"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required but missing"
    if kind == "extra_forbidden":
        return "unknown key (check the spelling; see config/lab.yaml for every key)"
    if kind == "string_pattern_mismatch":
        return f"{_shown(err['input'])} is not a valid name ({_pattern_hint(err)})"
    message = err["msg"]
    if "input" in err and kind not in {"model_type", "dict_type", "list_type"}:
        message += f" (got {_shown(err['input'])})"
    return message


def _shown(value: Any, limit: int = 200) -> str:
    """The value as in the config, shortened; an integer too long to print says so."""
    try:
        text = repr(value)
    except ValueError:
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pattern_hint(err: dict) -> str:
    pattern = err.get("ctx", {}).get("pattern", "")
    return f"must match {pattern}"


# ---------------------------------------------------------------- cross-field checks


def cross_checks(config: LabConfig) -> list[tuple[tuple, str]]:
    """Rules that span fields; each returns (location, message)."""
    return [
        *_check_subnets(config.vpc),
        *_check_groups(config),
        *_check_services(config),
        *_check_bucket(config),
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
    return problems


def _check_services(config: LabConfig) -> list[tuple[tuple, str]]:
    problems = []
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
