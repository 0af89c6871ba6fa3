"""The API Gateway REQUEST authorizer."""

from __future__ import annotations

import pytest
from lab_helpers import METHOD_ARN, users_table

API_WIDE = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/*/*"


def request_event(headers: dict | None, method_arn=METHOD_ARN) -> dict:
    return {"type": "REQUEST", "methodArn": method_arn, "headers": headers, "httpMethod": "GET"}


def statement(result: dict) -> dict:
    [only] = result["policyDocument"]["Statement"]
    return only


def test_valid_session_is_allowed_api_wide(api):
    user_id, token = api.signup("ada@example.com")
    result = api.authorize(request_event({"Authorization": f"Bearer {token}"}))
    assert result["principalId"] == user_id
    assert result["context"] == {"userId": user_id, "role": "user"}
    assert result["policyDocument"]["Version"] == "2012-10-17"
    assert statement(result) == {
        "Action": "execute-api:Invoke",
        "Effect": "Allow",
        "Resource": API_WIDE,
    }


def test_header_name_and_scheme_are_case_insensitive(api):
    _, token = api.signup("ada@example.com")
    result = api.authorize(request_event({"authorization": f"bearer {token}"}))
    assert statement(result)["Effect"] == "Allow"


def test_token_type_event(api):
    _, token = api.signup("ada@example.com")
    event = {"type": "TOKEN", "methodArn": METHOD_ARN, "authorizationToken": f"Bearer {token}"}
    assert statement(api.authorize(event))["Effect"] == "Allow"


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"Authorization": "Bearer unknown-token-0123456789abcdef"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_unknown_token_is_unauthorized(api, headers):
    with pytest.raises(Exception, match="^Unauthorized$"):
        api.authorize(request_event(headers))


def test_expired_session_is_unauthorized(api, put_session):
    put_session("expired-token-0123456789abcdef", "someone", expires_in=-1)
    with pytest.raises(Exception, match="^Unauthorized$"):
        api.authorize(request_event({"Authorization": "Bearer expired-token-0123456789abcdef"}))


def test_logged_out_session_is_unauthorized(api):
    _, token = api.signup("ada@example.com")
    api.call("auth", "POST", "/auth/logout", token=token)
    with pytest.raises(Exception, match="^Unauthorized$"):
        api.authorize(request_event({"Authorization": f"Bearer {token}"}))


def test_the_role_comes_from_the_users_table_at_each_call(api):
    user_id, token = api.admin()
    event = request_event({"Authorization": f"Bearer {token}"})
    assert api.authorize(event)["context"] == {"userId": user_id, "role": "admin"}
    users_table().update_item(
        Key={"userId": user_id},
        UpdateExpression="SET #role = :r",
        ExpressionAttributeNames={"#role": "role"},
        ExpressionAttributeValues={":r": "superuser"},  # unknown: no more than a user
    )
    assert api.authorize(event)["context"]["role"] == "user"


def test_a_deleted_users_session_is_unauthorized(api):
    user_id, token = api.signup("ada@example.com")
    users_table().delete_item(Key={"userId": user_id})
    with pytest.raises(Exception, match="^Unauthorized$"):
        api.authorize(request_event({"Authorization": f"Bearer {token}"}))


@pytest.mark.parametrize(
    "method_arn",
    [
        None,
        42,
        "",
        "not-an-arn",
        "arn:aws:lambda:us-east-1:123456789012:function:x",
        "arn:aws:execute-api:us-east-1:123456789012:abc123",
        "arn:aws:execute-api:us-east-1:123456789012:abc123/",
        "arn:aws:execute-api::123456789012:abc123/prod/GET/users",
        "arn:aws:execute-api:us-east-1:123456789012:*/prod/GET/users",
    ],
)
def test_malformed_method_arn_is_denied(api, method_arn):
    user_id, token = api.signup("ada@example.com")
    result = api.authorize(request_event({"Authorization": f"Bearer {token}"}, method_arn))
    assert result["principalId"] == user_id
    assert statement(result) == {"Action": "execute-api:Invoke", "Effect": "Deny", "Resource": "*"}
    assert "context" not in result


@pytest.mark.parametrize(
    ("method_arn", "expected"),
    [
        (METHOD_ARN, API_WIDE),
        ("arn:aws:execute-api:us-east-1:123456789012:abc123/prod/PUT/users/u-1", API_WIDE),
        ("arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/", API_WIDE),
        (
            "arn:aws-cn:execute-api:cn-north-1:123456789012:xyz/dev/POST/a/b",
            "arn:aws-cn:execute-api:cn-north-1:123456789012:xyz/dev/*/*",
        ),
    ],
)
def test_api_wide_arn(handlers, method_arn, expected):
    assert handlers["authorizer"].api_wide_arn(method_arn) == expected


def test_non_dict_event_is_unauthorized(api):
    with pytest.raises(Exception, match="^Unauthorized$"):
        api.authorize(None)
