"""dynamodb against moto: the lifecycle, the tables as AWS reports them, and drift repair."""

from __future__ import annotations

import boto3

from msctl.config import load_config
from msctl.engine.model import Status

from .conftest import ROOT, assert_lifecycle

USERS = "microservices-users"
SESSIONS = "microservices-sessions"


def ddb():
    return boto3.client("dynamodb", region_name="us-east-1")


def reconfigure(lab, config) -> None:
    lab.config = config
    lab.ctx.config = config


def with_tables(lab_config, **changes):
    """The lab config with some table settings changed: {table name: {field: value}}."""
    tables = [
        t.model_copy(update=changes.get(t.name.replace("microservices-", ""), {}))
        for t in lab_config.dynamodb.tables
    ]
    dynamodb = lab_config.dynamodb.model_copy(update={"tables": tables})
    return lab_config.model_copy(update={"dynamodb": dynamodb})


def test_dynamodb_lifecycle(lab):
    outputs = assert_lifecycle(lab, "dynamodb", {("table", USERS), ("table", SESSIONS)})
    assert outputs["tables"] == {
        USERS: f"arn:aws:dynamodb:us-east-1:123456789012:table/{USERS}",
        SESSIONS: f"arn:aws:dynamodb:us-east-1:123456789012:table/{SESSIONS}",
    }
    assert ddb().list_tables()["TableNames"] == []


def test_dynamodb_tables_match_the_seed(lab):
    lab.run("apply", ["dynamodb"])
    client = ddb()
    for name, key, ttl in ((USERS, "userId", None), (SESSIONS, "sessionId", "expiresAt")):
        table = client.describe_table(TableName=name)["Table"]
        assert table["TableStatus"] == "ACTIVE"
        assert table["KeySchema"] == [{"AttributeName": key, "KeyType": "HASH"}]
        assert table["AttributeDefinitions"] == [{"AttributeName": key, "AttributeType": "S"}]
        assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert table["SSEDescription"]["Status"] == "ENABLED"
        assert table["SSEDescription"]["SSEType"] == "KMS"
        described = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl:
            assert described == {"TimeToLiveStatus": "ENABLED", "AttributeName": ttl}
        else:
            assert described["TimeToLiveStatus"] == "DISABLED"
        tags = client.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
        tags = {t["Key"]: t["Value"] for t in tags}
        assert tags["msctl:lab"] == "microservices"
        assert tags["msctl:step"] == "dynamodb"
        assert tags["msctl:name"] == name
    assert lab.state.outputs("dynamodb")["tables"][SESSIONS].endswith(f"table/{SESSIONS}")


def test_dynamodb_ttl_attribute_change_is_one_update(lab, lab_config):
    lab.run("apply", ["dynamodb"])
    reconfigure(lab, with_tables(lab_config, sessions={"ttl_attribute": "validUntil"}))
    plan = lab.run("plan", ["dynamodb"])
    changes = lab.changes(plan, "dynamodb")
    assert [(c.action, c.kind, c.name) for c in changes] == [("update", "table", SESSIONS)]
    assert changes[0].detail == "TTL on expiresAt -> TTL on validUntil"

    applied = lab.run("apply", ["dynamodb"])
    assert [c.action for c in lab.changes(applied, "dynamodb")] == ["update"]
    assert ddb().describe_time_to_live(TableName=SESSIONS)["TimeToLiveDescription"] == {
        "TimeToLiveStatus": "ENABLED",
        "AttributeName": "validUntil",
    }
    assert lab.changes(lab.run("plan", ["dynamodb"]), "dynamodb") == []


def test_dynamodb_repairs_billing_mode_and_ttl_changed_by_hand(lab):
    lab.run("apply", ["dynamodb"])
    client = ddb()
    client.update_table(
        TableName=USERS,
        BillingMode="PROVISIONED",
        ProvisionedThroughput={"ReadCapacityUnits": 1, "WriteCapacityUnits": 1},
    )
    client.update_time_to_live(
        TableName=SESSIONS,
        TimeToLiveSpecification={"AttributeName": "expiresAt", "Enabled": False},
    )
    plan = lab.run("plan", ["dynamodb"])
    assert [(c.action, c.name, c.detail) for c in lab.changes(plan, "dynamodb")] == [
        ("update", USERS, "billing PROVISIONED -> PAY_PER_REQUEST"),
        ("update", SESSIONS, "TTL off -> TTL on expiresAt"),
    ]
    checks = lab.run("verify", ["dynamodb"], expect_ok=False).results["dynamodb"].checks
    assert sorted(c.name for c in checks if not c.ok) == [f"table {SESSIONS}", f"table {USERS}"]
    lab.run("apply", ["dynamodb"])
    assert (
        client.describe_table(TableName=USERS)["Table"]["BillingModeSummary"]["BillingMode"]
        == "PAY_PER_REQUEST"
    )
    ttl = client.describe_time_to_live(TableName=SESSIONS)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert lab.changes(lab.run("plan", ["dynamodb"]), "dynamodb") == []


def test_dynamodb_key_schema_change_is_a_replace_that_needs_allow_replace(lab, lab_config):
    lab.run("apply", ["dynamodb"])
    client = ddb()
    client.put_item(TableName=USERS, Item={"userId": {"S": "u-1"}})

    reconfigure(lab, with_tables(lab_config, users={"partition_key": "id"}))
    plan = lab.run("plan", ["dynamodb"])
    assert [(c.action, c.kind, c.name, c.detail) for c in lab.changes(plan, "dynamodb")] == [
        ("replace", "table", USERS, "key userId HASH S -> id HASH S")
    ]

    refused = lab.run("apply", ["dynamodb"], expect_ok=False).results["dynamodb"]
    assert refused.status is Status.FAILED
    assert "would delete all of its data" in refused.error
    assert "dynamodb.allow_replace=true" in refused.hint
    table = client.describe_table(TableName=USERS)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "userId", "KeyType": "HASH"}]
    assert client.scan(TableName=USERS)["Count"] == 1

    # The flag as the CLI passes it: --set dynamodb.allow_replace=true
    allowed = load_config(
        ROOT / "config" / "lab.yaml",
        [
            "dynamodb.tables=[{name: microservices-users, partition_key: id}, "
            "{name: microservices-sessions, partition_key: sessionId, ttl_attribute: expiresAt}]",
            "dynamodb.allow_replace=true",
        ],
    )
    reconfigure(lab, allowed)
    applied = lab.run("apply", ["dynamodb"])
    assert [c.action for c in lab.changes(applied, "dynamodb")] == ["replace"]
    table = client.describe_table(TableName=USERS)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["SSEDescription"]["Status"] == "ENABLED"
    assert client.scan(TableName=USERS)["Count"] == 0
    tags = client.list_tags_of_resource(ResourceArn=table["TableArn"])["Tags"]
    assert {"Key": "msctl:lab", "Value": "microservices"} in tags
    assert lab.changes(lab.run("plan", ["dynamodb"]), "dynamodb") == []


def test_dynamodb_adopts_existing_tables_without_state(lab):
    lab.run("apply", ["dynamodb"])
    lab.state.delete()
    plan = lab.run("plan", ["dynamodb"])
    assert lab.changes(plan, "dynamodb") == []
    assert set(plan.results["dynamodb"].outputs["tables"]) == {USERS, SESSIONS}
    lab.run("apply", ["dynamodb"])
    assert sorted(ddb().list_tables()["TableNames"]) == [SESSIONS, USERS]
