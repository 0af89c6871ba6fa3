"""The notifications function: per-user JSON objects in the static bucket."""

from __future__ import annotations

import json

import boto3
import pytest
from lab_helpers import BUCKET


def post(api, token, body, **kwargs):
    return api.call(
        "notifications",
        "POST",
        "/notifications",
        resource="/notifications",
        token=token,
        body=body,
        **kwargs,
    )


def listing(api, token, **kwargs):
    return api.call(
        "notifications", "GET", "/notifications", resource="/notifications", token=token, **kwargs
    )


def stored_keys(prefix: str = "") -> list[str]:
    contents = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return [obj["Key"] for obj in contents]


def put_stored(key: str, note: dict) -> None:
    boto3.client("s3").put_object(Bucket=BUCKET, Key=key, Body=json.dumps(note).encode())


def test_create_notification(api):
    user_id, token = api.signup("ada@example.com")
    response = post(api, token, {"message": "Order shipped", "subject": "Orders"})
    assert response.status == 201
    note = response.body
    assert set(note) == {"id", "message", "subject", "createdAt"}
    assert (note["message"], note["subject"]) == ("Order shipped", "Orders")
    [key] = stored_keys()
    assert key.startswith(f"notifications/{user_id}/")
    assert key.endswith(f"-{note['id']}.json")
    obj = boto3.client("s3").get_object(Bucket=BUCKET, Key=key)
    assert obj["ContentType"] == "application/json"
    assert json.loads(obj["Body"].read()) == {**note, "userId": user_id}


def test_subject_is_optional(api):
    _, token = api.signup("ada@example.com")
    response = post(api, token, {"message": "hi"})
    assert (response.status, response.body["subject"]) == (201, None)


def test_prefix_from_environment(api, monkeypatch):
    monkeypatch.setenv("NOTIFICATIONS_PREFIX", "inbox/")
    user_id, token = api.signup("ada@example.com")
    post(api, token, {"message": "hi"})
    assert stored_keys()[0].startswith(f"inbox/{user_id}/")
    assert len(listing(api, token).body["notifications"]) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "field 'message' is required"),
        ({"message": ""}, "field 'message' must not be empty"),
        ({"message": 5}, "field 'message' must be a string"),
        ({"message": "m" * 1001}, "field 'message' must be at most 1000 characters"),
        ({"message": "hi", "subject": 3}, "field 'subject' must be a string"),
        ({"message": "hi", "subject": "s" * 201}, "field 'subject' must be at most 200 characters"),
        (
            {"message": "a\x00b"},
            "field 'message' must not contain control characters other than tab and line breaks",
        ),
        (
            {"message": "hi", "subject": "a\nb"},
            "field 'subject' must not contain control characters",
        ),
    ],
)
def test_create_rejects_bad_fields(api, body, message):
    _, token = api.signup("ada@example.com")
    response = post(api, token, body)
    assert (response.status, response.body) == (400, {"error": message})
    assert stored_keys() == []


def test_a_message_may_span_lines(api):
    _, token = api.signup("ada@example.com")
    text = "line one\r\n\tline two"
    assert post(api, token, {"message": text}).status == 201
    assert listing(api, token).body["notifications"][0]["message"] == text


def test_message_of_1000_chars_is_fine(api):
    _, token = api.signup("ada@example.com")
    assert post(api, token, {"message": "m" * 1000}).status == 201


def test_create_with_malformed_json(api):
    _, token = api.signup("ada@example.com")
    response = api.call("notifications", "POST", "/notifications", token=token, raw_body="nope")
    assert (response.status, response.body) == (400, {"error": "request body is not valid JSON"})


def test_round_trip(api):
    _, token = api.signup("ada@example.com")
    created = post(api, token, {"message": "hello", "subject": "greeting"}).body
    response = listing(api, token)
    assert (response.status, response.body) == (200, {"notifications": [created]})


def test_list_is_newest_first_and_only_own(api):
    ada, token = api.signup("ada@example.com")
    bob = api.register("bob@example.com")["userId"]
    for stamp in ("20240101T000000000000Z", "20240301T000000000000Z", "20240201T000000000000Z"):
        note = {"id": stamp, "message": stamp, "subject": None, "createdAt": stamp, "userId": ada}
        put_stored(f"notifications/{ada}/{stamp}-{stamp}.json", note)
    put_stored(f"notifications/{bob}/20250101T000000000000Z-x.json", {"id": "bob", "message": "x"})
    response = listing(api, token)
    assert [n["id"] for n in response.body["notifications"]] == [
        "20240301T000000000000Z",
        "20240201T000000000000Z",
        "20240101T000000000000Z",
    ]
    assert all("userId" not in n for n in response.body["notifications"])


def test_list_is_capped_at_50(api):
    user_id, token = api.signup("ada@example.com")
    for i in range(55):
        put_stored(f"notifications/{user_id}/{i:04d}-n.json", {"id": str(i), "message": "m"})
    notes = listing(api, token).body["notifications"]
    assert [n["id"] for n in notes] == [str(i) for i in range(54, 4, -1)]


def test_list_when_empty(api):
    _, token = api.signup("ada@example.com")
    assert listing(api, token).body == {"notifications": []}


def test_identity_from_authorizer_context(api):
    user_id = api.register("ada@example.com")["userId"]
    response = post(api, None, {"message": "hi"}, authorizer={"userId": user_id})
    assert response.status == 201
    assert stored_keys()[0].startswith(f"notifications/{user_id}/")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_needs_session(api, method):
    response = api.call("notifications", method, "/notifications", body={"message": "hi"})
    assert (response.status, response.body) == (401, {"error": "A valid session is required"})


def test_expired_session(api, put_session):
    put_session("expired-token-0123456789abcdef", "someone", expires_in=-5)
    assert listing(api, "expired-token-0123456789abcdef").status == 401


def test_wrong_method(api):
    assert api.call("notifications", "PUT", "/notifications").status == 405


def test_injected_error_is_generic_500(api, labcommon, monkeypatch):
    _, token = api.signup("ada@example.com")

    def broken():
        raise OSError("bucket test-static: connection reset by peer")

    monkeypatch.setattr(labcommon, "s3", broken)
    response = post(api, token, {"message": "hi"})
    assert response.status == 500
    assert response.body == {"error": "Internal server error", "requestId": "test-request-id"}


def test_a_user_deletes_their_own_notifications_and_no_one_elses(api):
    _alice, alice = api.signup("alice@example.com")
    _bob, bob = api.signup("bob@example.com")
    for token in (alice, alice, bob):
        assert post(api, token, {"message": "hi"}).status == 201
    deleted = api.call(
        "notifications", "DELETE", "/notifications", resource="/notifications", token=alice
    )
    assert (deleted.status, deleted.body) == (200, {"deleted": 2})
    assert listing(api, alice).body["notifications"] == []
    assert len(listing(api, bob).body["notifications"]) == 1
