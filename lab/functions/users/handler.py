"""Users service: list, read and update users. Every route needs a session."""

from __future__ import annotations

import base64
import binascii
import json
import re

import labcommon
from boto3.dynamodb.conditions import Attr
from botocore.exceptions import ClientError
from labcommon import HttpError, Request, json_response, public_user, string_field

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
    if not user_id or len(user_id) > USER_ID_MAX or user_id.startswith(EMAIL_KEY_PREFIX):
        raise HttpError(404, "User not found")
    return user_id


def list_users(req: Request) -> dict:
    req.caller_id()
    limit = _limit(req.query)
    token = req.query.get("nextToken")
    users, last_key = _scan_users(limit, decode_next_token(token) if token else None)
    body = {
        "users": [public_user(u) for u in users],
        "nextToken": encode_next_token(last_key) if last_key else None,
    }
    return json_response(200, body)


def get_user(req: Request) -> dict:
    req.caller_id()
    user_id = _target_user_id(req)
    item = labcommon.users_table().get_item(Key={"userId": user_id}).get("Item")
    if not item:
        raise HttpError(404, "User not found")
    return json_response(200, public_user(item))


def update_user(req: Request) -> dict:
    caller = req.caller_id()
    user_id = _target_user_id(req)
    if user_id != caller:
        raise HttpError(403, "You can only update your own profile")
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


ROUTES = {
    "/users": {"GET": list_users},
    "/users/{id}": {"GET": get_user, "PUT": update_user},
}

lambda_handler = labcommon.api(ROUTES)
