"""The lab's data: DynamoDB tables, the S3 bucket, the RDS instance, its subnet group,
parameter group and snapshots, and the secret RDS keeps the master password in."""

from __future__ import annotations

import datetime

from botocore.exceptions import ClientError

from .. import costs
from ..aws.errors import error_code, is_code
from ..aws.tags import as_dict
from ..aws.waiters import Wait
from ..engine.step import StepError
from .base import Kind, Resource, absent, first

TABLE_TIMEOUT = 300  # on-demand tables are ACTIVE, and deleted, within seconds
INSTANCE_TIMEOUT = 1800  # RDS: create 5-8.5 min, delete 2-3 (sometimes 10)
# Typical durations on AWS (seconds): they keep the polls a small fraction of each wait.
TABLE_EXPECTED = 10
INSTANCE_DELETE_EXPECTED = 180
SUBNET_GROUP_DELETE_TIMEOUT = 600  # can't go while its instance is still being deleted
PARAMETER_GROUP_DELETE_TIMEOUT = 600  # likewise
DELETE_BATCH = 1000  # DeleteObjects' limit
LIST_PAGE_SIZE = 1000  # ListObjectVersions' largest page


class Table(Kind):
    name = "table"
    service = "dynamodb"
    id_key = name_key = "TableName"
    arn_key = "TableArn"
    tagging_type = "dynamodb:table"

    def describe(self, client, ident: str) -> Resource | None:
        return client.describe_table(TableName=ident)["Table"]

    def alive(self, resource: Resource) -> bool:
        return resource.get("TableStatus") != "DELETING"

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return as_dict(client.list_tags_of_resource(ResourceArn=resource["TableArn"]).get("Tags"))

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]

    def delete(self, run, resource: Resource) -> Wait:
        ddb = self.client(run.ctx)
        name = resource["TableName"]
        run.retry(
            lambda: ddb.delete_table(TableName=name),
            codes=("ResourceInUseException",),
            timeout=TABLE_TIMEOUT,
            reason="the table is still being created or updated",
        )
        return table_gone(ddb, name)


def table_gone(ddb, name: str) -> Wait:
    def gone() -> tuple[bool, str]:
        table = absent(lambda: ddb.describe_table(TableName=name)["Table"])
        return table is None, table["TableStatus"] if table else "deleted"

    return Wait(f"table {name} to be deleted", gone, TABLE_TIMEOUT, TABLE_EXPECTED)


def wait_table_gone(run, ddb, name: str) -> None:
    run.wait_all([table_gone(ddb, name)])


class Bucket(Kind):
    name = "bucket"
    service = "s3"
    id_key = name_key = "Name"
    arn_key = "Arn"
    missing = ("NoSuchBucket",)
    tagging_type = "s3"

    def describe(self, client, ident: str) -> Resource | None:
        tags = bucket_tags(client, ident)
        return None if tags is None else {"Name": ident, "Tags": tags}

    def tags(self, client, resource: Resource) -> dict[str, str]:
        if "Tags" not in resource:
            resource = self.describe(client, resource["Name"]) or {}
        return dict(resource.get("Tags") or {})

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit(":", 1)[-1]

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return resource["Name"]

    def delete(self, run, resource: Resource) -> None:
        """Empty the bucket (every object version and delete marker), then delete it.
        Objects written while emptying (a Lambda still running) fail the delete: again."""
        s3 = self.client(run.ctx)
        name = resource["Name"]

        def empty_and_delete() -> None:
            empty_bucket(s3, name)
            s3.delete_bucket(Bucket=name)

        run.retry(
            empty_and_delete,
            codes=("BucketNotEmpty",),
            timeout=120,
            reason="objects were written to the bucket while it was being emptied",
        )


def bucket_tags(s3, name: str) -> dict[str, str] | None:
    """The bucket's tags ({} when it has none); None when the bucket doesn't exist."""
    try:
        return as_dict(s3.get_bucket_tagging(Bucket=name).get("TagSet"))
    except ClientError as exc:
        if is_code(exc, "NoSuchTagSet"):
            return {}
        if error_code(exc) in ("NoSuchBucket", "404", "NotFound"):
            return None
        raise


def empty_bucket(s3, name: str) -> int:
    """Delete every object version and delete marker, a page (up to 1000) at a time. Each
    round lists from the start again instead of following markers that point at versions
    just deleted. Returns how many versions and markers were deleted."""
    removed = 0
    while True:
        page = s3.list_object_versions(Bucket=name, MaxKeys=LIST_PAGE_SIZE)
        entries = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in (*page.get("Versions", []), *page.get("DeleteMarkers", []))
        ]
        if not entries:
            return removed
        for start in range(0, len(entries), DELETE_BATCH):
            batch = entries[start : start + DELETE_BATCH]
            errors = s3.delete_objects(Bucket=name, Delete={"Objects": batch, "Quiet": True}).get(
                "Errors", []
            )
            if errors:  # raised, never skipped: a version that stays would loop forever
                raise StepError(
                    f"bucket {name}: could not delete {len(errors)} object version(s), e.g. "
                    f"{errors[0].get('Key')} ({errors[0].get('Code')}: {errors[0].get('Message')})",
                    hint="check the bucket's object lock and permissions, then run again",
                )
            removed += len(batch)


class RdsKind(Kind):
    service = "rds"

    def tags(self, client, resource: Resource) -> dict[str, str]:
        if "TagList" in resource:
            return as_dict(resource["TagList"])
        return as_dict(client.list_tags_for_resource(ResourceName=self.arn(resource))["TagList"])

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit(":", 1)[-1]


class DbSubnetGroup(RdsKind):
    name = "db-subnet-group"
    id_key = name_key = "DBSubnetGroupName"
    arn_key = "DBSubnetGroupArn"
    missing = ("DBSubnetGroupNotFoundFault",)
    tagging_type = "rds:subgrp"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        return first(client.describe_db_subnet_groups(DBSubnetGroupName=ident)["DBSubnetGroups"])

    def scan(self, client, lab: str):
        for page in client.get_paginator("describe_db_subnet_groups").paginate():
            yield from page.get("DBSubnetGroups", [])

    def delete(self, run, resource: Resource) -> None:
        rds = self.client(run.ctx)
        run.retry(
            lambda: rds.delete_db_subnet_group(DBSubnetGroupName=resource["DBSubnetGroupName"]),
            codes=("InvalidDBSubnetGroupStateFault",),
            timeout=SUBNET_GROUP_DELETE_TIMEOUT,
            reason="the DB instance using the subnet group is still being deleted",
        )


class DbParameterGroup(RdsKind):
    name = "db-parameter-group"
    id_key = name_key = "DBParameterGroupName"
    arn_key = "DBParameterGroupArn"
    missing = ("DBParameterGroupNotFound", "DBParameterGroupNotFoundFault")
    tagging_type = "rds:pg"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        found = client.describe_db_parameter_groups(DBParameterGroupName=ident)
        return first(found["DBParameterGroups"])

    def scan(self, client, lab: str):
        for page in client.get_paginator("describe_db_parameter_groups").paginate():
            # RDS's own default.<family> groups are never a lab's: no tags to ask for.
            for group in page.get("DBParameterGroups", []):
                if not group["DBParameterGroupName"].startswith("default."):
                    yield group

    def delete(self, run, resource: Resource) -> None:
        rds = self.client(run.ctx)
        run.retry(
            lambda: rds.delete_db_parameter_group(
                DBParameterGroupName=resource["DBParameterGroupName"]
            ),
            codes=("InvalidDBParameterGroupState", "InvalidDBParameterGroupStateFault"),
            timeout=PARAMETER_GROUP_DELETE_TIMEOUT,
            reason="the DB instance using the parameter group is still being deleted",
        )


class DbInstance(RdsKind):
    name = "db-instance"
    id_key = name_key = "DBInstanceIdentifier"
    arn_key = "DBInstanceArn"
    missing = ("DBInstanceNotFound", "DBInstanceNotFoundFault")
    tagging_type = "rds:db"

    def describe(self, client, ident: str) -> Resource | None:
        return first(client.describe_db_instances(DBInstanceIdentifier=ident)["DBInstances"])

    def alive(self, resource: Resource) -> bool:
        return resource.get("DBInstanceStatus") != "deleting"

    def cost(self, resource: Resource) -> float:
        return costs.rds_hourly(
            resource.get("DBInstanceClass"), resource.get("AllocatedStorage", 0)
        )

    def delete(self, run, resource: Resource) -> Wait:
        """Deletion protection goes off only when the config says off; a final snapshot only
        when the config asks for one; then (returned) the wait until the instance is gone."""
        cfg = run.config.rds
        rds = self.client(run.ctx)
        identifier = resource["DBInstanceIdentifier"]
        if resource.get("DeletionProtection"):
            if cfg.deletion_protection:
                raise StepError(
                    f"DB instance {identifier} has deletion protection on, and the config "
                    "(rds.deletion_protection: true) keeps it on",
                    hint="to delete it, run the command again with "
                    "`--set rds.deletion_protection=false`",
                )
            modify_instance(run, rds, identifier, DeletionProtection=False)
        if cfg.final_snapshot:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
            choice: dict = {"FinalDBSnapshotIdentifier": f"{identifier}-final-{stamp}"}
        else:
            choice = {"SkipFinalSnapshot": True}

        def delete() -> None:
            try:
                rds.delete_db_instance(
                    DBInstanceIdentifier=identifier, DeleteAutomatedBackups=True, **choice
                )
            except ClientError as exc:
                # Already on its way out (another msctl, or the console): just wait.
                if not (is_code(exc, "InvalidDBInstanceState") and "delet" in str(exc).lower()):
                    raise

        run.retry(
            delete,
            codes=("InvalidDBInstanceState", "InvalidDBInstanceStateFault"),
            timeout=INSTANCE_TIMEOUT,
            reason=f"DB instance {identifier} is still creating or being modified",
        )

        def gone() -> tuple[bool, str]:
            found = absent(lambda: self.describe(rds, identifier), self.missing)
            return found is None, (found or {}).get("DBInstanceStatus", "deleted")

        return Wait(
            f"DB instance {identifier} to be deleted",
            gone,
            INSTANCE_TIMEOUT,
            INSTANCE_DELETE_EXPECTED,
        )


def modify_instance(run, rds, identifier: str, **changes) -> None:
    """ModifyDBInstance, applied now; retried while the instance is creating or modifying."""
    run.retry(
        lambda: rds.modify_db_instance(
            DBInstanceIdentifier=identifier, ApplyImmediately=True, **changes
        ),
        codes=("InvalidDBInstanceState", "InvalidDBInstanceStateFault"),
        timeout=INSTANCE_TIMEOUT,
        reason=f"DB instance {identifier} is still creating or being modified",
    )


class DbSnapshot(RdsKind):
    """Final snapshots carry the instance's tags (CopyTagsToSnapshot). They hold data: never
    deleted, only reported with their cost."""

    name = "db-snapshot"
    id_key = name_key = "DBSnapshotIdentifier"
    arn_key = "DBSnapshotArn"
    missing = ("DBSnapshotNotFound", "DBSnapshotNotFoundFault")
    tagging_type = "rds:snapshot"

    def describe(self, client, ident: str) -> Resource | None:
        return first(client.describe_db_snapshots(DBSnapshotIdentifier=ident)["DBSnapshots"])

    def alive(self, resource: Resource) -> bool:
        # Automated snapshots go with their instance (DeleteAutomatedBackups).
        return resource.get("SnapshotType") != "automated" and resource.get("Status") != "deleting"

    def cost(self, resource: Resource) -> float:
        gb = resource.get("AllocatedStorage", 0)
        return gb * costs.SNAPSHOT_GB_MONTH / costs.HOURS_PER_MONTH

    def keep(self, run, resource: Resource) -> str:
        return "a DB snapshot holds data: msctl never deletes one (aws rds delete-db-snapshot)"


class Secret(Kind):
    """A Secrets Manager secret: the lab's own (the admin step's login), deleted without a
    recovery window; and the master password secret RDS manages, which goes with its
    instance (found by the final check only if it carries the lab's tags)."""

    name = "secret"
    service = "secretsmanager"
    id_key = "ARN"
    arn_key = "ARN"
    name_key = "Name"
    tagging_type = "secretsmanager:secret"
    hourly = costs.SECRET_MONTH / costs.HOURS_PER_MONTH

    def describe(self, client, ident: str) -> Resource | None:
        return client.describe_secret(SecretId=ident)

    def alive(self, resource: Resource) -> bool:
        return not resource.get("DeletedDate")

    def delete(self, run, resource: Resource) -> None:
        self.client(run.ctx).delete_secret(
            SecretId=resource["ARN"], ForceDeleteWithoutRecovery=True
        )


TABLE = Table()
BUCKET = Bucket()
DB_SUBNET_GROUP = DbSubnetGroup()
DB_PARAMETER_GROUP = DbParameterGroup()
DB_INSTANCE = DbInstance()
DB_SNAPSHOT = DbSnapshot()
SECRET = Secret()
