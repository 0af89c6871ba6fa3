"""Who may do what: every route of the lab's API (the route table msctl deploys) as
anonymous, the owner of what it names, another user, the admin, a forged session (with
forged identity headers) and an expired one, through API Gateway as the local data plane
emulates it (lab_gateway.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from lab_gateway import CONFIG, Who, World

from msctl.steps.apigw_routes import route_table

COLUMNS = ("anonymous", "owner", "other", "admin", "forged", "expired")


def guarded(owner: int, other: int, admin: int) -> tuple[int, ...]:
    """A route behind the authorizer: no valid session is API Gateway's 401."""
    return (401, owner, other, admin, 401, 401)


def everyone(status: int) -> tuple[int, ...]:
    return (status,) * len(COLUMNS)


@dataclass
class Row:
    route: tuple[str, str]  # (path, method) as in the route table
    request: Callable[[World, Who], tuple[str, str, Any]]  # (method, path, body) of one cell
    expect: tuple[int, ...]  # a status per column


ROWS = [
    Row(
        ("/api/auth/register", "POST"),
        lambda w, o: ("POST", "/api/auth/register", w.registration()),
        everyone(202),
    ),
    Row(
        ("/api/auth/login", "POST"),
        lambda w, o: ("POST", "/api/auth/login", {"email": o.email, "password": o.password}),
        everyone(200),
    ),
    Row(
        ("/api/auth/verify", "GET"),
        lambda w, o: ("GET", "/api/auth/verify", None),
        guarded(200, 200, 200),
    ),
    Row(
        ("/api/auth/logout", "POST"),
        lambda w, o: ("POST", "/api/auth/logout", None),
        guarded(200, 200, 200),
    ),
    Row(("/api/users", "GET"), lambda w, o: ("GET", "/api/users", None), guarded(200, 200, 200)),
    Row(
        ("/api/users/{id}", "GET"),
        lambda w, o: ("GET", f"/api/users/{o.user_id}", None),
        guarded(200, 403, 200),
    ),
    Row(
        ("/api/users/{id}", "PUT"),
        lambda w, o: ("PUT", f"/api/users/{o.user_id}", {"name": "Renamed"}),
        guarded(200, 403, 200),
    ),
    Row(
        ("/api/users/{id}", "DELETE"),
        lambda w, o: ("DELETE", f"/api/users/{o.user_id}", None),
        guarded(204, 403, 204),
    ),
    Row(
        ("/api/notifications", "GET"),
        lambda w, o: ("GET", "/api/notifications", None),
        guarded(200, 200, 200),
    ),
    Row(
        ("/api/notifications", "POST"),
        lambda w, o: ("POST", "/api/notifications", {"message": "hi"}),
        guarded(201, 201, 201),
    ),
    Row(
        ("/api/notifications", "DELETE"),
        lambda w, o: ("DELETE", "/api/notifications", None),
        guarded(200, 200, 200),  # each caller deletes only their own (the prefix is theirs)
    ),
    Row(("/api/products", "GET"), lambda w, o: ("GET", "/api/products", None), everyone(200)),
    Row(
        ("/api/products", "POST"),
        lambda w, o: ("POST", "/api/products", {"name": "New", "price": "1.00", "stock": 1}),
        guarded(403, 403, 201),
    ),
    # No such operation in the service: the authorizer still comes first.
    Row(
        ("/api/products", "PUT"), lambda w, o: ("PUT", "/api/products", {}), guarded(405, 405, 405)
    ),
    Row(
        ("/api/products", "DELETE"),
        lambda w, o: ("DELETE", "/api/products", None),
        guarded(405, 405, 405),
    ),
    Row(
        ("/api/products/{proxy+}", "GET"),
        lambda w, o: ("GET", f"/api/products/{w.product()}", None),
        everyone(200),
    ),
    Row(
        ("/api/products/{proxy+}", "POST"),
        lambda w, o: ("POST", f"/api/products/{w.product()}", {}),
        guarded(405, 405, 405),
    ),
    Row(
        ("/api/products/{proxy+}", "PUT"),
        lambda w, o: ("PUT", f"/api/products/{w.product()}", {"stock": 7}),
        guarded(403, 403, 200),
    ),
    Row(
        ("/api/products/{proxy+}", "DELETE"),
        lambda w, o: ("DELETE", f"/api/products/{w.product()}", None),
        guarded(403, 403, 204),
    ),
    Row(("/api/orders", "ANY"), lambda w, o: ("GET", "/api/orders", None), guarded(200, 200, 200)),
    Row(
        ("/api/orders", "ANY"),
        lambda w, o: ("POST", "/api/orders", {"productId": w.product(), "quantity": 1}),
        guarded(201, 201, 201),
    ),
    # Someone else's order is no different from none, for the admin too.
    Row(
        ("/api/orders/{proxy+}", "ANY"),
        lambda w, o: ("GET", f"/api/orders/{w.order(o)}", None),
        guarded(200, 404, 404),
    ),
    Row(
        ("/api/orders/{proxy+}", "ANY"),
        lambda w, o: ("DELETE", f"/api/orders/{w.order(o)}", None),
        guarded(204, 404, 404),
    ),
]


def preflight_rows() -> list[Row]:
    """OPTIONS on every resource: the static CORS answer, whoever asks."""
    rows = []
    for route in route_table(CONFIG):
        if route.method == "OPTIONS":
            path = route.path.replace("{id}", "1").replace("{proxy+}", "1")
            rows.append(
                Row(
                    (route.path, "OPTIONS"),
                    lambda w, o, p=path: ("OPTIONS", p, None),
                    everyone(200),
                )
            )
    return rows


@pytest.fixture
def world(aws, handlers, products_app, orders_app) -> World:
    return World(handlers, products_app, orders_app)


# ---------------------------------------------------------------- the tests


def test_the_matrix_covers_every_route_of_the_route_table():
    deployed = {(r.path, r.method) for r in route_table(CONFIG)}
    assert {row.route for row in ROWS + preflight_rows()} == deployed


def test_every_route_answers_each_caller_as_the_matrix_says(world):
    wrong = []
    for row in ROWS + preflight_rows():
        for column, expected in zip(COLUMNS, row.expect, strict=True):
            owner = world.new_user()  # a fresh owner and fresh things per cell
            method, path, body = row.request(world, owner)
            answer = world.call(method, path, world.headers(column, owner), body)
            if answer.status != expected:
                text = answer.body[:120].decode(errors="replace")
                wrong.append(
                    f"{method} {path} as {column}: {answer.status}, expected {expected}: {text}"
                )
    assert not wrong, "\n".join(wrong)


def test_a_plain_user_lists_no_other_users_email_and_the_admin_lists_all(world):
    owner = world.new_user()
    mine = world.call("GET", "/api/users", world.headers("owner", owner))
    assert [u["email"] for u in json.loads(mine.body)["users"]] == [owner.email]
    everyone_ = world.call("GET", "/api/users", world.headers("admin", owner))
    emails = {u["email"] for u in json.loads(everyone_.body)["users"]}
    assert {owner.email, world.other.email, world.admin.email} <= emails


def test_forged_identity_headers_never_reach_the_services(world):
    owner = world.new_user()
    forged = {"X-Authorized-User-Id": owner.user_id, "X-Authorized-Role": "admin"}
    body = {"name": "Forged", "price": "1.00", "stock": 1}
    # With a plain user's real session the forged role is replaced by the authorizer's.
    signed_in = {**world.headers("owner", owner), **forged}
    assert world.call("POST", "/api/products", signed_in, body).status == 403
    assert world.call("POST", "/api/products", forged, body).status == 401
    order = world.order(owner)
    assert world.call("GET", f"/api/orders/{order}", forged).status == 401
    names = [p["name"] for p in json.loads(world.call("GET", "/api/products", {}).body)]
    assert "Forged" not in names
