"""Auth service: register, login, verify and logout under /auth."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
import uuid

import labcommon
from botocore.exceptions import ClientError
from labcommon import HttpError, Request, json_response, public_user, string_field

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EMAIL_MAX = 254
NAME_MAX = 100
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
HASH_ALGORITHM = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 210_000
INVALID_LOGIN = "Invalid email or password"
REGISTERED = "Registration received: sign in with your email and password"
EMAIL_KEY_PREFIX = "email#"

# ------------------------------------------------------------------ passwords


def _iterations() -> int:
    return int(os.environ.get("PASSWORD_HASH_ITERATIONS", DEFAULT_ITERATIONS))


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def hash_password(password: str, iterations: int | None = None) -> str:
    """`pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>`, with a random salt."""
    iterations = iterations or _iterations()
    salt = secrets.token_bytes(16)
    digest = _pbkdf2(password, salt, iterations)
    encode = base64.b64encode
    return f"{HASH_ALGORITHM}${iterations}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Check against the parameters stored with the hash, so iterations can be raised later."""
    try:
        algorithm, iterations, salt, digest = stored.split("$")
        iterations_n = int(iterations)
        salt_bytes, expected = base64.b64decode(salt), base64.b64decode(digest)
    except (ValueError, binascii.Error):
        return False
    if algorithm != HASH_ALGORITHM or iterations_n < 1:
        return False
    return hmac.compare_digest(_pbkdf2(password, salt_bytes, iterations_n), expected)


_dummy_hashes: dict[int, str] = {}


def _burn_verify(password: str) -> None:
    # Spend the same time on unknown emails as on wrong passwords, so response
    # time doesn't reveal which emails are registered.
    iterations = _iterations()
    if iterations not in _dummy_hashes:
        _dummy_hashes[iterations] = hash_password(secrets.token_urlsafe(16), iterations)
    verify_password(password, _dummy_hashes[iterations])


# ----------------------------------------------------------------- validation


def _email(body: dict) -> str:
    email = string_field(body, "email").lower()
    if len(email) > EMAIL_MAX or not EMAIL_RE.match(email):
        raise HttpError(400, "field 'email' must be a valid email address")
    return email


def _password(body: dict, *, check_strength: bool) -> str:
    password = body.get("password")
    if password is None:
        raise HttpError(400, "field 'password' is required")
    if not isinstance(password, str):
        raise HttpError(400, "field 'password' must be a string")
    labcommon.check_text("field 'password'", password)
    if len(password) > PASSWORD_MAX:
        raise HttpError(400, f"field 'password' must be at most {PASSWORD_MAX} characters")
    if check_strength and len(password) < PASSWORD_MIN:
        raise HttpError(400, f"field 'password' must be at least {PASSWORD_MIN} characters")
    return password


# --------------------------------------------------------------------- routes


def _create_user(user: dict, password_hash: str) -> bool:
    """Write the user and its email claim in one transaction, so an email is taken once.
    False when the email is already taken (nothing is written then)."""
    table = labcommon.users_table()

    def put(item: dict) -> dict:
        # The resource's client marshals plain Python values itself.
        return {
            "Put": {
                "TableName": table.name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(userId)",
            }
        }

    email_claim = {"userId": EMAIL_KEY_PREFIX + user["email"], "ownerId": user["userId"]}
    try:
        table.meta.client.transact_write_items(
            TransactItems=[put({**user, "passwordHash": password_hash}), put(email_claim)]
        )
    except ClientError as err:
        reasons = err.response.get("CancellationReasons") or []
        codes = [r.get("Code") for r in reasons]
        if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
            return False
        raise
    return True


def register(req: Request) -> dict:
    """The same answer whether the email was new or taken (a taken one is left unchanged), so
    registering can't be used to learn which emails have accounts; the password is hashed
    either way, so the time taken doesn't tell either."""
    body = req.json()
    email = _email(body)
    name = string_field(body, "name", max_len=NAME_MAX)
    password = _password(body, check_strength=True)
    user = {
        "userId": str(uuid.uuid4()),
        "email": email,
        "name": name,
        "role": labcommon.DEFAULT_ROLE,
        "createdAt": labcommon.now_iso(),
    }
    if not _create_user(user, hash_password(password)):
        labcommon.logger.info("registration for an email that is already taken: ignored")
    return json_response(202, {"email": email, "message": REGISTERED})


def _find_user_by_email(email: str) -> dict | None:
    table = labcommon.users_table()
    claim = table.get_item(Key={"userId": EMAIL_KEY_PREFIX + email}).get("Item")
    if not claim:
        return None
    return table.get_item(Key={"userId": claim["ownerId"]}).get("Item")


def _session_hours() -> float:
    return float(os.environ.get("SESSION_TTL_HOURS", "24"))


def login(req: Request) -> dict:
    body = req.json()
    email = _email(body)
    password = _password(body, check_strength=False)
    user = _find_user_by_email(email)
    if user is None:
        _burn_verify(password)
        raise HttpError(401, INVALID_LOGIN)
    if not verify_password(password, user.get("passwordHash", "")):
        raise HttpError(401, INVALID_LOGIN)

    token = secrets.token_urlsafe(32)
    expires_at = int(time.time() + _session_hours() * 3600)
    labcommon.sessions_table().put_item(
        Item={
            "sessionId": token,
            "userId": user["userId"],
            "expiresAt": expires_at,
            "createdAt": labcommon.now_iso(),
        }
    )
    body = {"token": token, "expiresAt": expires_at, "user": public_user(user)}
    return json_response(200, body)


def _require_session(req: Request) -> tuple[str, dict]:
    token = labcommon.bearer_token(req.headers)
    session = labcommon.get_session(token)
    if session is None:
        raise HttpError(401, "A valid session is required")
    return token, session


def verify(req: Request) -> dict:
    _, session = _require_session(req)
    body = {"valid": True, "userId": session["userId"], "expiresAt": session["expiresAt"]}
    return json_response(200, body)


def logout(req: Request) -> dict:
    token, _ = _require_session(req)
    labcommon.sessions_table().delete_item(Key={"sessionId": token})
    return json_response(200, {"message": "Logged out"})


ROUTES = {
    "/auth/register": {"POST": register},
    "/auth/login": {"POST": login},
    "/auth/verify": {"GET": verify},
    "/auth/logout": {"POST": logout},
}

lambda_handler = labcommon.api(ROUTES)
