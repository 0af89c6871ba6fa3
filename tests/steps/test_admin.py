"""admin against moto: the first admin user and its secret, hashed as the auth function
hashes, never in the state file, never recreated while the secret exists."""

from __future__ import annotations

import importlib.util
import json
import sys

import boto3
import pytest

from msctl import apitest
from msctl.engine.model import Status

from .conftest import ROOT, assert_lifecycle

SECRET = "microservices/admin"
EMAIL = "admin@microservices.example.com"
USERS = "microservices-users"


@pytest.fixture(scope="module")
def auth():
    """lab/functions/auth/handler.py, to check the password as the lab checks it."""
    shared = str(ROOT / "lab" / "functions" / "_shared")
    sys.path.insert(0, shared)
    try:
        spec = importlib.util.spec_from_file_location(
            "admin_test_auth", ROOT / "lab" / "functions" / "auth" / "handler.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(shared)


def login() -> dict:
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    return json.loads(sm.get_secret_value(SecretId=SECRET)["SecretString"])


def secrets_listed() -> list[dict]:
    return boto3.client("secretsmanager", region_name="us-east-1").list_secrets()["SecretList"]


def user(user_id: str) -> dict | None:
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(USERS)
    return table.get_item(Key={"userId": user_id}).get("Item")


def claim_owner() -> str | None:
    item = user(f"email#{EMAIL}")
    return item["ownerId"] if item else None


def test_admin_lifecycle(lab, auth):
    lab.run("apply", ["dynamodb"])
    outputs = assert_lifecycle(lab, "admin", {("secret", SECRET)})
    assert outputs["admin_email"] == EMAIL
    assert outputs["secret_arn"].startswith("arn:aws:secretsmanager:us-east-1:")
    assert outputs["read_with"] == (
        f"aws secretsmanager get-secret-value --secret-id {outputs['secret_arn']} "
        "--region us-east-1 --query SecretString --output text"
    )
    assert secrets_listed() == []  # down deleted it, at once (no recovery window)


def test_the_admin_logs_in_as_the_auth_function_checks_and_nothing_leaks(lab, auth):
    lab.run("apply", ["admin"])
    secret = login()
    assert secret["email"] == EMAIL and len(secret["password"]) >= 24
    item = user(secret["userId"])
    assert (item["email"], item["role"], item["createdBy"]) == (EMAIL, "admin", "msctl")
    assert claim_owner() == secret["userId"]
    algorithm, iterations, _salt, _digest = item["passwordHash"].split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", str(auth.DEFAULT_ITERATIONS))
    assert auth.verify_password(secret["password"], item["passwordHash"])
    assert not auth.verify_password(secret["password"] + "x", item["passwordHash"])
    # The secret is tagged for the lab; the state file holds its ARN, never the password.
    described = boto3.client("secretsmanager", region_name="us-east-1").describe_secret(
        SecretId=SECRET
    )
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert (tags["msctl:lab"], tags["msctl:step"]) == ("microservices", "admin")
    state = (lab.state.path).read_text()
    assert secret["password"] not in state and item["passwordHash"] not in state
    assert lab.state.outputs("admin")["secret_arn"] == described["ARN"]
    # What `msctl test-api` signs in with.
    sm = lab.ctx.clients.secretsmanager
    assert apitest.admin_login(sm, described["ARN"]) == (EMAIL, secret["password"])


def test_while_the_secret_exists_the_admin_is_never_recreated(lab):
    lab.run("apply", ["admin"])
    first = login()
    boto3.resource("dynamodb", region_name="us-east-1").Table(USERS).delete_item(
        Key={"userId": first["userId"]}
    )
    again = lab.run("apply", ["admin"])
    assert again.results["admin"].status is Status.NOCHANGE
    assert user(first["userId"]) is None and login() == first
    checks = lab.run("verify", ["admin"], expect_ok=False).results["admin"].checks
    bad = [c for c in checks if not c.ok]
    assert [c.name for c in bad] == [f"admin user {EMAIL}"]
    assert "msctl down --only admin" in bad[0].detail


def test_after_down_up_gives_msctls_admin_a_new_password(lab, auth):
    lab.run("apply", ["admin"])
    first = login()
    lab.run("destroy", ["admin"])
    assert user(first["userId"])["role"] == "admin"  # the user goes with the table
    lab.run("apply", ["admin"])
    second = login()
    assert second["userId"] == first["userId"] and second["password"] != first["password"]
    stored = user(second["userId"])["passwordHash"]
    assert auth.verify_password(second["password"], stored)
    assert not auth.verify_password(first["password"], stored)


def test_an_account_msctl_did_not_create_is_never_promoted(lab):
    lab.run("apply", ["dynamodb"])
    table = boto3.resource("dynamodb", region_name="us-east-1").Table(USERS)
    table.put_item(Item={"userId": "someone", "email": EMAIL, "name": "Mallory", "role": "user"})
    table.put_item(Item={"userId": f"email#{EMAIL}", "ownerId": "someone"})
    result = lab.run("apply", ["admin"], expect_ok=False)
    assert result.results["admin"].status is Status.FAILED
    assert "didn't create" in result.results["admin"].error
    assert user("someone")["role"] == "user"
    assert secrets_listed() == []


def test_a_foreign_secret_of_the_same_name_is_never_adopted_or_deleted(lab):
    sm = boto3.client("secretsmanager", region_name="us-east-1")
    sm.create_secret(Name=SECRET, SecretString="someone else's")
    result = lab.run("apply", ["admin"], expect_ok=False)
    assert result.results["admin"].status is Status.FAILED
    assert "isn't lab microservices's" in result.results["admin"].error
    lab.run("destroy", ["admin"])
    assert sm.get_secret_value(SecretId=SECRET)["SecretString"] == "someone else's"
    assert claim_owner() is None
