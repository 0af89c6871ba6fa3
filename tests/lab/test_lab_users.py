"""The users function: list with pagination, read, update, delete; sessions required; a
plain user reaches only their own account, an admin every account."""

from __future__ import annotations

import base64
import json

import boto3
import pytest
from lab_helpers import SESSIONS_TABLE, USERS_TABLE, users_table


def get_user(api, user_id, **kwargs):
    return api.call(
        "users",
        "GET",
        f"/users/{user_id}",
        resource="/users/{id}",
        path_params={"id": user_id},
        **kwargs,
    )


def put_user(api, user_id, body, **kwargs):
    return api.call(
        "users",
        "PUT",
        f"/users/{user_id}",
        resource="/users/{id}",
        path_params={"id": user_id},
        body=body,
        **kwargs,
    )


def delete_user(api, user_id, **kwargs):
    return api.call(
        "users",
        "DELETE",
        f"/users/{user_id}",
        resource="/users/{id}",
        path_params={"id": user_id},
        **kwargs,
    )


def list_users(api, token, **query):
    return api.call("users", "GET", "/users", resource="/users", token=token, query=query or None)


def b64(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# ----------------------------------------------------------------------- list


def test_a_plain_user_lists_only_themselves(api):
    ada, token = api.signup("ada@example.com", "Ada")
    api.register("bob@example.com", "Bob")
    api.admin()
    response = list_users(api, token)
    assert response.status == 200
    assert response.body["nextToken"] is None
    [me] = response.body["users"]
    assert me["userId"] == ada and me["role"] == "user"
    assert "bob@example.com" not in json.dumps(response.body)
    assert "admin@example.com" not in json.dumps(response.body)


def test_an_admin_lists_every_user(api):
    ada = api.register("ada@example.com", "Ada")["userId"]
    bob = api.register("bob@example.com", "Bob")["userId"]
    admin, token = api.admin()
    response = list_users(api, token)
    assert response.status == 200
    assert response.body["nextToken"] is None
    users = {u["userId"]: u for u in response.body["users"]}
    assert set(users) == {ada, bob, admin}  # the email# uniqueness items are not users
    assert set(users[bob]) == {"userId", "email", "name", "role", "createdAt"}
    assert users[admin]["role"] == "admin"


def test_list_users_pages(api):
    _, token = api.admin("user0@example.com")
    for i in range(1, 5):
        api.register(f"user{i}@example.com")
    seen, pages, next_token = [], 0, None
    while True:
        query = {"limit": "2", **({"nextToken": next_token} if next_token else {})}
        response = list_users(api, token, **query)
        assert response.status == 200
        assert len(response.body["users"]) <= 2
        seen += [u["email"] for u in response.body["users"]]
        pages += 1
        next_token = response.body["nextToken"]
        if next_token is None:
            break
    assert pages == 3
    assert sorted(seen) == [f"user{i}@example.com" for i in range(5)]


def test_limit_fills_pages_despite_email_items(api):
    _, token = api.admin("user0@example.com")
    for i in range(1, 4):
        api.register(f"user{i}@example.com")
    # 8 items in the table, 4 of them users: one page of 4 means the handler
    # kept scanning past the filtered-out email items.
    response = list_users(api, token, limit="4")
    assert len(response.body["users"]) == 4


@pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "2.5", "", "1000"])
def test_invalid_limit(api, limit):
    _, token = api.signup("ada@example.com")
    response = list_users(api, token, limit=limit)
    assert response.status == 400
    assert response.body == {"error": "query parameter 'limit' must be an integer from 1 to 100"}


@pytest.mark.parametrize("limit", ["1", "100"])
def test_limit_bounds(api, limit):
    _, token = api.signup("ada@example.com")
    assert list_users(api, token, limit=limit).status == 200


@pytest.mark.parametrize(
    "next_token",
    ["!!!not-base64", b64([1, 2]), b64({"other": "x"}), b64({"userId": 5}), "bm90IGpzb24", "é"],
)
def test_invalid_next_token(api, next_token):
    _, token = api.signup("ada@example.com")
    response = list_users(api, token, nextToken=next_token)
    assert (response.status, response.body) == (
        400,
        {"error": "query parameter 'nextToken' is invalid"},
    )


def test_list_needs_session(api):
    assert list_users(api, None).status == 401


def test_list_with_expired_session(api, put_session):
    put_session("expired-token-0123456789abcdef", "someone", expires_in=-10)
    assert list_users(api, "expired-token-0123456789abcdef").status == 401


def test_identity_from_authorizer_context(api):
    user_id = api.register("ada@example.com")["userId"]
    response = api.call(
        "users",
        "GET",
        "/users",
        resource="/users",
        authorizer={"userId": user_id, "principalId": user_id},
    )
    assert response.status == 200


# ------------------------------------------------------------------------ get


def test_get_user(api):
    user_id, token = api.signup("ada@example.com", "Ada")
    response = get_user(api, user_id, token=token)
    assert response.status == 200
    assert (response.body["userId"], response.body["email"]) == (user_id, "ada@example.com")


def test_a_plain_user_cant_read_another_user(api):
    _, token = api.signup("ada@example.com", "Ada")
    bob = api.register("bob@example.com", "Bob")["userId"]
    response = get_user(api, bob, token=token)
    assert (response.status, response.body) == (
        403,
        {"error": "You can only read your own profile"},
    )


def test_an_admin_reads_any_user(api):
    bob = api.register("bob@example.com", "Bob")["userId"]
    _, token = api.admin()
    response = get_user(api, bob, token=token)
    assert response.status == 200
    assert (response.body["name"], response.body["email"]) == ("Bob", "bob@example.com")


def test_get_user_via_path_only(api):
    user_id, token = api.signup("ada@example.com")
    response = api.call("users", "GET", f"/api/users/{user_id}", token=token)
    assert (response.status, response.body["userId"]) == (200, user_id)


@pytest.mark.parametrize("user_id", ["no-such-user", "email#ada@example.com", "x" * 200])
def test_get_missing_user(api, user_id):
    _, token = api.admin()
    response = get_user(api, user_id, token=token)
    assert (response.status, response.body) == (404, {"error": "User not found"})


def test_get_user_needs_session(api):
    user_id = api.register("ada@example.com")["userId"]
    assert get_user(api, user_id).status == 401
    assert get_user(api, user_id, token="unknown-token-0123456789abcdef").status == 401


# ------------------------------------------------------------------------ put


def test_update_own_name(api):
    user_id, token = api.signup("ada@example.com", "Ada")
    response = put_user(api, user_id, {"name": "  Countess Lovelace "}, token=token)
    assert response.status == 200
    assert response.body["name"] == "Countess Lovelace"
    assert response.body["email"] == "ada@example.com"
    assert "updatedAt" in response.body
    assert get_user(api, user_id, token=token).body["name"] == "Countess Lovelace"
    stored = boto3.resource("dynamodb").Table(USERS_TABLE).get_item(Key={"userId": user_id})["Item"]
    assert stored["passwordHash"].startswith("pbkdf2_sha256$")  # untouched


def test_update_another_user_is_403(api):
    _, token = api.signup("ada@example.com")
    bob = api.register("bob@example.com", "Bob")["userId"]
    response = put_user(api, bob, {"name": "Mallory"}, token=token)
    assert (response.status, response.body) == (
        403,
        {"error": "You can only update your own profile"},
    )
    assert users_table().get_item(Key={"userId": bob})["Item"]["name"] == "Bob"


def test_an_admin_renames_any_user_but_sets_no_role(api):
    bob = api.register("bob@example.com", "Bob")["userId"]
    _, token = api.admin()
    assert put_user(api, bob, {"name": "Robert"}, token=token).body["name"] == "Robert"
    response = put_user(api, bob, {"role": "admin"}, token=token)
    assert (response.status, response.body) == (400, {"error": "field 'role' cannot be updated"})
    assert users_table().get_item(Key={"userId": bob})["Item"]["role"] == "user"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Ada", "email": "evil@example.com"}, "field 'email' cannot be updated"),
        ({"role": "admin"}, "field 'role' cannot be updated"),
        ({"userId": "other"}, "field 'userId' cannot be updated"),
        ({}, "field 'name' is required"),
        ({"name": 7}, "field 'name' must be a string"),
        ({"name": ""}, "field 'name' must not be empty"),
        ({"name": "n" * 101}, "field 'name' must be at most 100 characters"),
    ],
)
def test_update_rejects_bad_bodies(api, body, message):
    user_id, token = api.signup("ada@example.com")
    response = put_user(api, user_id, body, token=token)
    assert (response.status, response.body) == (400, {"error": message})


def test_update_with_malformed_json(api):
    user_id, token = api.signup("ada@example.com")
    response = api.call(
        "users",
        "PUT",
        f"/users/{user_id}",
        resource="/users/{id}",
        path_params={"id": user_id},
        raw_body="{name: Ada}",
        token=token,
    )
    assert (response.status, response.body) == (400, {"error": "request body is not valid JSON"})


def test_update_needs_session(api):
    user_id = api.register("ada@example.com")["userId"]
    assert put_user(api, user_id, {"name": "X"}).status == 401


def test_update_deleted_user_is_404(api):
    user_id = api.register("ada@example.com")["userId"]
    _, token = api.admin()
    boto3.resource("dynamodb").Table(USERS_TABLE).delete_item(Key={"userId": user_id})
    assert put_user(api, user_id, {"name": "Ghost"}, token=token).status == 404
    assert get_user(api, user_id, token=token).status == 404


def test_a_deleted_users_session_is_dead(api):
    user_id, token = api.signup("ada@example.com")
    boto3.resource("dynamodb").Table(USERS_TABLE).delete_item(Key={"userId": user_id})
    assert put_user(api, user_id, {"name": "Ghost"}, token=token).status == 401


@pytest.mark.parametrize("char", ["\x00", "\n", "\x9b"], ids=repr)
def test_control_characters_are_a_400_naming_the_field(api, char):
    user_id, token = api.signup("ada@example.com", "Ada")
    response = put_user(api, user_id, {"name": f"Ada{char}"}, token=token)
    assert (response.status, response.body) == (
        400,
        {"error": "field 'name' must not contain control characters"},
    )
    response = get_user(api, f"a{char}b", token=token)
    assert (response.status, response.body) == (
        400,
        {"error": "path parameter 'id' must not contain control characters"},
    )
    assert users_table().get_item(Key={"userId": user_id})["Item"]["name"] == "Ada"


# --------------------------------------------------------------------- delete


def sessions_of(user_id: str) -> list[dict]:
    items = boto3.resource("dynamodb").Table(SESSIONS_TABLE).scan()["Items"]
    return [s for s in items if s["userId"] == user_id]


def test_delete_own_account_removes_the_user_its_email_and_sessions(api):
    user_id, token = api.signup("ada@example.com")
    api.login("ada@example.com")
    bob, bobs_token = api.signup("bob@example.com")
    assert len(sessions_of(user_id)) == 2
    response = delete_user(api, user_id, token=token)
    assert (response.status, response.body) == (204, None)
    table = users_table()
    assert "Item" not in table.get_item(Key={"userId": user_id})
    assert "Item" not in table.get_item(Key={"userId": "email#ada@example.com"})
    assert sessions_of(user_id) == []
    assert len(sessions_of(bob)) == 1 and get_user(api, bob, token=bobs_token).status == 200
    login = {"email": "ada@example.com", "password": "correct-horse-battery"}
    assert api.call("auth", "POST", "/auth/login", body=login).status == 401
    assert api.register("ada@example.com")["userId"] != user_id  # the email is free again


def test_a_plain_user_cant_delete_another_user(api):
    _, token = api.signup("ada@example.com")
    bob = api.register("bob@example.com")["userId"]
    response = delete_user(api, bob, token=token)
    assert (response.status, response.body) == (
        403,
        {"error": "You can only delete your own profile"},
    )
    assert "Item" in users_table().get_item(Key={"userId": bob})


def test_an_admin_deletes_a_user_but_no_admin_account(api):
    bob, _ = api.signup("bob@example.com")
    admin, token = api.admin()
    other_admin, _ = api.admin("root@example.com")
    assert delete_user(api, bob, token=token).status == 204
    assert sessions_of(bob) == []
    for target in (admin, other_admin):
        response = delete_user(api, target, token=token)
        assert (response.status, response.body) == (
            403,
            {"error": "An admin account can't be deleted through the API"},
        )
    assert delete_user(api, "no-such-user", token=token).status == 404


def test_delete_needs_session(api):
    user_id = api.register("ada@example.com")["userId"]
    assert delete_user(api, user_id).status == 401
    assert delete_user(api, user_id, token="unknown-token-0123456789abcdef").status == 401
    assert "Item" in users_table().get_item(Key={"userId": user_id})


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/users/abc"), ("POST", "/users"), ("PUT", "/users")]
)
def test_wrong_method(api, method, path):
    assert api.call("users", method, path).status == 405


def test_unknown_route(api):
    assert api.call("users", "GET", "/users/a/b").status == 404


def test_injected_error_is_generic_500(api, labcommon, monkeypatch):
    _, token = api.signup("ada@example.com")

    def broken():
        raise ValueError("Table test-users: internal stack detail")

    monkeypatch.setattr(labcommon, "users_table", broken)
    response = list_users(api, token)
    assert response.status == 500
    assert response.body == {"error": "Internal server error", "requestId": "test-request-id"}
