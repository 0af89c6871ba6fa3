"""Config validation: each kind of mistake gives a specific message with the YAML line."""

from __future__ import annotations

from pathlib import Path

import pytest

from msctl.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
LAB = (ROOT / "config" / "lab.yaml").read_text()


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text(text)
    return path


def problems(tmp_path, text=LAB, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), list(overrides))
    return err.value.problems


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_the_shipped_lab_is_valid_and_has_the_seed_values():
    config = load_config(ROOT / "config" / "lab.yaml")
    assert config.vpc.name == "microservices-vpc" and str(config.vpc.cidr) == "10.0.0.0/16"
    assert [str(s.cidr) for s in config.vpc.public_subnets] == ["10.0.1.0/24", "10.0.2.0/24"]
    assert [str(s.cidr) for s in config.vpc.private_subnets] == ["10.0.11.0/24", "10.0.12.0/24"]
    assert [g.name for g in config.sg.groups] == [
        "microservices-alb-sg",
        "microservices-ecs-sg",
        "microservices-rds-sg",
    ]
    assert config.rds.instance_class == "db.t3.micro" and config.rds.allocated_storage == 20
    assert config.ecs.services["products"].family == "microservices-products"
    assert config.apigw.stage == "prod"
    assert config.base_dir == ROOT


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_syntax_error_has_the_line(tmp_path):
    text = LAB.replace("  cidr: 10.0.0.0/16", "  cidr: [10.0.0.0/16")
    (msg,) = problems(tmp_path, text)
    assert "YAML syntax error" in msg and msg.startswith(str(tmp_path / "lab.yaml") + ":")


def test_not_a_mapping(tmp_path):
    assert problems(tmp_path, "- a\n- b\n") == [
        f"{tmp_path / 'lab.yaml'}:1: the config must be a mapping of sections, not a list"
    ]


def test_unknown_key_with_line(tmp_path):
    text = LAB.replace(
        "  instance_class: db.t3.micro", "  instance_class: db.t3.micro\n  instanse_size: 3"
    )
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'lab.yaml'}:{line_of(text, 'instanse_size')}: rds.instanse_size: unknown key; "
        "did you mean 'instance_class'?"
    ]
    far = LAB.replace("  instance_class: db.t3.micro", "  instance_class: db.t3.micro\n  zzz: 3")
    assert problems(tmp_path, far) == [
        f"{tmp_path / 'lab.yaml'}:{line_of(far, 'zzz')}: rds.zzz: unknown key "
        "(check the spelling; see config/lab.yaml for every key)"
    ]


def test_wrong_type_with_line(tmp_path):
    text = LAB.replace("allocated_storage: 20", "allocated_storage: twenty")
    (msg,) = problems(tmp_path, text)
    assert msg.startswith(
        f"{tmp_path / 'lab.yaml'}:{line_of(text, 'twenty')}: rds.allocated_storage: "
    )
    assert "valid integer" in msg and "'twenty'" in msg


def test_missing_section(tmp_path):
    text = LAB.replace("xray:", "xray_disabled:")
    msgs = problems(tmp_path, text)
    assert any(m.endswith("xray: required but missing") for m in msgs)


def test_subnet_outside_vpc(tmp_path):
    text = LAB.replace("10.0.12.0/24", "10.1.12.0/24")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'lab.yaml'}:{line_of(text, '10.1.12.0/24')}: vpc.private_subnets[1].cidr: "
        "10.1.12.0/24 is not inside the VPC CIDR 10.0.0.0/16"
    ]


def test_overlapping_subnets(tmp_path):
    text = LAB.replace("cidr: 10.0.11.0/24", "cidr: 10.0.1.0/25")
    (msg,) = problems(tmp_path, text)
    assert "vpc.private_subnets[0].cidr: 10.0.1.0/25 overlaps vpc.public_subnets[0]" in msg


def test_two_azs_required(tmp_path):
    text = LAB.replace(
        "{cidr: 10.0.2.0/24, az: us-east-1b}",
        "{cidr: 10.0.2.0/24, az: us-east-1a}",
    )
    assert any(
        "vpc.public_subnets: the two subnets must be in two different AZs" in m
        for m in problems(tmp_path, text)
    )


def test_invalid_port(tmp_path):
    text = LAB.replace("{port: 443,", "{port: 70000,")
    (msg,) = problems(tmp_path, text)
    assert "sg.groups[0].ingress[1].port" in msg and "less than or equal to 65535" in msg


def test_security_group_reference_must_exist(tmp_path):
    text = LAB.replace("from_group: ecs,", "from_group: microservices-ec2-sg,")
    (msg,) = problems(tmp_path, text)
    assert msg.endswith(
        "sg.groups[2].ingress[0].from_group: no security group named 'microservices-ec2-sg' in sg.groups"
    )


def test_rule_needs_exactly_one_source(tmp_path):
    text = LAB.replace(
        "{port: 80, from_cidr: 0.0.0.0/0,",
        "{port: 80, from_cidr: 0.0.0.0/0, from_group: alb,",
    )
    (msg,) = problems(tmp_path, text)
    assert "sg.groups[0].ingress[0]: set exactly one of from_cidr or from_group" in msg


WORLD = "internet: allow it from a group (from_group) or a narrower range"


@pytest.mark.parametrize(
    "rule, location, opens",
    [
        (
            "{port: 5432, from_group: ecs,",
            "sg.groups[2].ingress[0].from_cidr: port 5432 from 0.0.0.0/0",
            "the database's group (rds.security_group)",
        ),
        (
            "{port: 8080, from_group: alb,",
            "sg.groups[1].ingress[1].from_cidr: port 8080 from 0.0.0.0/0",
            "the ECS tasks' group (ecs.security_group)",
        ),
    ],
)
def test_the_database_and_task_groups_never_open_to_the_world(tmp_path, rule, location, opens):
    port = rule.split(",")[0]
    text = LAB.replace(rule, f"{port}, from_cidr: 0.0.0.0/0,")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'lab.yaml'}:{line_of(text, f'{port}, from_cidr: 0.0.0.0/0')}: "
        f"{location} opens {opens} to the whole {WORLD}"
    ]
    # A narrower range is a choice the config may make.
    load_config(write(tmp_path, LAB.replace(rule, f"{port}, from_cidr: 10.0.0.0/16,")))


def test_only_the_web_ports_open_to_the_world(tmp_path):
    text = LAB.replace(
        "        - {port: 443, from_cidr: 0.0.0.0/0, description: HTTPS from anywhere}",
        "        - {port: 443, from_cidr: 0.0.0.0/0, description: HTTPS from anywhere}\n"
        "        - {port: 22, from_cidr: 0.0.0.0/0, description: SSH}",
    )
    (msg,) = problems(tmp_path, text)
    assert msg.endswith(
        "sg.groups[0].ingress[2].from_cidr: port 22 from 0.0.0.0/0 opens port 22 of "
        f"microservices-alb-sg (only 80 and 443 may be) to the whole {WORLD}"
    )


def test_every_function_has_its_own_role(tmp_path):
    text = LAB.replace("    authorizer: {source: lab/functions/authorizer}\n", "")
    (msg,) = problems(tmp_path, text, ["iam.lambda_roles.authorizer=x-role"])
    assert msg.endswith(
        "iam.lambda_roles: must name a role for each function in lambda.functions "
        "(auth, notifications, users)"
    )
    (msg,) = problems(tmp_path, overrides=["iam.task_role=microservices-lambda-users-role"])
    assert msg.endswith(
        "role 'microservices-lambda-users-role' is named twice: each role needs its own name"
    )


@pytest.mark.parametrize(
    "key, value, expect",
    [
        ("rds.identifier", "1db", "rds.identifier: '1db' is not a valid name"),
        (
            "alb.name",
            "a-load-balancer-name-that-is-far-too-long",
            "alb.name: String should have at most 32 characters",
        ),
        (
            "lambda.functions.auth.name",
            "bad name",
            "lambda.functions.auth.name: 'bad name' is not a valid name",
        ),
        (
            "ecr.repositories.products",
            "Microservices/Products",
            "ecr.repositories.products: 'Microservices/Products' is not a valid name",
        ),
        ("lab", "Bad_Lab", "lab: 'Bad_Lab' is not a valid name"),
        (
            "dynamodb.tables",
            "[{name: ab, partition_key: id}]",
            "dynamodb.tables[0].name: 'ab' is not a valid name",
        ),
    ],
)
def test_aws_name_limits(tmp_path, key, value, expect):
    msgs = problems(tmp_path, overrides=[f"{key}={value}"])
    assert any(expect in m for m in msgs), msgs
    assert all(m.startswith(f"--set {key.split('.')[0]}") or m.startswith("--set") for m in msgs)


def test_set_overrides_are_validated_like_the_file(tmp_path):
    config = load_config(
        write(tmp_path, LAB), ["rds.instance_class=db.t3.small", "ecs.autoscaling.max_capacity=6"]
    )
    assert config.rds.instance_class == "db.t3.small"
    assert config.ecs.autoscaling.max_capacity == 6
    assert problems(tmp_path, overrides=["vpc.cidr=not-a-cidr"])[0].startswith(
        "--set vpc.cidr: vpc.cidr:"
    )


def test_set_can_add_a_map_entry(tmp_path):
    config = load_config(
        write(tmp_path, LAB), ["ecr.images.products=123.dkr.ecr.us-east-1.amazonaws.com/p:1"]
    )
    assert config.ecr.images == {"products": "123.dkr.ecr.us-east-1.amazonaws.com/p:1"}


def test_services_must_line_up(tmp_path):
    msgs = problems(tmp_path, overrides=["ecr.images.billing=x"])
    assert msgs == [
        "--set ecr.images.billing: ecr.images.billing: 'billing' is not a service in ecs.services"
    ]


def test_a_key_given_twice_is_an_error_not_the_last_one_wins(tmp_path):
    text = LAB.replace(
        "  instance_class: db.t3.micro",
        "  instance_class: db.t3.micro\n  instance_class: db.t3.large",
    )
    first, second = line_of(text, "db.t3.micro"), line_of(text, "db.t3.large")
    assert problems(tmp_path, text) == [
        f"{tmp_path / 'lab.yaml'}:{second}: YAML syntax error: key 'instance_class' is given "
        f"twice (first on line {first})"
    ]


@pytest.mark.parametrize(
    ("cpu", "memory", "expect"),
    [
        (256, 4096, "Fargate runs 256 CPU units with 512, 1024 or 2048 MiB of memory, not 4096"),
        (1024, 1536, "Fargate runs 1024 CPU units with 2048 to 8192 in steps of 1024 MiB"),
        (4096, 4096, "Fargate runs 4096 CPU units with 8192 to 30720 in steps of 1024 MiB"),
    ],
)
def test_fargate_cpu_and_memory_must_be_a_pair_aws_runs(tmp_path, cpu, memory, expect):
    sets = [f"ecs.services.products.cpu={cpu}", f"ecs.services.products.memory={memory}"]
    (msg,) = problems(tmp_path, overrides=sets)
    assert msg.startswith("--set ecs.services.products.memory: ecs.services.products.memory: ")
    assert expect in msg
    assert load_config(
        write(tmp_path, LAB), ["ecs.services.products.cpu=512", "ecs.services.products.memory=3072"]
    )


def test_lambda_runtimes_older_than_the_lab_code_are_refused(tmp_path):
    (msg,) = problems(tmp_path, overrides=["lambda.runtime=python3.10"])
    assert "lambda.runtime: Input should be 'python3.11', 'python3.12' or 'python3.13'" in msg


def test_a_huge_config_is_refused_without_reading_it_whole(tmp_path):
    import tracemalloc

    from msctl.config.loading import MAX_CONFIG_BYTES

    huge = tmp_path / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(200 * MAX_CONFIG_BYTES)  # sparse: 200 MB that take no disk
    for path in (huge, Path("/dev/zero")):
        tracemalloc.start()
        try:
            with pytest.raises(ConfigError) as err:
                load_config(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert err.value.problems == [
            f"{path}: more than {MAX_CONFIG_BYTES} bytes is far more than a lab config; "
            "is this the right file?"
        ]
        assert peak < 3 * MAX_CONFIG_BYTES, peak

    fits = tmp_path / "fits.yaml"
    fits.write_bytes(LAB.encode() + b"#" * (MAX_CONFIG_BYTES - len(LAB.encode()) - 1) + b"\n")
    assert load_config(fits).lab == "microservices"


# ---------------------------------------------------------------- names from the lab's name

# Every name today's seed lab has, as config/lab.yaml spelled them out before they derived
# from `lab`.
SEED_NAMES = {
    "vpc.name": "microservices-vpc",
    "vpc.internet_gateway": "microservices-igw",
    "vpc.nat_gateway": "microservices-nat",
    "vpc.public_route_table": "microservices-public-rt",
    "vpc.private_route_table": "microservices-private-rt",
    "vpc.public_subnets[0].name": "microservices-public-1",
    "vpc.public_subnets[1].name": "microservices-public-2",
    "vpc.private_subnets[0].name": "microservices-private-1",
    "vpc.private_subnets[1].name": "microservices-private-2",
    "sg.groups[0].name": "microservices-alb-sg",
    "sg.groups[1].name": "microservices-ecs-sg",
    "sg.groups[2].name": "microservices-rds-sg",
    "dynamodb.tables[0].name": "microservices-users",
    "dynamodb.tables[1].name": "microservices-sessions",
    "rds.subnet_group": "microservices-db-subnet-group",
    "rds.identifier": "microservices-db",
    "rds.parameter_group": "microservices-db-params",
    "s3.bucket_prefix": "microservices-static",
    "iam.lambda_roles.auth": "microservices-lambda-auth-role",
    "iam.lambda_roles.users": "microservices-lambda-users-role",
    "iam.lambda_roles.notifications": "microservices-lambda-notifications-role",
    "iam.lambda_roles.authorizer": "microservices-lambda-authorizer-role",
    "iam.task_execution_role": "microservices-ecs-task-execution-role",
    "iam.task_role": "microservices-ecs-task-role",
    "lambda.functions.auth.name": "microservices-auth",
    "lambda.functions.users.name": "microservices-users",
    "lambda.functions.notifications.name": "microservices-notifications",
    "lambda.functions.authorizer.name": "microservices-authorizer",
    "ecr.repositories.products": "microservices/products",
    "ecr.repositories.orders": "microservices/orders",
    "alb.name": "microservices-alb",
    "alb.target_groups.products.name": "microservices-products-tg",
    "alb.target_groups.orders.name": "microservices-orders-tg",
    "ecs.cluster": "microservices-cluster",
    "ecs.services.products.family": "microservices-products",
    "ecs.services.products.service": "microservices-products-service",
    "ecs.services.products.log_group": "/ecs/microservices-products",
    "ecs.services.orders.family": "microservices-orders",
    "ecs.services.orders.service": "microservices-orders-service",
    "ecs.services.orders.log_group": "/ecs/microservices-orders",
    "apigw.name": "microservices-api",
    "apigw.access_log_group": "/aws/apigateway/microservices-api",
    "cloudwatch.dashboard": "microservices-dashboard",
    "xray.group": "microservices",
}


def test_the_seed_lab_derives_exactly_the_seeds_names():
    from msctl.config.names import resource_names

    config = load_config(ROOT / "config" / "lab.yaml")
    assert resource_names(config) == SEED_NAMES
    # ...and the references between them
    assert config.rds.security_group == "microservices-rds-sg"
    assert config.alb.security_group == "microservices-alb-sg"
    assert config.ecs.security_group == "microservices-ecs-sg"
    rules = {g.name: [r.from_group for r in g.ingress] for g in config.sg.groups}
    assert rules["microservices-ecs-sg"] == ["microservices-alb-sg"] * 2
    assert rules["microservices-rds-sg"] == ["microservices-ecs-sg"]
    assert config.cloudfront.comment == "microservices lab"


def test_another_lab_name_gives_a_complete_independent_lab():
    from msctl.config.names import resource_names

    alice = resource_names(load_config(ROOT / "config" / "lab.yaml", ["lab=alice"]))
    bob = resource_names(load_config(ROOT / "config" / "lab.yaml", ["lab=bob"]))
    assert set(alice) == set(bob) == set(SEED_NAMES)
    assert not set(alice.values()) & set(bob.values())
    assert not set(alice.values()) & set(SEED_NAMES.values())
    assert all("alice" in name for name in alice.values()), alice
    assert alice["ecr.repositories.products"] == "alice/products"
    assert alice["ecs.services.products.log_group"] == "/ecs/alice-products"
    assert alice["apigw.access_log_group"] == "/aws/apigateway/alice-api"
    assert alice["lambda.functions.auth.name"] == "alice-auth"


def test_an_explicit_name_wins(tmp_path):
    text = LAB.replace("  cidr: 10.0.0.0/16", "  name: shared-vpc\n  cidr: 10.0.0.0/16")
    text = text.replace("    - key: rds\n", "    - key: rds\n      name: db-firewall\n")
    config = load_config(write(tmp_path, text), ["lab=alice", "rds.identifier=my-db"])
    assert config.vpc.name == "shared-vpc" and config.vpc.internet_gateway == "alice-igw"
    assert config.rds.identifier == "my-db" and config.rds.subnet_group == "alice-db-subnet-group"
    assert config.rds.security_group == "db-firewall"  # the group of key rds, by its name
    assert config.sg.groups[0].name == "alice-alb-sg"


def test_long_lab_names_keep_within_the_load_balancer_limit_and_apart():
    one = load_config(ROOT / "config" / "lab.yaml", ["lab=" + "a" * 26 + "-one"])
    two = load_config(ROOT / "config" / "lab.yaml", ["lab=" + "a" * 26 + "-two"])
    for config in (one, two):
        names = [config.alb.name, *(g.name for g in config.alb.target_groups.values())]
        assert all(len(n) <= 32 and not n.endswith("-") for n in names), names
        assert config.xray.group == config.lab
    assert one.alb.target_groups["products"].name != two.alb.target_groups["products"].name
    assert one.alb.name != two.alb.name


def test_an_invalid_lab_name_is_the_only_problem(tmp_path):
    assert problems(tmp_path, overrides=["lab=Bad_Lab"]) == [
        "--set lab: lab: 'Bad_Lab' is not a valid name (must match ^[a-z][a-z0-9-]*$)"
    ]


@pytest.mark.parametrize(
    ("value", "location"),
    [
        ("local", None),
        ("{backend: local}", None),
        ("s3://class-labs/msctl", "s3://class-labs/msctl"),
        ("{backend: s3, url: 's3://class-labs/msctl/'}", "s3://class-labs/msctl"),
    ],
)
def test_the_state_section(tmp_path, value, location):
    config = load_config(write(tmp_path, LAB), [f"state={value}"])
    assert config.state.location == location


def test_a_bad_state_section_is_refused(tmp_path):
    (msg,) = problems(tmp_path, overrides=["state=s3://NO/x"])
    assert msg.startswith("--set state: state.url: 's3://NO/x' is not a valid name"), msg
    (msg,) = problems(tmp_path, overrides=["state={backend: s3}"])
    assert "state: Value error, the s3 backend needs url: s3://bucket/prefix" in msg, msg
    (msg,) = problems(tmp_path, overrides=["state=nfs"])
    assert msg == "--set state: state.backend: Input should be 'local' or 's3' (got 'nfs')"
    assert load_config(ROOT / "config" / "lab.yaml").state.location is None
