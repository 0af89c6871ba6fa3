"""The auth function: register, login, verify, logout, and password hashing."""

from __future__ import annotations

import time

import boto3
import pytest
from lab_helpers import OTHER_PASSWORD, PASSWORD, SESSIONS_TABLE, USERS_TABLE

GOOD = {"email": "ada@example.com", "name": "Ada Lovelace", "password": PASSWORD}


def users_items() -> dict[str, dict]:
    items = boto3.resource("dynamodb").Table(USERS_TABLE).scan()["Items"]
    return {item["userId"]: item for item in items}


def session_item(token: str) -> dict | None:
    table = boto3.resource("dynamodb").Table(SESSIONS_TABLE)
    return table.get_item(Key={"sessionId": token}).get("Item")


# ------------------------------------------------------------------- register


REGISTERED = {
    "email": "ada@example.com",
    "message": "Registration received: sign in with your email and password",
}


def test_register(api):
    response = api.call("auth", "POST", "/auth/register", body=GOOD)
    assert (response.status, response.body) == (202, REGISTERED)
    [user] = [u for k, u in users_items().items() if not k.startswith("email#")]
    assert (user["email"], user["name"], user["role"]) == (
        "ada@example.com",
        "Ada Lovelace",
        "user",
    )


def test_register_normalizes_email_and_name(api):
    body = {**GOOD, "email": "  Ada@Example.COM ", "name": "  Ada  "}
    response = api.call("auth", "POST", "/auth/register", body=body)
    assert response.body["email"] == "ada@example.com"
    assert api.register("ada@example.com")["name"] == "Ada"  # the first one stays


def test_register_stores_salted_hash_and_email_claim(api):
    user_id = api.register(GOOD["email"])["userId"]
    items = users_items()
    stored = items[user_id]["passwordHash"]
    algorithm, iterations, salt, digest = stored.split("$")
    assert (algorithm, iterations) == ("pbkdf2_sha256", "1000")
    assert PASSWORD not in stored
    assert items["email#ada@example.com"] == {"userId": "email#ada@example.com", "ownerId": user_id}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"email": None}, "field 'email' is required"),
        ({"email": 42}, "field 'email' must be a string"),
        ({"email": "not-an-email"}, "field 'email' must be a valid email address"),
        ({"email": "a b@example.com"}, "field 'email' must be a valid email address"),
        ({"email": "x" * 250 + "@example.com"}, "field 'email' must be a valid email address"),
        ({"name": None}, "field 'name' is required"),
        ({"name": "   "}, "field 'name' must not be empty"),
        ({"name": ["Ada"]}, "field 'name' must be a string"),
        ({"name": "n" * 101}, "field 'name' must be at most 100 characters"),
        ({"password": None}, "field 'password' is required"),
        ({"password": 12345678}, "field 'password' must be a string"),
        ({"password": "short"}, "field 'password' must be at least 8 characters"),
        ({"password": "p" * 1025}, "field 'password' must be at most 1024 characters"),
    ],
)
def test_register_rejects_bad_fields(api, change, message):
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = api.call("auth", "POST", "/auth/register", body=body)
    assert (response.status, response.body) == (400, {"error": message})
    assert users_items() == {}


def test_register_name_of_100_chars_is_fine(api):
    response = api.call("auth", "POST", "/auth/register", body={**GOOD, "name": "n" * 100})
    assert response.status == 202


def test_register_existing_email_answers_as_a_new_one_and_changes_nothing(api):
    new = api.call("auth", "POST", "/auth/register", body=GOOD)
    before = users_items()
    body = {**GOOD, "email": "ADA@example.com", "name": "Mallory", "password": OTHER_PASSWORD}
    taken = api.call("auth", "POST", "/auth/register", body=body)
    assert (taken.status, taken.body) == (new.status, new.body) == (202, REGISTERED)
    assert users_items() == before  # the account, its name and its password unchanged
    assert api.login(GOOD["email"], PASSWORD)
    assert api.call("auth", "POST", "/auth/login", body=body).status == 401


def test_register_hashes_the_password_for_a_taken_email_too(api, handlers, monkeypatch):
    # The same work either way, so the time taken doesn't tell whether the email exists.
    api.register(GOOD["email"])
    auth = handlers["auth"]
    hashed = []
    real = auth.hash_password
    monkeypatch.setattr(auth, "hash_password", lambda p, i=None: hashed.append(p) or real(p, i))
    for email in (GOOD["email"], "new@example.com"):
        response = api.call("auth", "POST", "/auth/register", body={**GOOD, "email": email})
        assert response.status == 202
    assert hashed == [PASSWORD, PASSWORD]


@pytest.mark.parametrize("char", ["\x00", "\x1f", "\x7f", "\n", "\u0085"], ids=repr)
@pytest.mark.parametrize("field", ["email", "name", "password"])
def test_control_characters_are_a_400_naming_the_field(api, field, char):
    value = {"email": "ada@exa{}mple.com", "name": "Ada{}", "password": "long{}enough"}[field]
    body = {**GOOD, field: value.format(char)}
    for path in ("/auth/register", "/auth/login"):
        if path == "/auth/login" and field == "name":
            continue
        response = api.call("auth", "POST", path, body=body)
        assert (response.status, response.body) == (
            400,
            {"error": f"field '{field}' must not contain control characters"},
        )
    assert users_items() == {}


def test_register_non_email_conflict_is_not_reported_as_409(api, labcommon, monkeypatch):
    # A transaction cancelled for another reason is an internal error, not a duplicate.
    from botocore.exceptions import ClientError

    class Client:
        def transact_write_items(self, **kwargs):
            error = {"Code": "TransactionCanceledException", "Message": "boom"}
            reasons = [{"Code": "ThrottlingError"}, {"Code": "None"}]
            raise ClientError({"Error": error, "CancellationReasons": reasons}, "Tx")

    class Table:
        name = USERS_TABLE
        meta = type("Meta", (), {"client": Client()})()

    monkeypatch.setattr(labcommon, "users_table", Table)
    response = api.call("auth", "POST", "/auth/register", body=GOOD)
    assert response.status == 500
    assert "boom" not in str(response.body)


# ---------------------------------------------------------------------- login


def test_login(api, monkeypatch):
    user_id = api.register(GOOD["email"])["userId"]
    before = int(time.time())
    response = api.call(
        "auth", "POST", "/auth/login", body={"email": "Ada@Example.com", "password": PASSWORD}
    )
    after = int(time.time())
    assert response.status == 200
    body = response.body
    assert body["user"] == {
        "userId": user_id,
        "name": "Test User",
        "email": "ada@example.com",
        "role": "user",
        "createdAt": body["user"]["createdAt"],
    }
    assert len(body["token"]) >= 43
    assert before + 24 * 3600 <= body["expiresAt"] <= after + 24 * 3600
    item = session_item(body["token"])
    assert item["userId"] == user_id
    assert item["expiresAt"] == body["expiresAt"]
    assert "createdAt" in item


def test_login_honours_session_ttl(api, monkeypatch):
    monkeypatch.setenv("SESSION_TTL_HOURS", "2")
    api.register(GOOD["email"])
    before = int(time.time())
    response = api.call("auth", "POST", "/auth/login", body=GOOD)
    assert before + 2 * 3600 <= response.body["expiresAt"] <= int(time.time()) + 2 * 3600


def test_each_login_is_a_new_session(api):
    api.register(GOOD["email"])
    assert api.login(GOOD["email"]) != api.login(GOOD["email"])


@pytest.mark.parametrize(
    "body",
    [
        {"email": "ada@example.com", "password": OTHER_PASSWORD},
        {"email": "nobody@example.com", "password": PASSWORD},
        {"email": "ada@example.com", "password": "short"},
    ],
)
def test_login_failures_look_the_same(api, body):
    api.register(GOOD["email"])
    response = api.call("auth", "POST", "/auth/login", body=body)
    assert (response.status, response.body) == (401, {"error": "Invalid email or password"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"password": PASSWORD}, "field 'email' is required"),
        ({"email": "ada@example.com"}, "field 'password' is required"),
        ({"email": ["a"], "password": PASSWORD}, "field 'email' must be a string"),
        ({"email": "ada@example.com", "password": 1}, "field 'password' must be a string"),
    ],
)
def test_login_rejects_bad_fields(api, body, message):
    response = api.call("auth", "POST", "/auth/login", body=body)
    assert (response.status, response.body) == (400, {"error": message})


def test_login_with_malformed_json(api):
    response = api.call("auth", "POST", "/auth/login", raw_body='{"email": ')
    assert (response.status, response.body) == (400, {"error": "request body is not valid JSON"})


# --------------------------------------------------------------------- verify


def test_verify(api):
    user_id, token = api.signup(GOOD["email"])
    response = api.call("auth", "GET", "/auth/verify", token=token)
    assert response.status == 200
    assert response.body["valid"] is True
    assert response.body["userId"] == user_id


def test_verify_lowercase_header(api):
    _, token = api.signup(GOOD["email"])
    headers = {"authorization": f"bearer {token}"}
    assert api.call("auth", "GET", "/auth/verify", headers=headers).status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer " + "x" * 43},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": ""},
    ],
)
def test_verify_without_valid_session(api, headers):
    response = api.call("auth", "GET", "/auth/verify", headers=headers)
    assert (response.status, response.body) == (401, {"error": "A valid session is required"})


def test_verify_expired_session(api, put_session):
    put_session("expired-token-0123456789abcdef", "some-user", expires_in=-60)
    response = api.call("auth", "GET", "/auth/verify", token="expired-token-0123456789abcdef")
    assert response.status == 401


def test_verify_session_expiring_now_is_expired(api, put_session):
    put_session("edge-token-0123456789abcdef", "some-user", expires_in=0)
    assert (
        api.call("auth", "GET", "/auth/verify", token="edge-token-0123456789abcdef").status == 401
    )


# --------------------------------------------------------------------- logout


def test_logout(api):
    _, token = api.signup(GOOD["email"])
    response = api.call("auth", "POST", "/auth/logout", token=token)
    assert response.status == 200
    assert session_item(token) is None
    assert api.call("auth", "GET", "/auth/verify", token=token).status == 401
    assert api.call("auth", "POST", "/auth/logout", token=token).status == 401


def test_logout_only_ends_that_session(api):
    _, first = api.signup(GOOD["email"])
    second = api.login(GOOD["email"])
    api.call("auth", "POST", "/auth/logout", token=first)
    assert api.call("auth", "GET", "/auth/verify", token=second).status == 200


def test_logout_without_session(api):
    assert api.call("auth", "POST", "/auth/logout").status == 401


def test_logout_expired_session(api, put_session):
    put_session("expired-token-0123456789abcdef", "some-user", expires_in=-1)
    assert (
        api.call("auth", "POST", "/auth/logout", token="expired-token-0123456789abcdef").status
        == 401
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/register"),
        ("PUT", "/auth/login"),
        ("POST", "/auth/verify"),
        ("GET", "/auth/logout"),
    ],
)
def test_wrong_method(api, method, path):
    assert api.call("auth", method, path).status == 405


# ------------------------------------------------------------------ passwords


def test_hash_format_and_random_salt(handlers):
    auth = handlers["auth"]
    first, second = auth.hash_password(PASSWORD, 1000), auth.hash_password(PASSWORD, 1000)
    assert first != second
    assert first.startswith("pbkdf2_sha256$1000$")
    assert auth.verify_password(PASSWORD, first)
    assert not auth.verify_password(OTHER_PASSWORD, first)


def test_hash_uses_configured_iterations(handlers, monkeypatch):
    monkeypatch.setenv("PASSWORD_HASH_ITERATIONS", "1234")
    assert handlers["auth"].hash_password(PASSWORD).startswith("pbkdf2_sha256$1234$")


def test_default_iterations(handlers, monkeypatch):
    monkeypatch.delenv("PASSWORD_HASH_ITERATIONS", raising=False)
    assert handlers["auth"]._iterations() == 210_000


def test_hash_with_other_stored_iterations_still_verifies(api, handlers):
    # A user whose hash was made with other parameters logs in with them.
    user_id = api.register(GOOD["email"])["userId"]
    old_hash = handlers["auth"].hash_password(PASSWORD, 1500)
    boto3.resource("dynamodb").Table(USERS_TABLE).update_item(
        Key={"userId": user_id},
        UpdateExpression="SET passwordHash = :h",
        ExpressionAttributeValues={":h": old_hash},
    )
    assert handlers["auth"].verify_password(PASSWORD, old_hash)
    assert api.call("auth", "POST", "/auth/login", body=GOOD).status == 200


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "plain",
        "sha256$1000$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$many$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$0$c2FsdA==$aGFzaA==",
        "pbkdf2_sha256$1000$!!$aGFzaA==",
    ],
)
def test_malformed_stored_hash_never_verifies(handlers, stored):
    assert handlers["auth"].verify_password(PASSWORD, stored) is False
