"""Notification service: each user's notifications, stored as JSON objects in S3."""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import labcommon
from botocore.exceptions import ClientError
from labcommon import Request, json_response, string_field

MESSAGE_MAX = 1000
SUBJECT_MAX = 200
LIST_CAP = 50
PUBLIC_FIELDS = ("id", "message", "subject", "createdAt")


def _bucket() -> str:
    return os.environ["STATIC_BUCKET"]


def _user_prefix(user_id: str) -> str:
    return os.environ.get("NOTIFICATIONS_PREFIX", "notifications/") + user_id + "/"


def create_notification(req: Request) -> dict:
    user_id = req.caller_id()
    body = req.json()
    message = string_field(body, "message", max_len=MESSAGE_MAX, multiline=True)
    subject = string_field(body, "subject", required=False, max_len=SUBJECT_MAX)
    now = datetime.now(UTC)
    note = {
        "id": str(uuid.uuid4()),
        "message": message,
        "subject": subject,
        "createdAt": labcommon.now_iso(now),
    }
    # A sortable UTC timestamp first in the name makes key order creation order.
    key = f"{_user_prefix(user_id)}{now:%Y%m%dT%H%M%S%fZ}-{note['id']}.json"
    labcommon.s3().put_object(
        Bucket=_bucket(),
        Key=key,
        Body=json.dumps({**note, "userId": user_id}).encode(),
        ContentType="application/json",
    )
    return json_response(201, note)


def _keys(prefix: str) -> list[str]:
    paginator = labcommon.s3().get_paginator("list_objects_v2")
    pages = paginator.paginate(Bucket=_bucket(), Prefix=prefix)
    return [obj["Key"] for page in pages for obj in page.get("Contents", [])]


def _read(key: str) -> dict | None:
    try:
        obj = labcommon.s3().get_object(Bucket=_bucket(), Key=key)
    except ClientError as err:
        if err.response["Error"]["Code"] == "NoSuchKey":  # deleted since the listing
            return None
        raise
    stored = json.loads(obj["Body"].read())
    return {k: stored.get(k) for k in PUBLIC_FIELDS}


def list_notifications(req: Request) -> dict:
    user_id = req.caller_id()
    newest = sorted(_keys(_user_prefix(user_id)), reverse=True)[:LIST_CAP]
    with ThreadPoolExecutor(max_workers=8) as pool:
        notes = [note for note in pool.map(_read, newest) if note is not None]
    return json_response(200, {"notifications": notes})


def delete_notifications(req: Request) -> dict:
    """Every notification of the caller (no one else's: the prefix is the caller's)."""
    keys = _keys(_user_prefix(req.caller_id()))
    for start in range(0, len(keys), 1000):  # DeleteObjects' limit
        batch = [{"Key": key} for key in keys[start : start + 1000]]
        labcommon.s3().delete_objects(Bucket=_bucket(), Delete={"Objects": batch, "Quiet": True})
    return json_response(200, {"deleted": len(keys)})


ROUTES = {
    "/notifications": {
        "POST": create_notification,
        "GET": list_notifications,
        "DELETE": delete_notifications,
    }
}

lambda_handler = labcommon.api(ROUTES)
