"""Users service: list, read, update and delete users. Every route needs a session.

A plain user reaches only their own account (the list holds just them); an admin reaches
every account. Nobody changes a role through the API, and admin accounts can't be deleted
through it (msctl made the lab's admin and keeps its password in Secrets Manager).
"""

from __future__ import annotations

import base64
import binascii
import json
import re

import labcommon
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError
from labcommon import Caller, HttpError, Request, json_response, public_user, string_field

DEFAULT_LIMIT, MAX_LIMIT = 20, 100
NAME_MAX = 100
USER_ID_MAX = 128
EMAIL_KEY_PREFIX = "email#"  # email-uniqueness items written by the auth service
UPDATABLE_FIELDS = {"name"}

# ----------------------------------------------------------------- pagination


def encode_next_token(key: dict) -> str:
    raw = json.dumps(key, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_next_token(token: str) -> dict:
    """The scan start key an opaque nextToken stands for, or a 400."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error):
        raise HttpError(400, "query parameter 'nextToken' is invalid") from None
    valid = (
        isinstance(key, dict)
        and set(key) == {"userId"}
        and isinstance(key["userId"], str)
        and 0 < len(key["userId"]) <= USER_ID_MAX
    )
    if not valid:
        raise HttpError(400, "query parameter 'nextToken' is invalid")
    return key


def _limit(query: dict) -> int:
    raw = query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not re.fullmatch(r"[0-9]{1,3}", raw) or not 1 <= int(raw) <= MAX_LIMIT:
        raise HttpError(400, f"query parameter 'limit' must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def _scan_users(limit: int, start: dict | None) -> tuple[list[dict], dict | None]:
    # DynamoDB applies Limit before the filter that hides the email items, so
    # scan again for the shortfall; asking only for what's missing means a page
    # never overshoots and LastEvaluatedKey is exactly where the next one starts.
    table = labcommon.users_table()
    users: list[dict] = []
    key = start
    while True:
        kwargs = {
            "Limit": limit - len(users),
            "FilterExpression": ~Attr("userId").begins_with(EMAIL_KEY_PREFIX),
        }
        if key:
            kwargs["ExclusiveStartKey"] = key
        page = table.scan(**kwargs)
        users.extend(page["Items"])
        key = page.get("LastEvaluatedKey")
        if not key or len(users) >= limit:
            return users, key


# --------------------------------------------------------------------- routes


def _target_user_id(req: Request) -> str:
    user_id = req.params.get("id") or ""
    labcommon.check_text("path parameter 'id'", user_id)
    if not user_id or len(user_id) > USER_ID_MAX or user_id.startswith(EMAIL_KEY_PREFIX):
        raise HttpError(404, "User not found")
    return user_id


def _own_or_admin(caller: Caller, user_id: str, verb: str) -> None:
    if user_id != caller.user_id and not caller.is_admin:
        raise HttpError(403, f"You can only {verb} your own profile")


def _read_user(user_id: str) -> dict:
    item = labcommon.users_table().get_item(Key={"userId": user_id}).get("Item")
    if not item:
        raise HttpError(404, "User not found")
    return item


def list_users(req: Request) -> dict:
    caller = req.caller()
    limit = _limit(req.query)
    token = req.query.get("nextToken")
    start = decode_next_token(token) if token else None
    if not caller.is_admin:
        # No other user's email to a plain user: their list holds only themselves.
        item = labcommon.users_table().get_item(Key={"userId": caller.user_id}).get("Item")
        return json_response(200, {"users": [public_user(item)] if item else [], "nextToken": None})
    users, last_key = _scan_users(limit, start)
    body = {
        "users": [public_user(u) for u in users],
        "nextToken": encode_next_token(last_key) if last_key else None,
    }
    return json_response(200, body)


def get_user(req: Request) -> dict:
    caller = req.caller()
    user_id = _target_user_id(req)
    _own_or_admin(caller, user_id, "read")
    return json_response(200, public_user(_read_user(user_id)))


def update_user(req: Request) -> dict:
    caller = req.caller()
    user_id = _target_user_id(req)
    _own_or_admin(caller, user_id, "update")
    body = req.json()
    unknown = sorted(set(body) - UPDATABLE_FIELDS)
    if unknown:
        raise HttpError(400, f"field '{unknown[0]}' cannot be updated")
    name = string_field(body, "name", max_len=NAME_MAX)
    try:
        result = labcommon.users_table().update_item(
            Key={"userId": user_id},
            UpdateExpression="SET #name = :name, updatedAt = :now",
            ConditionExpression="attribute_exists(userId)",
            ExpressionAttributeNames={"#name": "name"},
            ExpressionAttributeValues={":name": name, ":now": labcommon.now_iso()},
            ReturnValues="ALL_NEW",
        )
    except ClientError as err:
        if err.response["Error"]["Code"] == "ConditionalCheckFailedException":
            raise HttpError(404, "User not found") from None
        raise
    return json_response(200, public_user(result["Attributes"]))


def delete_user(req: Request) -> dict:
    """The user, its email claim (in one transaction) and then its sessions."""
    caller = req.caller()
    user_id = _target_user_id(req)
    _own_or_admin(caller, user_id, "delete")
    item = _read_user(user_id)
    if labcommon.user_role(item) == labcommon.ADMIN:
        raise HttpError(403, "An admin account can't be deleted through the API")
    table = labcommon.users_table()
    user_part = {
        "TableName": table.name,
        "Key": {"userId": user_id},
        # Still the account that was read, and still not an admin.
        "ConditionExpression": (
            "email = :email AND (attribute_not_exists(#role) OR #role <> :admin)"
        ),
        "ExpressionAttributeNames": {"#role": "role"},
        "ExpressionAttributeValues": {":email": item["email"], ":admin": labcommon.ADMIN},
    }
    claim_part = {
        "TableName": table.name,
        "Key": {"userId": EMAIL_KEY_PREFIX + item["email"]},
        "ConditionExpression": "attribute_not_exists(userId) OR ownerId = :owner",
        "ExpressionAttributeValues": {":owner": user_id},
    }
    try:
        table.meta.client.transact_write_items(
            TransactItems=[{"Delete": user_part}, {"Delete": claim_part}]
        )
    except ClientError as err:
        if err.response["Error"]["Code"] == "TransactionCanceledException":
            raise HttpError(404, "User not found") from None
        raise
    _end_sessions(user_id)
    return json_response(204, None)


def _end_sessions(user_id: str) -> None:
    # Sessions are keyed by token; a deleted user's sessions already fail the authorizer
    # (it reads the user), this only removes them.
    table = labcommon.sessions_table()
    kwargs = {"FilterExpression": Attr("userId").eq(user_id), "ProjectionExpression": "sessionId"}
    while True:
        page = table.scan(**kwargs)
        for session in page["Items"]:
            table.delete_item(Key={"sessionId": session["sessionId"]})
        if "LastEvaluatedKey" not in page:
            return
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


ROUTES = {
    "/users": {"GET": list_users},
    "/users/{id}": {"GET": get_user, "PUT": update_user, "DELETE": delete_user},
}

lambda_handler = labcommon.api(ROUTES)
