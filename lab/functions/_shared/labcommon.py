"""Shared helpers for the lab's Lambda handlers.

Packaged next to every handler, so handlers `import labcommon` as a top-level module.
Stdlib + boto3 only.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import boto3

logger = logging.getLogger("labcommon")

ALLOW_HEADERS = "Content-Type,Authorization"
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
ADMIN, DEFAULT_ROLE = "admin", "user"
ROLES = (DEFAULT_ROLE, ADMIN)
# C0 and C1 control characters; multi-line text may keep tab, newline and carriage return.
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_MULTILINE_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

# ---------------------------------------------------------------- AWS clients

_aws_cache: dict[tuple[str, str], Any] = {}


def _aws(kind: str, service: str) -> Any:
    # One client per process (Lambda reuses warm containers); the region and
    # endpoint come from the standard AWS environment at first use.
    key = (kind, service)
    if key not in _aws_cache:
        factory = boto3.resource if kind == "resource" else boto3.client
        _aws_cache[key] = factory(service)
    return _aws_cache[key]


def reset_clients() -> None:
    """Forget cached clients (tests create them inside each mock)."""
    _aws_cache.clear()


def dynamodb() -> Any:
    return _aws("resource", "dynamodb")


def dynamodb_client() -> Any:
    return dynamodb().meta.client


def s3() -> Any:
    return _aws("client", "s3")


def users_table() -> Any:
    return dynamodb().Table(os.environ["USERS_TABLE"])


def sessions_table() -> Any:
    return dynamodb().Table(os.environ["SESSIONS_TABLE"])


# ------------------------------------------------------------------ responses


class HttpError(Exception):
    """An expected client error; its message is safe to show to the caller."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> dict:
    return {
        "statusCode": status,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": "" if body is None else json.dumps(body, default=_json_default),
    }


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> dict:
    return json_response(status, {"error": message}, headers)


def cors_headers(request_origin: str | None) -> dict[str, str]:
    allowed = os.environ.get("ALLOWED_ORIGINS", "").strip()
    headers = {"Access-Control-Allow-Headers": ALLOW_HEADERS}
    if allowed == "*":
        headers["Access-Control-Allow-Origin"] = "*"
        return headers
    headers["Vary"] = "Origin"
    origins = {o.strip() for o in allowed.split(",") if o.strip()}
    if request_origin and request_origin in origins:
        headers["Access-Control-Allow-Origin"] = request_origin
    return headers


# -------------------------------------------------------------------- request


def lower_headers(event: dict) -> dict[str, str]:
    headers = event.get("headers") or {}
    return {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)}


def bearer_token(headers: dict[str, str]) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (lower-cased header keys)."""
    scheme, _, token = (headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not TOKEN_RE.match(token):
        return None
    return token


def get_session(token: str | None) -> dict | None:
    """The live session item for a token, or None if unknown or expired."""
    if not token:
        return None
    item = sessions_table().get_item(Key={"sessionId": token}).get("Item")
    # DynamoDB TTL deletes expired items lazily, so check expiry on every read.
    if not item or int(item.get("expiresAt", 0)) <= int(time.time()):
        return None
    return item


@dataclass(frozen=True)
class Caller:
    """Who is calling: the user id and role the authorizer vouched for."""

    user_id: str
    role: str = DEFAULT_ROLE

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def user_role(item: dict | None) -> str:
    """The role of a user item; anything unknown counts as a plain user."""
    role = (item or {}).get("role")
    return role if role in ROLES else DEFAULT_ROLE


def session_caller(token: str | None) -> Caller | None:
    """The caller a session token stands for: None if the session is unknown or expired, or
    its user no longer exists (a deleted account's sessions die with it)."""
    session = get_session(token)
    if session is None:
        return None
    user = users_table().get_item(Key={"userId": session["userId"]}).get("Item")
    if user is None:
        return None
    return Caller(session["userId"], user_role(user))


@dataclass
class Request:
    event: dict
    params: dict[str, str] = field(default_factory=dict)

    @property
    def headers(self) -> dict[str, str]:
        return lower_headers(self.event)

    @property
    def query(self) -> dict[str, str]:
        return self.event.get("queryStringParameters") or {}

    def json(self) -> dict:
        """The body as a JSON object, or a 400."""
        raw = self.event.get("body")
        if raw is None or raw == "":
            raise HttpError(400, "request body is required")
        if self.event.get("isBase64Encoded"):
            try:
                raw = base64.b64decode(raw, validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise HttpError(400, "request body is not valid JSON") from None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise HttpError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body

    def caller(self) -> Caller:
        """The authenticated caller, or a 401."""
        authorizer = (self.event.get("requestContext") or {}).get("authorizer") or {}
        if isinstance(authorizer.get("userId"), str) and authorizer["userId"]:
            # Set by API Gateway after the Lambda authorizer accepted the token.
            role = authorizer.get("role")
            return Caller(authorizer["userId"], role if role in ROLES else DEFAULT_ROLE)
        caller = session_caller(bearer_token(self.headers))
        if caller is None:
            raise HttpError(401, "A valid session is required")
        return caller

    def caller_id(self) -> str:
        """The authenticated user's id, or a 401."""
        return self.caller().user_id


def string_field(
    body: dict,
    name: str,
    *,
    required: bool = True,
    max_len: int | None = None,
    multiline: bool = False,
) -> str | None:
    """body[name] as a stripped, non-empty string, or a 400 naming the field."""
    value = body.get(name)
    if value is None:
        if required:
            raise HttpError(400, f"field '{name}' is required")
        return None
    if not isinstance(value, str):
        raise HttpError(400, f"field '{name}' must be a string")
    check_text(f"field '{name}'", value, multiline=multiline)
    value = value.strip()
    if not value:
        raise HttpError(400, f"field '{name}' must not be empty")
    if max_len is not None and len(value) > max_len:
        raise HttpError(400, f"field '{name}' must be at most {max_len} characters")
    return value


def check_text(what: str, value: str, *, multiline: bool = False) -> None:
    """A 400 naming `what` for text that can't be stored or shown safely: lone surrogates,
    NUL and other control characters (multi-line text may keep tab and newlines)."""
    if not is_utf8(value):
        raise HttpError(400, f"{what} must be valid Unicode text")
    if (CONTROL_MULTILINE_RE if multiline else CONTROL_RE).search(value):
        allowed = " other than tab and line breaks" if multiline else ""
        raise HttpError(400, f"{what} must not contain control characters{allowed}")


def is_utf8(value: str) -> bool:
    # json.loads accepts lone surrogates ("\ud800"), which can't be encoded or stored.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


PUBLIC_USER_FIELDS = ("userId", "email", "name", "role", "createdAt", "updatedAt")


def public_user(item: dict) -> dict:
    """The fields of a user item that may leave the service (never passwordHash)."""
    return {k: item[k] for k in PUBLIC_USER_FIELDS if k in item}


def now_iso(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -------------------------------------------------------------------- routing

Route = Callable[[Request], dict]


def _strip_api(path: str) -> str:
    path = "/" + path.strip("/")
    if path == "/api" or path.startswith("/api/"):
        path = "/" + path[4:].strip("/")
    return path


def _match(template: str, path: str) -> dict[str, str] | None:
    want, got = template.strip("/").split("/"), path.strip("/").split("/")
    if len(want) != len(got):
        return None
    params = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith("{") and w.endswith("}"):
            if not g:
                return None
            params[w[1:-1]] = unquote(g)
        elif w != g:
            return None
    return params


def resolve(event: dict, routes: dict[str, dict[str, Route]]) -> tuple[str | None, dict]:
    """The route template an event targets and its path parameters."""
    path = _strip_api(str(event.get("path") or ""))
    resource = _strip_api(str(event.get("resource") or ""))
    if resource in routes:
        params = event.get("pathParameters") or _match(resource, path) or {}
        return resource, params
    # e.g. a `/{proxy+}` resource: route on the path instead.
    for template in routes:
        params = _match(template, path)
        if params is not None:
            return template, params
    return None, {}


def _dispatch(event: dict, routes: dict[str, dict[str, Route]]) -> dict:
    template, params = resolve(event, routes)
    if template is None:
        raise HttpError(404, "Not found")
    methods = routes[template]
    allow = ",".join([*methods, "OPTIONS"])
    method = str(event.get("httpMethod") or "").upper()
    if method == "OPTIONS":
        return json_response(204, None, {"Allow": allow, "Access-Control-Allow-Methods": allow})
    if method not in methods:
        raise HttpError(405, "Method not allowed", {"Allow": allow})
    return methods[method](Request(event, params))


def request_id(event: dict, context: Any) -> str:
    return (
        getattr(context, "aws_request_id", None)
        or (event.get("requestContext") or {}).get("requestId")
        or str(uuid.uuid4())
    )


def handler(func: Callable[[dict, Any], dict]) -> Callable[[dict, Any], dict]:
    """Wrap a proxy-integration handler: HttpError -> its status, anything else -> a
    generic 500 (details only in the log), CORS headers on every response."""

    @functools.wraps(func)
    def wrapper(event: dict, context: Any) -> dict:
        event = event if isinstance(event, dict) else {}
        try:
            response = func(event, context)
        except HttpError as err:
            response = error_response(err.status, err.message, err.headers)
        except Exception:
            rid = request_id(event, context)
            logger.exception(
                "unhandled error in %s %s (requestId=%s)",
                event.get("httpMethod"),
                event.get("path"),
                rid,
            )
            response = json_response(500, {"error": "Internal server error", "requestId": rid})
        response["headers"].update(cors_headers(lower_headers(event).get("origin")))
        return response

    return wrapper


def api(routes: dict[str, dict[str, Route]]) -> Callable[[dict, Any], dict]:
    """A Lambda entry point dispatching {template: {METHOD: route}} with `handler`."""

    def lambda_handler(event: dict, _context: Any) -> dict:
        return _dispatch(event, routes)

    return handler(lambda_handler)
