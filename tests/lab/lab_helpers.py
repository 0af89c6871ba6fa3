"""Constants and the API-calling helper shared by the lab handler tests."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import boto3

USERS_TABLE = "test-users"
SESSIONS_TABLE = "test-sessions"
BUCKET = "test-static"
ORIGIN = "https://lab.example.com"
PASSWORD = "correct-horse-battery"
OTHER_PASSWORD = "Tr0ub4dor&3-staple"
METHOD_ARN = "arn:aws:execute-api:us-east-1:123456789012:abc123/prod/GET/users"
# Nothing the handlers return may ever contain these.
FORBIDDEN = ("passwordHash", "pbkdf2", PASSWORD, OTHER_PASSWORD)


class FakeContext:
    aws_request_id = "test-request-id"
    function_name = "test-function"


@dataclass
class Response:
    status: int
    body: Any
    headers: dict[str, str]


def assert_nothing_secret(payload: Any) -> None:
    text = json.dumps(payload, default=str)
    for secret in FORBIDDEN:
        assert secret not in text, f"response leaks {secret!r}: {text}"


def make_event(
    method: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    resource: str | None = None,
    path_params: dict[str, str] | None = None,
    authorizer: dict[str, str] | None = None,
    base64_body: bool = False,
) -> dict:
    """A REST API proxy-integration event, shaped like API Gateway's."""
    all_headers = {"Origin": ORIGIN, **(headers or {})}
    if token is not None:
        all_headers["Authorization"] = f"Bearer {token}"
    request_context: dict[str, Any] = {"requestId": "apigw-request-id", "stage": "prod"}
    if authorizer is not None:
        request_context["authorizer"] = authorizer
    event = {
        "httpMethod": method,
        "path": path,
        "headers": all_headers,
        "queryStringParameters": query,
        "pathParameters": path_params,
        "body": raw_body if raw_body is not None else (None if body is None else json.dumps(body)),
        "isBase64Encoded": base64_body,
        "requestContext": request_context,
    }
    if resource is not None:
        event["resource"] = resource
    return event


class LabApi:
    """Calls the handlers the way API Gateway does, checking every response."""

    def __init__(self, handlers: dict[str, ModuleType]):
        self.handlers = handlers

    def invoke(self, function: str, event: dict) -> Response:
        result = self.handlers[function].lambda_handler(event, FakeContext())
        assert_nothing_secret(result)
        assert result["headers"]["Content-Type"] == "application/json"
        body = json.loads(result["body"]) if result["body"] else None
        return Response(result["statusCode"], body, result["headers"])

    def call(self, function: str, method: str, path: str, **kwargs: Any) -> Response:
        return self.invoke(function, make_event(method, path, **kwargs))

    def authorize(self, event: dict) -> dict:
        result = self.handlers["authorizer"].lambda_handler(event, FakeContext())
        assert_nothing_secret(result)
        return result

    def register(self, email: str, name: str = "Test User", password: str = PASSWORD) -> dict:
        """Register; the answer names no user (it is the same for a taken email), so the new
        user is read from the table."""
        body = {"email": email, "name": name, "password": password}
        response = self.call("auth", "POST", "/auth/register", body=body)
        assert response.status == 202, response.body
        return user_by_email(email)

    def admin(self, email: str = "admin@example.com") -> tuple[str, str]:
        """An admin (made a user by registering, then given the role in the table, as only
        msctl can); returns (userId, token)."""
        user_id = self.register(email, "Admin")["userId"]
        users_table().update_item(
            Key={"userId": user_id},
            UpdateExpression="SET #role = :admin",
            ExpressionAttributeNames={"#role": "role"},
            ExpressionAttributeValues={":admin": "admin"},
        )
        return user_id, self.login(email)

    def login(self, email: str, password: str = PASSWORD) -> str:
        body = {"email": email, "password": password}
        response = self.call("auth", "POST", "/auth/login", body=body)
        assert response.status == 200, response.body
        return response.body["token"]

    def signup(self, email: str, name: str = "Test User") -> tuple[str, str]:
        """Register and log in; returns (userId, token)."""
        user = self.register(email, name)
        return user["userId"], self.login(email)


def users_table():
    return boto3.resource("dynamodb").Table(USERS_TABLE)


def user_by_email(email: str) -> dict:
    claim = users_table().get_item(Key={"userId": "email#" + email.strip().lower()})["Item"]
    return users_table().get_item(Key={"userId": claim["ownerId"]})["Item"]


def put_session(token: str, user_id: str, expires_in: int) -> None:
    now = int(time.time())
    boto3.resource("dynamodb").Table(SESSIONS_TABLE).put_item(
        Item={
            "sessionId": token,
            "userId": user_id,
            "expiresAt": now + expires_in,
            "createdAt": "2024-01-01T00:00:00.000Z",
        }
    )
