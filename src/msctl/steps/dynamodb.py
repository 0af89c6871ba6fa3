"""dynamodb: the users and sessions tables (seed 2.1).

On-demand billing, server-side encryption with the AWS-managed KMS key, tagged at creation,
TTL on the sessions table. A re-run compares the key schema, billing mode, encryption, TTL and
tags with the config and changes only what differs. A key schema can't change in place: that is
a `replace`, which deletes the table and its data, so apply refuses it unless the config says
`dynamodb.allow_replace: true`.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import as_dict, as_list
from ..engine.model import Pending
from ..engine.step import NotSupported, StepError
from ..resources import Resource
from ..resources.base import absent
from ..resources.data import TABLE, TABLE_EXPECTED, TABLE_TIMEOUT, wait_table_gone
from .base import LabStep
from .run import Fix, StepRun

BILLING_MODE = "PAY_PER_REQUEST"
SSE = {"Enabled": True, "SSEType": "KMS"}  # no key id: the AWS-managed key alias/aws/dynamodb
LIVE_TTL = ("ENABLED", "ENABLING")


class DynamoDbStep(LabStep):
    name = "dynamodb"
    requires = ()
    services = ("dynamodb",)
    description = "users and sessions tables"
    kinds = (TABLE,)

    def names(self, config):
        return [(TABLE, t.name) for t in config.dynamodb.tables]

    def reconcile(self, run: StepRun) -> dict:
        ddb = run.clients.dynamodb
        arns: dict[str, str] = {}
        for table in run.config.dynamodb.tables:
            seen: dict[str, Resource] = {}

            def find(t=table, seen=seen):
                found = find_table(run, t.name)
                if found:
                    seen["table"] = found
                return found

            def create(t=table, seen=seen):
                seen["table"] = create_table(run, t)
                return seen["table"]

            ident = run.ensure(
                TABLE,
                table.name,
                find=find,
                create=create,
                fixes=lambda found, t=table: table_fixes(run, ddb, found, t),
            )
            arns[table.name] = (
                seen["table"]["TableArn"] if "table" in seen else Pending(f"table {ident} ARN")
            )
        return {"tables": arns}


# ---------------------------------------------------------------- lookups


def describe_table(ddb, name: str) -> Resource | None:
    return absent(lambda: ddb.describe_table(TableName=name)["Table"])


def find_table(run: StepRun, name: str) -> Resource | None:
    """The table by its name (unique per account and region). A table still being deleted
    counts as absent; under apply it is waited out first so that the create can succeed."""
    table = describe_table(run.clients.dynamodb, name)
    if table is not None and table["TableStatus"] == "DELETING":
        wait_table_gone(run, run.clients.dynamodb, name)
        return None
    return table


def _status(ddb, name: str) -> tuple[bool, str]:
    table = describe_table(ddb, name)
    status = table["TableStatus"] if table else "not visible yet"
    return status == "ACTIVE", status


def wait_active(run: StepRun, name: str) -> Resource:
    ddb = run.clients.dynamodb
    run.wait(
        f"table {name} to be ACTIVE",
        lambda: _status(ddb, name),
        timeout=TABLE_TIMEOUT,
        expected=TABLE_EXPECTED,
    )
    return describe_table(ddb, name)


# ---------------------------------------------------------------- create, fix, delete


def create_table(run: StepRun, cfg) -> Resource:
    """Create the table as configured, tagged, and wait until it is ACTIVE. The TTL setting
    follows as the create's fixes (it can only be set on an existing table)."""
    ddb = run.clients.dynamodb
    ddb.create_table(
        TableName=cfg.name,
        KeySchema=[{"AttributeName": cfg.partition_key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": cfg.partition_key, "AttributeType": "S"}],
        BillingMode=BILLING_MODE,
        SSESpecification=SSE,
        Tags=as_list(run.tags(cfg.name)),
    )
    return wait_active(run, cfg.name)


def _key_schema(table: Resource) -> list[tuple[str, str, str]]:
    types = {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}
    return [
        (k["AttributeName"], k["KeyType"], types.get(k["AttributeName"], "?"))
        for k in table.get("KeySchema", [])
    ]


def _describe_keys(keys: list[tuple[str, str, str]]) -> str:
    return ", ".join(f"{name} {kind} {type_}" for name, kind, type_ in keys) or "none"


def table_fixes(run: StepRun, ddb, table: Resource, cfg) -> list[Fix]:
    name = table["TableName"]
    wanted = [(cfg.partition_key, "HASH", "S")]
    current = _key_schema(table)
    if current != wanted:
        # A replacement recreates the table as configured: no other fix applies to it.
        return [
            _replace_fix(run, cfg, f"key {_describe_keys(current)} -> {_describe_keys(wanted)}")
        ]

    fixes = []
    billing = table.get("BillingModeSummary", {}).get("BillingMode", "PROVISIONED")
    if billing != BILLING_MODE:
        fixes.append(
            Fix(
                f"billing {billing} -> {BILLING_MODE}",
                lambda: _update_table(run, name, BillingMode=BILLING_MODE),
            )
        )
    sse = table.get("SSEDescription", {})
    if sse.get("Status") not in ("ENABLED", "ENABLING", "UPDATING") or sse.get("SSEType") != "KMS":
        fixes.append(
            Fix(
                f"encryption {sse.get('SSEType') or 'AWS owned key'} -> KMS (AWS managed key)",
                lambda: _update_sse(run, name),
            )
        )
    ttl_fix = _ttl_fix(run, ddb, name, cfg.ttl_attribute)
    if ttl_fix:
        fixes.append(ttl_fix)
    tags_fix = _tags_fix(ddb, table["TableArn"], run.tags(name))
    if tags_fix:
        fixes.append(tags_fix)
    return fixes


def _replace_fix(run: StepRun, cfg, detail: str) -> Fix:
    def replace():
        if not run.config.dynamodb.allow_replace:
            raise StepError(
                f"table {cfg.name}: the key schema can't be changed in place ({detail}); "
                "replacing the table would delete all of its data",
                hint="restore the config, or allow it explicitly with "
                "`--set dynamodb.allow_replace=true` (deletes and recreates the table)",
            )
        run.wait_all([TABLE.delete(run, describe_table(run.clients.dynamodb, cfg.name))])
        created = create_table(run, cfg)
        for fix in table_fixes(run, run.clients.dynamodb, created, cfg):
            fix.apply()

    return Fix(detail, replace, action="replace")


def _update_table(run: StepRun, name: str, **changes) -> None:
    wait_active(run, name)  # UpdateTable needs an ACTIVE table
    run.clients.dynamodb.update_table(TableName=name, **changes)
    wait_active(run, name)


def _update_sse(run: StepRun, name: str) -> None:
    if run.ctx.target.is_local:
        # moto's UpdateTable ignores SSESpecification: "fixing" it there would be a lie.
        raise NotSupported(
            f"table {name}: the local emulator can't change a table's encryption "
            "(UpdateTable ignores SSESpecification); recreate the table"
        )
    _update_table(run, name, SSESpecification=SSE)


def _ttl_fix(run: StepRun, ddb, name: str, attribute: str | None) -> Fix | None:
    ttl = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
    status = ttl.get("TimeToLiveStatus", "DISABLED")
    current = ttl.get("AttributeName") if status in LIVE_TTL else None
    if current == attribute:
        return None
    before = f"TTL on {current}" if current else "TTL off"
    after = f"TTL on {attribute}" if attribute else "TTL off"

    def apply():
        wait_active(run, name)
        if current:
            _set_ttl(ddb, name, current, False)
        if attribute:
            _set_ttl(ddb, name, attribute, True)

    return Fix(f"{before} -> {after}", apply)


def _set_ttl(ddb, name: str, attribute: str, enabled: bool) -> None:
    try:
        ddb.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": attribute, "Enabled": enabled},
        )
    except ClientError as exc:
        # AWS allows one TTL change per table per hour: changing the attribute is a disable
        # followed, up to an hour later, by an enable.
        if is_code(exc, "ValidationException") and "multiple times" in str(exc):
            raise StepError(
                f"table {name}: AWS refused to {'enable' if enabled else 'disable'} TTL on "
                f"{attribute} because the table's TTL was changed within the last hour",
                hint="run `msctl up` again in an hour to finish the TTL change",
            ) from exc
        raise


def _tags_fix(ddb, arn: str, wanted: dict[str, str]) -> Fix | None:
    current = as_dict(ddb.list_tags_of_resource(ResourceArn=arn).get("Tags"))
    missing = {k: v for k, v in wanted.items() if current.get(k) != v}
    if not missing:
        return None
    return Fix(
        f"tags {', '.join(sorted(missing))}",
        lambda: ddb.tag_resource(ResourceArn=arn, Tags=as_list(missing)),
    )
