"""Only API Gateway may call the services (finding 1 of issue #13): a request without the
lab's origin secret in X-Lab-Origin is refused whatever identity headers it carries, the
ALB's health check excepted, and a service given no hash of the secret refuses everything
but /health unless ORIGIN_CHECK=off says so explicitly."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient
from origin_secret import ORIGIN_HEADER, ORIGIN_SECRET, ORIGIN_SHA256

FORBIDDEN = {"error": "forbidden"}
VICTIM = {"X-Authorized-User-Id": "victim"}
ADMIN = {"X-Authorized-User-Id": "someone", "X-Authorized-Role": "admin"}


def product(products: Any, stock: int = 5) -> int:
    body = {"name": "Widget", "price": "2.50", "stock": stock}
    return products.post("/products", json=body, headers=ADMIN).get_json()["id"]


@pytest.mark.parametrize(
    "origin",
    [None, "", "wrong", ORIGIN_SHA256, ORIGIN_SECRET.upper(), ORIGIN_SECRET + " "],
    ids=["none", "empty", "wrong", "the hash", "upper case", "trailing space"],
)
def test_forged_identity_straight_to_a_service_is_refused(
    products_app: Any, orders_app: Any, products: Any, orders: Any, origin: str | None
) -> None:
    item = product(products)
    placed = orders.post("/orders", json={"productId": item, "quantity": 2}, headers=VICTIM)
    assert placed.status_code == 201
    extra = {} if origin is None else {ORIGIN_HEADER: origin}
    straight = {"products": FlaskClient(products_app), "orders": FlaskClient(orders_app)}
    attempts = [
        ("orders", "GET", "/orders", None),
        ("orders", "GET", f"/orders/{placed.get_json()['id']}", None),
        ("orders", "POST", "/orders", {"productId": item, "quantity": 1}),
        ("orders", "DELETE", f"/orders/{placed.get_json()['id']}", None),
        ("products", "GET", "/products", None),
        ("products", "POST", "/products", {"name": "Forged", "price": "1.00", "stock": 1}),
        ("products", "PUT", f"/products/{item}", {"stock": 999}),
        ("products", "DELETE", f"/products/{item}", None),
        ("products", "GET", "/no-such-path", None),
    ]
    for service, method, path, body in attempts:
        answer = straight[service].open(
            path, method=method, json=body, headers={**VICTIM, **ADMIN, **extra}
        )
        assert (answer.status_code, answer.get_json()) == (403, FORBIDDEN), (method, path)
        assert answer.headers["X-Request-Id"]
    for client in straight.values():  # the health checks need no secret
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
    # Nothing changed: the victim's order and the product are as they were.
    assert [o["quantity"] for o in orders.get("/orders", headers=VICTIM).get_json()] == [2]
    assert products.get(f"/products/{item}").get_json()["stock"] == 3


def test_without_the_hash_everything_but_health_is_refused(
    make_app: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ORIGIN_SECRET_SHA256")
    for service, path in (("products", "/products"), ("orders", "/orders")):
        client = make_app(service).test_client()  # it sends the secret: nobody can check it
        assert (client.get(path, headers=VICTIM).status_code, service) == (403, service)
        assert client.get("/health").status_code == 200
    assert "ORIGIN_SECRET_SHA256 is unset" in caplog.text
    monkeypatch.setenv("ORIGIN_SECRET_SHA256", "not-a-sha256")
    assert make_app("products").test_client().get("/products").status_code == 403


def test_origin_check_off_is_explicit_and_loses_to_a_hash(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ORIGIN_CHECK", "off")
    # With a hash (a task definition's), the check stays on.
    assert FlaskClient(make_app("products")).get("/products").status_code == 403
    monkeypatch.delenv("ORIGIN_SECRET_SHA256")
    assert FlaskClient(make_app("products")).get("/products").status_code == 200
    monkeypatch.setenv("ORIGIN_CHECK", "no")  # anything but "off" is no opt-out
    assert FlaskClient(make_app("products")).get("/products").status_code == 403
