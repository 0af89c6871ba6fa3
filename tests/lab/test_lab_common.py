"""labcommon: CORS, body parsing, routing, the generic 500, password hashing."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from lab_helpers import ORIGIN, PASSWORD, FakeContext, make_event

LOGIN = {"email": "someone@example.com", "password": PASSWORD}

# ----------------------------------------------------------------------- CORS


def test_allowed_origin_is_echoed(api):
    response = api.call("auth", "GET", "/auth/verify", headers={"Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert response.headers["Vary"] == "Origin"


def test_second_allowed_origin_is_echoed(api):
    other = "https://other.example.com"
    response = api.call("auth", "GET", "/auth/verify", headers={"Origin": other})
    assert response.headers["Access-Control-Allow-Origin"] == other


def test_disallowed_origin_is_not_echoed(api):
    response = api.call("auth", "GET", "/auth/verify", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert response.headers["Vary"] == "Origin"


def test_wildcard_origins(api, monkeypatch):
    monkeypatch.setenv("ALLOWED_ORIGINS", "*")
    response = api.call("auth", "GET", "/auth/verify", headers={"Origin": "https://any.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_no_origins_configured_allows_none(api, monkeypatch):
    monkeypatch.delenv("ALLOWED_ORIGINS")
    response = api.call("auth", "GET", "/auth/verify")
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_headers_on_errors_too(api):
    response = api.call("users", "GET", "/nowhere")
    assert response.status == 404
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_preflight(api):
    response = api.call("users", "OPTIONS", "/users/abc")
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Methods"] == "GET,PUT,DELETE,OPTIONS"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


# --------------------------------------------------------------- body parsing


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "request body is not valid JSON"),
        ("[1, 2]", "body must be a JSON object"),
        ('"text"', "body must be a JSON object"),
        ("", "request body is required"),
    ],
)
def test_bad_bodies(api, raw, message):
    response = api.call("auth", "POST", "/auth/login", raw_body=raw)
    assert (response.status, response.body) == (400, {"error": message})


def test_missing_body(api):
    response = api.call("auth", "POST", "/auth/login")
    assert response.body == {"error": "request body is required"}


def test_base64_body_is_decoded(api):
    raw = base64.b64encode(json.dumps(LOGIN).encode()).decode()
    response = api.call("auth", "POST", "/auth/login", raw_body=raw, base64_body=True)
    assert response.status == 401  # parsed, then rejected as an unknown user


def test_bad_base64_body(api):
    response = api.call("auth", "POST", "/auth/login", raw_body="%%%", base64_body=True)
    assert (response.status, response.body) == (400, {"error": "request body is not valid JSON"})


def test_lone_surrogate_is_rejected(api):
    raw = '{"email": "a@example.com", "name": "\\ud800", "password": "long enough"}'
    response = api.call("auth", "POST", "/auth/register", raw_body=raw)
    assert (response.status, response.body) == (
        400,
        {"error": "field 'name' must be valid Unicode text"},
    )


# -------------------------------------------------------------------- routing


def test_unknown_route_is_404(api):
    response = api.call("auth", "GET", "/auth/nothing")
    assert (response.status, response.body) == (404, {"error": "Not found"})


def test_wrong_method_is_405(api):
    response = api.call("auth", "GET", "/auth/login")
    assert (response.status, response.body) == (405, {"error": "Method not allowed"})
    assert response.headers["Allow"] == "POST,OPTIONS"


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/auth/login", "/auth/login"),
        ("/api/auth/login", None),
        ("/api/auth/login/", "/{proxy+}"),
        ("/auth/login", "/api/auth/login"),
    ],
)
def test_route_by_resource_or_path(api, path, resource):
    response = api.call("auth", "POST", path, resource=resource, body=LOGIN)
    assert response.status == 401
    assert response.body == {"error": "Invalid email or password"}


def test_path_parameter_from_path_when_resource_is_proxy(api):
    user_id, token = api.signup("proxy@example.com")
    path = f"/api/users/{user_id}"
    response = api.call("users", "GET", path, resource="/{proxy+}", token=token)
    assert (response.status, response.body["userId"]) == (200, user_id)


# ------------------------------------------------------------ the generic 500


def test_unexpected_error_gives_generic_500(api, labcommon, monkeypatch, caplog):
    def broken_table():
        raise RuntimeError("secret internal detail arn:aws:dynamodb:xyz")

    monkeypatch.setattr(labcommon, "users_table", broken_table)
    with caplog.at_level(logging.ERROR, logger="labcommon"):
        response = api.call("auth", "POST", "/auth/login", body=LOGIN)
    assert response.status == 500
    assert response.body == {"error": "Internal server error", "requestId": "test-request-id"}
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "secret internal detail" in caplog.text
    assert "test-request-id" in caplog.text


def test_generic_500_without_context_uses_gateway_request_id(handlers, aws, labcommon, monkeypatch):
    monkeypatch.delenv("USERS_TABLE")
    event = make_event("POST", "/auth/login", body=LOGIN)
    result = handlers["auth"].lambda_handler(event, None)
    assert result["statusCode"] == 500
    assert json.loads(result["body"])["requestId"] == "apigw-request-id"
    assert "USERS_TABLE" not in result["body"]


def test_handler_decorator_passes_through(labcommon, lab_env):
    @labcommon.handler
    def echo(event, context):
        return labcommon.json_response(200, {"path": event["path"]})

    result = echo({"path": "/x", "headers": {"origin": ORIGIN}}, FakeContext())
    assert result["statusCode"] == 200
    assert result["headers"]["Access-Control-Allow-Origin"] == ORIGIN


# -------------------------------------------------------------- bearer tokens


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer " + "a" * 43}, "a" * 43),
        ({"authorization": "bearer  " + "b" * 43}, "b" * 43),
        ({"authorization": "Basic " + "a" * 43}, None),
        ({"authorization": "Bearer"}, None),
        ({"authorization": "Bearer short"}, None),
        ({"authorization": "Bearer " + "x" * 500}, None),
        ({"authorization": "Bearer a/b+c=" + "d" * 40}, None),
        ({}, None),
    ],
)
def test_bearer_token(labcommon, headers, expected):
    assert labcommon.bearer_token(headers) == expected


def test_public_user_drops_everything_else(labcommon):
    item = {"userId": "u", "email": "e", "name": "n", "passwordHash": "x", "ownerId": "o"}
    assert labcommon.public_user(item) == {"userId": "u", "email": "e", "name": "n"}


def test_deeply_nested_json_is_a_400(api):
    response = api.call("auth", "POST", "/auth/login", raw_body="[" * 100_000)
    assert (response.status, response.body) == (400, {"error": "request body is not valid JSON"})


def test_non_string_header_values_are_ignored(api):
    response = api.call("auth", "GET", "/auth/verify", headers={"Origin": None, "X-Count": 3})
    assert response.status == 401
    assert "Access-Control-Allow-Origin" not in response.headers
