"""admin: the lab's first admin user, its login kept in a Secrets Manager secret.

The users table gets one user with role `admin` (product writes and managing users need it)
and a random password, hashed exactly as the auth function hashes
(`pbkdf2_sha256$<iterations>$<salt>$<hash>`: it verifies with the parameters stored in the
hash). The email and the password go into the secret `<lab>/admin`, tagged for the lab;
msctl never records them: the outputs carry the secret's ARN and the admin's email only.
Read the password with `aws secretsmanager get-secret-value --secret-id <arn>` (on the local
target add `--endpoint-url` with the emulator's URL); the step's outputs and its status
check spell it out.

The secret is the record of the admin: while it exists nothing is created or changed. `down`
deletes the secret (the user goes with the users table); a later `up` makes a new secret and
gives msctl's admin a new password. An account msctl didn't create is never promoted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shlex
import uuid
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from ..aws.tags import as_list
from ..config.names import admin_secret_name
from ..engine.model import Check, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.base import absent
from ..resources.data import SECRET
from .base import LabStep
from .run import StepRun

ROLE = "admin"
NAME = "Lab admin"
CREATED_BY = "msctl"  # marks the account msctl made, the only one it ever changes
EMAIL_KEY_PREFIX = "email#"  # the auth function's email-uniqueness items
USERS_KEY = "userId"
# As lab/functions/auth hashes: PBKDF2-HMAC-SHA256, 16-byte salt, its default iterations.
HASH_ALGORITHM = "pbkdf2_sha256"
HASH_ITERATIONS = 210_000
SALT_BYTES = 16


class AdminStep(LabStep):
    name = "admin"
    requires = ("dynamodb",)
    services = ("dynamodb", "secretsmanager")
    description = "the lab's first admin user, its password in Secrets Manager"
    kinds = (SECRET,)

    def names(self, config):
        return [(SECRET, admin_secret_name(config.lab))]

    def reconcile(self, run: StepRun) -> dict:
        name, email = admin_secret_name(run.config.lab), admin_email(run.config)
        table = users_table(run.config)
        arn = run.ensure(SECRET, name, create=lambda: create_admin(run, name, table, email))
        return {
            "secret_arn": arn,
            "admin_email": email,
            "read_with": arn if is_pending(arn) else read_command(run, arn),
        }

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        arn = run.outputs.get("secret_arn")
        if not is_pending(arn):
            checks.append(admin_check(run, arn))
        return checks


def admin_email(config) -> str:
    return f"admin@{config.lab}.example.com"


def users_table(config) -> str:
    for table in config.dynamodb.tables:
        if table.partition_key == USERS_KEY:
            return table.name
    raise StepError(
        f"no table in dynamodb.tables has partition key {USERS_KEY!r}",
        hint="the lab's functions need a users table (userId)",
    )


def read_command(run: StepRun, arn: str) -> str:
    """The AWS CLI command that prints the secret (email and password)."""
    words = ["aws", "secretsmanager", "get-secret-value", "--secret-id", arn]
    words += ["--region", run.clients.region, "--query", "SecretString", "--output", "text"]
    if run.ctx.target.endpoint:
        words += ["--endpoint-url", run.ctx.target.endpoint]
    return shlex.join(words)


def hash_password(password: str, iterations: int = HASH_ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    encode = base64.b64encode
    return f"{HASH_ALGORITHM}${iterations}${encode(salt).decode()}${encode(digest).decode()}"


# ---------------------------------------------------------------- create


def create_admin(run: StepRun, name: str, table: str, email: str) -> Resource:
    """The admin user (or msctl's existing one, with a new password), then the secret."""
    password = secrets.token_urlsafe(24)
    user_id = put_admin(run.clients.dynamodb, table, email, hash_password(password))
    login = json.dumps({"email": email, "password": password, "userId": user_id})
    sm = run.clients.secretsmanager
    return run.retry(
        lambda: sm.create_secret(
            Name=name,
            Description=f"msctl lab {run.ctx.lab}: email and password of the lab's admin user",
            SecretString=login,
            Tags=as_list(run.tags(name)),
        ),
        codes=("InvalidRequestException",),
        match=lambda exc: "scheduled for deletion" in str(exc),
        reason=f"the secret {name} was deleted moments ago",
    )


def put_admin(ddb, table: str, email: str, password_hash: str) -> str:
    """The admin's user id: a new user with its email claim, or msctl's admin from before
    (its secret was deleted) with the new password. Stops at anyone else's account."""
    claim_key = {"userId": {"S": EMAIL_KEY_PREFIX + email}}
    claim = ddb.get_item(TableName=table, Key=claim_key, ConsistentRead=True).get("Item")
    owner = _get_user(ddb, table, claim["ownerId"]["S"]) if claim else None
    if owner is not None:
        if _text(owner, "createdBy") != CREATED_BY or _text(owner, "role") != ROLE:
            raise StepError(
                f"{email} is already registered in table {table} by an account msctl "
                "didn't create: msctl never makes it an admin",
                hint="delete that account (DELETE /api/users/<id>), then run `msctl up` again",
            )
        ddb.update_item(
            TableName=table,
            Key={"userId": owner["userId"]},
            UpdateExpression="SET passwordHash = :hash",
            ConditionExpression="createdBy = :msctl",
            ExpressionAttributeValues={":hash": {"S": password_hash}, ":msctl": {"S": CREATED_BY}},
        )
        return owner["userId"]["S"]
    user_id = str(uuid.uuid4())
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    user = {
        "userId": user_id,
        "email": email,
        "name": NAME,
        "role": ROLE,
        "createdBy": CREATED_BY,
        "createdAt": now,
        "passwordHash": password_hash,
    }
    # A claim whose user is gone (deleted by hand) is taken over; any other claim stops it.
    claim_condition = {"ConditionExpression": "attribute_not_exists(userId)"}
    if claim:
        claim_condition = {
            "ConditionExpression": "ownerId = :old",
            "ExpressionAttributeValues": {":old": claim["ownerId"]},
        }
    ddb.transact_write_items(
        TransactItems=[
            {
                "Put": {
                    "TableName": table,
                    "Item": {k: {"S": v} for k, v in user.items()},
                    "ConditionExpression": "attribute_not_exists(userId)",
                }
            },
            {
                "Put": {
                    "TableName": table,
                    "Item": {**claim_key, "ownerId": {"S": user_id}},
                    **claim_condition,
                }
            },
        ]
    )
    return user_id


def _get_user(ddb, table: str, user_id: str) -> dict | None:
    key = {"userId": {"S": user_id}}
    return ddb.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")


def _text(item: dict, field: str) -> str | None:
    return (item.get(field) or {}).get("S")


# ---------------------------------------------------------------- verify


def admin_check(run: StepRun, arn: str) -> Check:
    """msctl's admin is in the users table; the detail says how to read its password."""
    cfg = run.config
    email, table = admin_email(cfg), users_table(cfg)
    name = f"admin user {email}"
    ddb = run.clients.dynamodb
    try:
        claim = absent(
            lambda: ddb.get_item(
                TableName=table, Key={"userId": {"S": EMAIL_KEY_PREFIX + email}}
            ).get("Item")
        )
        owner = _get_user(ddb, table, claim["ownerId"]["S"]) if claim else None
    except ClientError as exc:
        return Check(name, False, f"can't read table {table}: {exc}")
    if owner is None or _text(owner, "createdBy") != CREATED_BY or _text(owner, "role") != ROLE:
        return Check(
            name,
            False,
            f"missing from table {table}: `msctl down --only admin` and `msctl up` "
            "make a new admin and secret",
        )
    return Check(name, True, f"password: {read_command(run, arn)}")
