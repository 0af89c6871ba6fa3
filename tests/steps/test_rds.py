"""rds against moto: lifecycle, the instance as configured, no password anywhere, engine
version resolution, drift repair, final snapshots and deletion protection on destroy."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from msctl.engine.model import Status
from msctl.steps.rds import available_wait
from msctl.steps.run import StepRun

from .conftest import Lab, assert_lifecycle

IDENTIFIER = "microservices-db"
SUBNET_GROUP = "microservices-db-subnet-group"
PARAMETERS = "microservices-db-params"


class EngineCatalogue:
    """A DescribeDBEngineVersions answer shaped like AWS's. moto 5.2 doesn't implement the
    call (NotImplementedError in-process, HTTP 500 as a server), so tests that exercise the
    resolution of a major version answer it here, before the request reaches moto."""

    def __init__(self, versions, deprecated=()):
        self.versions = list(versions)
        self.deprecated = set(deprecated)
        self.calls = 0

    def install(self, lab: Lab) -> EngineCatalogue:
        lab.ctx.session.events.register("before-call.rds.DescribeDBEngineVersions", self)
        return self

    def __call__(self, model, params, **_kwargs):
        self.calls += 1
        query = params["body"]  # the serialized query parameters
        wanted = query.get("EngineVersion", "")
        items = [
            {
                "Engine": "postgres",
                "EngineVersion": v,
                "DBParameterGroupFamily": f"postgres{v.split('.')[0]}",
                "Status": "deprecated" if v in self.deprecated else "available",
            }
            for v in self.versions
            if query.get("Engine") == "postgres" and (v == wanted or v.startswith(f"{wanted}."))
        ]
        return AWSResponse("https://rds.local", 200, {}, None), {
            "DBEngineVersions": items,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }


VERSIONS = ["14.9", "15.2", "15.4", "15.10", "16.1"]


@pytest.fixture
def catalogue(lab):
    return EngineCatalogue(VERSIONS, deprecated={"15.12"}).install(lab)


def variant(lab_config, **rds):
    return lab_config.model_copy(update={"rds": lab_config.rds.model_copy(update=rds)})


def other_lab(lab: Lab, tmp_path, name: str, **rds) -> Lab:
    """The same moto account seen through a config with other rds values."""
    other = Lab(variant(lab.config, **rds), tmp_path / name)
    EngineCatalogue(VERSIONS).install(other)
    return other


def rds_client():
    return boto3.client("rds", region_name="us-east-1")


def instance():
    return rds_client().describe_db_instances(DBInstanceIdentifier=IDENTIFIER)["DBInstances"][0]


def instances() -> list[str]:
    return [i["DBInstanceIdentifier"] for i in rds_client().describe_db_instances()["DBInstances"]]


def subnet_groups() -> list[str]:
    groups = rds_client().describe_db_subnet_groups()["DBSubnetGroups"]
    return [g["DBSubnetGroupName"] for g in groups]


def parameter_groups() -> list[str]:
    groups = rds_client().describe_db_parameter_groups()["DBParameterGroups"]
    return [
        g["DBParameterGroupName"]
        for g in groups
        if not g["DBParameterGroupName"].startswith("default.")
    ]


def user_parameters(group: str) -> dict[str, str]:
    found = rds_client().describe_db_parameters(DBParameterGroupName=group, Source="user")
    return {p["ParameterName"]: p["ParameterValue"] for p in found["Parameters"]}


def manual_snapshots() -> list[str]:
    snaps = rds_client().describe_db_snapshots(SnapshotType="manual")["DBSnapshots"]
    return [s["DBSnapshotIdentifier"] for s in snaps]


# ---------------------------------------------------------------- lifecycle and shape


def test_rds_lifecycle(lab, catalogue):
    outputs = assert_lifecycle(
        lab,
        "rds",
        {
            ("db-parameter-group", PARAMETERS),
            ("db-subnet-group", SUBNET_GROUP),
            ("db-instance", IDENTIFIER),
        },
    )
    assert outputs["identifier"] == IDENTIFIER
    assert outputs["arn"].endswith(f":db:{IDENTIFIER}")
    assert outputs["secret_arn"].startswith("arn:aws:secretsmanager:us-east-1:")
    assert outputs["port"] == 5432
    assert outputs["db_name"] == "postgres"
    assert outputs["endpoint_address"]  # moto creates instances already available
    # No final snapshot by default, automated backups deleted, nothing left behind.
    assert instances() == [] and subnet_groups() == [] and manual_snapshots() == []
    assert parameter_groups() == []
    assert rds_client().describe_db_snapshots(SnapshotType="automated")["DBSnapshots"] == []
    assert lab.state.outputs("rds") == {}


def test_rds_matches_the_seed_and_reports_its_status(lab, catalogue):
    catalogue.versions.append("15.12")  # deprecated: not offered for new instances
    lab.run("apply", ["rds"])
    db = instance()
    assert db["DBInstanceClass"] == "db.t3.micro"
    assert db["AllocatedStorage"] == 20 and db["StorageType"] == "gp2"
    assert db["Engine"] == "postgres"
    assert db["EngineVersion"] == "15.10"  # the newest available 15.x, compared numerically
    assert db["AutoMinorVersionUpgrade"] is True  # a major-only config takes minor updates
    assert db["MasterUsername"] == "postgres" and db["DBName"] == "postgres"
    assert db["PubliclyAccessible"] is False
    assert db["StorageEncrypted"] is True
    assert db["DeletionProtection"] is False
    assert db["CopyTagsToSnapshot"] is True
    assert db["MultiAZ"] is False and db["IAMDatabaseAuthenticationEnabled"] is True
    # TLS required: the instance runs with the lab's group, which forces SSL.
    assert [g["DBParameterGroupName"] for g in db["DBParameterGroups"]] == [PARAMETERS]
    (group,) = rds_client().describe_db_parameter_groups(DBParameterGroupName=PARAMETERS)[
        "DBParameterGroups"
    ]
    assert group["DBParameterGroupFamily"] == "postgres15"
    assert user_parameters(PARAMETERS) == {"rds.force_ssl": "1"}
    group_tags = rds_client().list_tags_for_resource(ResourceName=group["DBParameterGroupArn"])
    assert {"Key": "msctl:step", "Value": "rds"} in group_tags["TagList"]
    private = lab.state.outputs("vpc")["private_subnet_ids"]
    group = db["DBSubnetGroup"]
    assert group["DBSubnetGroupName"] == SUBNET_GROUP
    assert sorted(s["SubnetIdentifier"] for s in group["Subnets"]) == sorted(private)
    rds_sg = lab.state.outputs("sg")["group_ids"]["microservices-rds-sg"]
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [rds_sg]
    tags = {t["Key"]: t["Value"] for t in db["TagList"]}
    assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "rds"
    assert tags["Name"] == IDENTIFIER
    group_arn = rds_client().describe_db_subnet_groups(DBSubnetGroupName=SUBNET_GROUP)[
        "DBSubnetGroups"
    ][0]["DBSubnetGroupArn"]
    group_tags = rds_client().list_tags_for_resource(ResourceName=group_arn)["TagList"]
    assert {"Key": "msctl:lab", "Value": "microservices"} in group_tags
    outputs = lab.state.outputs("rds")
    assert outputs["secret_arn"] == db["MasterUserSecret"]["SecretArn"]
    assert catalogue.calls == 1

    # A newer minor appears: a re-run with a major-only config must not "upgrade".
    catalogue.versions.append("15.11")
    assert lab.changes(lab.run("plan", ["rds"]), "rds") == []
    checks = {c.name: c for c in lab.run("verify", ["rds"]).results["rds"].checks}
    assert catalogue.calls == 1
    status = checks[f"db-instance {IDENTIFIER} status"]
    assert status.ok and status.detail.startswith(f"available at {IDENTIFIER}.")
    secret = checks[f"db-instance {IDENTIFIER} master user secret"]
    assert secret.ok and outputs["secret_arn"] in secret.detail

    # What the ecs step waits for: the endpoint, after short polls (none needed on moto).
    seen: dict = {}
    run = StepRun(lab.ctx, "ecs", dry_run=False)
    run.wait_all([available_wait(run, IDENTIFIER, 30, seen)])
    assert (seen["Address"], seen["Port"]) == (db["Endpoint"]["Address"], 5432)
    assert outputs["endpoint_address"] == seen["Address"]

    rds_client().stop_db_instance(DBInstanceIdentifier=IDENTIFIER)
    result = lab.run("verify", ["rds"], expect_ok=False).results["rds"]
    bad = [c for c in result.checks if not c.ok]
    assert [c.name for c in bad] == [f"db-instance {IDENTIFIER} status"]
    assert bad[0].detail.startswith("stopped")


def test_no_password_in_state_logs_or_results(lab, catalogue):
    results = [lab.run("apply", ["rds"]), lab.run("plan", ["rds"]), lab.run("verify", ["rds"])]
    secret_arn = lab.state.outputs("rds")["secret_arn"]
    secret = boto3.client("secretsmanager", region_name="us-east-1").get_secret_value(
        SecretId=secret_arn
    )["SecretString"]
    password = json.loads(secret)["password"]
    assert password

    results.append(lab.run("destroy", ["rds"]))
    state_text = lab.state.path.read_text()
    for value in (password, secret):
        assert value not in state_text
        assert [e for e in lab.events if value in (e.message or "")] == []
        assert value not in str(lab.events) and value not in repr(lab.events)
        for result in results:
            step = result.results["rds"]
            for part in (step.outputs, step.changes, step.checks):
                assert value not in str(part) and value not in repr(part)
    # msctl never reads the secret's value itself.
    assert ("secretsmanager", "GetSecretValue") not in lab.recorder.calls


# ---------------------------------------------------------------- engine version and drift


def test_exact_version_drift_and_storage(lab, tmp_path):
    exact = other_lab(lab, tmp_path, "exact", engine_version="15.4")
    exact.run("apply", ["rds"])
    db = instance()
    assert db["EngineVersion"] == "15.4"  # used as is, not looked up
    assert db["AutoMinorVersionUpgrade"] is False  # pinned
    assert ("rds", "DescribeDBEngineVersions") not in exact.recorder.calls
    assert exact.changes(exact.run("plan", ["rds"]), "rds") == []

    # Changed by hand: class, security group, deletion protection. One ModifyDBInstance.
    ids = exact.state.outputs("sg")["group_ids"]
    rds_client().modify_db_instance(
        DBInstanceIdentifier=IDENTIFIER,
        DBInstanceClass="db.t3.small",
        VpcSecurityGroupIds=[ids["microservices-ecs-sg"]],
        DeletionProtection=True,
        ApplyImmediately=True,
    )
    plan = exact.changes(exact.run("plan", ["rds"]), "rds")
    assert [(c.action, c.kind, c.name) for c in plan] == [("update", "db-instance", IDENTIFIER)]
    assert "instance class db.t3.small -> db.t3.micro" in plan[0].detail
    assert "deletion protection off" in plan[0].detail
    checks = exact.run("verify", ["rds"], expect_ok=False).results["rds"].checks
    assert [c.name for c in checks if not c.ok] == [f"db-instance {IDENTIFIER}"]
    exact.run("apply", ["rds"])
    db = instance()
    assert db["DBInstanceClass"] == "db.t3.micro" and db["DeletionProtection"] is False
    assert [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]] == [
        ids["microservices-rds-sg"]
    ]
    assert exact.changes(exact.run("plan", ["rds"]), "rds") == []

    # A newer pinned minor is an in-place upgrade; an older one or another major is refused.
    newer = other_lab(lab, tmp_path, "newer", engine_version="15.10")
    plan = newer.changes(newer.run("plan", ["rds"]), "rds")
    assert [(c.action, c.detail) for c in plan] == [("update", "engine version 15.4 -> 15.10")]
    for version in ("15.2", "16"):
        other = other_lab(lab, tmp_path, f"v{version}", engine_version=version)
        plan = other.changes(other.run("plan", ["rds"]), "rds")
        change = next(c for c in plan if c.kind == "db-instance")
        assert change.action == "replace" and "engine version 15.4" in change.detail
        # Another major version needs a parameter group of its family too.
        assert [(c.action, c.detail) for c in plan if c.kind == "db-parameter-group"] == (
            [("replace", "family postgres15 -> postgres16")] if version == "16" else []
        )

    # Storage grows in place and never shrinks.
    bigger = other_lab(lab, tmp_path, "bigger", engine_version="15.4", allocated_storage=30)
    plan = bigger.changes(bigger.run("plan", ["rds"]), "rds")
    assert [(c.action, c.detail) for c in plan] == [("update", "storage 20 -> 30 GB")]
    bigger.run("apply", ["rds"])
    assert instance()["AllocatedStorage"] == 30
    assert [c.action for c in exact.changes(exact.run("plan", ["rds"]), "rds")] == ["replace"]
    result = exact.run("apply", ["rds"], expect_ok=False).results["rds"]
    assert result.status is Status.FAILED and "can't shrink" in result.error
    assert instance()["AllocatedStorage"] == 30


class PendingReboot:
    """RDS as it answers after an instance was given another parameter group: the group is
    `pending-reboot` until the instance reboots (moto applies it at once)."""

    def __init__(self, lab: Lab):
        self.rebooted = 0
        # Clients copy the session's handlers when built: register on the step's client.
        events = lab.ctx.clients.get("rds").meta.events
        events.register("after-call.rds.DescribeDBInstances", self.describe)
        events.register("after-call.rds.RebootDBInstance", self.reboot)

    def describe(self, parsed, **_kwargs):
        for db in parsed.get("DBInstances", []):
            for group in db.get("DBParameterGroups", []):
                if not self.rebooted and group["DBParameterGroupName"] == PARAMETERS:
                    group["ParameterApplyStatus"] = "pending-reboot"

    def reboot(self, **_kwargs):
        self.rebooted += 1


def test_tls_is_required_again_after_drift(lab, catalogue):
    lab.run("apply", ["rds"])
    rds = rds_client()
    # SSL no longer forced in the lab's group: its parameter is put back.
    rds.modify_db_parameter_group(
        DBParameterGroupName=PARAMETERS,
        Parameters=[
            {"ParameterName": "rds.force_ssl", "ParameterValue": "0", "ApplyMethod": "immediate"}
        ],
    )
    plan = lab.changes(lab.run("plan", ["rds"]), "rds")
    assert [(c.action, c.kind, c.name, c.detail) for c in plan] == [
        ("update", "db-parameter-group", PARAMETERS, "rds.force_ssl 0 -> 1")
    ]
    lab.run("apply", ["rds"])
    assert user_parameters(PARAMETERS) == {"rds.force_ssl": "1"}

    # The instance moved to another group by hand: it goes back, and reboots to apply it.
    rds.create_db_parameter_group(
        DBParameterGroupName="by-hand", DBParameterGroupFamily="postgres15", Description="x"
    )
    rds.modify_db_instance(
        DBInstanceIdentifier=IDENTIFIER, DBParameterGroupName="by-hand", ApplyImmediately=True
    )
    plan = lab.changes(lab.run("plan", ["rds"]), "rds")
    assert [(c.action, c.kind, c.detail) for c in plan] == [
        (
            "update",
            "db-instance",
            f"parameter group by-hand -> {PARAMETERS} (the instance reboots to apply it)",
        )
    ]
    checks = lab.run("verify", ["rds"], expect_ok=False).results["rds"].checks
    assert [c.name for c in checks if not c.ok] == [f"db-instance {IDENTIFIER}"]
    pending = PendingReboot(lab)
    lab.run("apply", ["rds"])
    assert pending.rebooted == 1
    assert [g["DBParameterGroupName"] for g in instance()["DBParameterGroups"]] == [PARAMETERS]
    assert lab.changes(lab.run("plan", ["rds"]), "rds") == []
    rds.delete_db_parameter_group(DBParameterGroupName="by-hand")


def test_multi_az_is_an_option(lab, catalogue, tmp_path):
    lab.run("apply", ["rds"])
    standby = other_lab(lab, tmp_path, "standby", multi_az=True)
    plan = standby.changes(standby.run("plan", ["rds"]), "rds")
    assert [(c.action, c.detail) for c in plan] == [("update", "multi-AZ on")]
    standby.run("apply", ["rds"])
    assert instance()["MultiAZ"] is True


def test_engine_version_without_a_match_or_without_a_catalogue(lab, tmp_path):
    # AWS answers, but offers no 15.x: a clear error before anything is created.
    no_match = Lab(lab.config, tmp_path / "no-match")
    EngineCatalogue(["14.9", "16.1"]).install(no_match)
    result = no_match.run("plan", ["rds"], expect_ok=False).results["rds"]
    assert result.status is Status.FAILED
    assert "no available postgres 15.x engine version" in result.error
    assert "rds.engine_version" in result.hint

    # moto 5.2 lacks DescribeDBEngineVersions: on the local target the major version goes
    # to CreateDBInstance as is (RDS itself accepts that), and a note says so.
    lab.run("apply", ["rds"])
    assert instance()["EngineVersion"] == "15"
    notes = [e.message for e in lab.events if e.kind == "note" and e.step == "rds"]
    assert notes and "can't list postgres engine versions" in notes[0]
    assert lab.changes(lab.run("plan", ["rds"]), "rds") == []


def test_foreign_instance_and_subnet_group_drift(lab, catalogue):
    lab.run("apply", ["sg"])
    # An instance with the lab's identifier that msctl didn't create is never adopted.
    rds_client().create_db_instance(
        DBInstanceIdentifier=IDENTIFIER,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="postgres",
        ManageMasterUserPassword=True,
    )
    result = lab.run("plan", ["rds"], expect_ok=False).results["rds"]
    assert result.status is Status.FAILED
    assert "exists but isn't lab microservices's: it has no msctl:lab tag" in result.error
    # down leaves it alone, and says so.
    assert lab.run("destroy", ["rds"]).results["rds"].status is Status.NOCHANGE
    assert instances() == [IDENTIFIER]
    notes = [e.message for e in lab.events if e.kind == "note" and e.step == "rds"]
    assert (
        f"db-instance {IDENTIFIER} ({IDENTIFIER}) isn't lab microservices's (it has no msctl:lab tag): left alone"
        in notes
    )
    rds_client().delete_db_instance(DBInstanceIdentifier=IDENTIFIER, SkipFinalSnapshot=True)

    # A lab subnet group over the wrong subnets is drift; moto's ModifyDBSubnetGroup loses
    # the group, so on the local target the fix is reported unsupported, not faked.
    public = lab.state.outputs("vpc")["public_subnet_ids"]
    rds_client().create_db_subnet_group(
        DBSubnetGroupName=SUBNET_GROUP,
        DBSubnetGroupDescription="by hand",
        SubnetIds=public,
        Tags=[{"Key": k, "Value": v} for k, v in lab.ctx.tags("rds", SUBNET_GROUP).items()],
    )
    plan = lab.changes(lab.run("plan", ["rds"]), "rds")
    assert ("update", "db-subnet-group", SUBNET_GROUP) in [(c.action, c.kind, c.name) for c in plan]
    result = lab.run("apply", ["rds"], expect_ok=False).results["rds"]
    assert result.status is Status.UNSUPPORTED
    assert subnet_groups() == [SUBNET_GROUP] and instances() == []


# ---------------------------------------------------------------- destroy


def test_deletion_protection_and_final_snapshot_on_destroy(lab, tmp_path):
    protected = other_lab(lab, tmp_path, "protected", deletion_protection=True)
    protected.run("apply", ["rds"])
    assert instance()["DeletionProtection"] is True

    # The config still wants protection: destroy refuses, and says how to allow it.
    result = protected.run("destroy", ["rds"], expect_ok=False).results["rds"]
    assert result.status is Status.FAILED
    assert "deletion protection" in result.error
    assert "--set rds.deletion_protection=false" in result.hint
    assert instances() == [IDENTIFIER] and instance()["DeletionProtection"] is True

    # The config allows deleting: protection is turned off, then the instance is deleted,
    # here with a final snapshot (the lifecycle test shows the default: none).
    allowing = other_lab(lab, tmp_path, "allowing", deletion_protection=False, final_snapshot=True)
    removed = allowing.run("destroy", ["rds"])
    changes = [(c.action, c.name) for c in allowing.changes(removed, "rds")]
    assert changes == [
        ("update", f"{IDENTIFIER} deletion protection"),
        ("delete", IDENTIFIER),
        ("delete", SUBNET_GROUP),
        ("delete", PARAMETERS),  # after the instance that used it
    ]
    assert instances() == [] and subnet_groups() == [] and parameter_groups() == []
    snapshots = manual_snapshots()
    assert len(snapshots) == 1
    assert re.fullmatch(rf"{IDENTIFIER}-final-\d{{8}}-\d{{6}}", snapshots[0])
    assert rds_client().describe_db_snapshots(SnapshotType="automated")["DBSnapshots"] == []
