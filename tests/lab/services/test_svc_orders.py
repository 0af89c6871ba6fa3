"""Routes and errors of lab/services/orders against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

ALICE = {"X-Authorized-User-Id": "alice"}
BOB = {"X-Authorized-User-Id": "bob"}
ADMIN = {"X-Authorized-User-Id": "admin", "X-Authorized-Role": "admin"}


def new_product(products: Any, stock: int, price: str = "2.50") -> int:
    response = products.post(
        "/products", json={"name": "Thing", "price": price, "stock": stock}, headers=ADMIN
    )
    assert response.status_code == 201
    return response.get_json()["id"]


def stock_of(products: Any, product_id: int) -> int:
    return products.get(f"/products/{product_id}").get_json()["stock"]


def test_health(orders: Any) -> None:
    response = orders.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy", "service": "orders"}
    ready = orders.get("/ready")
    assert (ready.status_code, ready.get_json()) == (200, {"status": "ready", "service": "orders"})


def test_place_order_decrements_stock(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=5, price="2.50")
    response = orders.post("/orders", json={"productId": product_id, "quantity": 2}, headers=ALICE)
    assert response.status_code == 201
    order = response.get_json()
    assert set(order) == {"id", "productId", "quantity", "unitPrice", "userId", "createdAt"}
    assert order["productId"] == product_id
    assert order["quantity"] == 2
    assert order["unitPrice"] == "2.50"
    assert order["userId"] == "alice"
    assert stock_of(products, product_id) == 3


def test_unit_price_is_the_price_at_order_time(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=5, price="2.50")
    order = orders.post(
        "/orders", json={"productId": product_id, "quantity": 1}, headers=ALICE
    ).get_json()
    products.put(f"/products/{product_id}", json={"price": "9.99"}, headers=ADMIN)
    assert orders.get(f"/orders/{order['id']}", headers=ALICE).get_json()["unitPrice"] == "2.50"


def test_insufficient_stock_is_a_conflict(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=2)
    response = orders.post("/orders", json={"productId": product_id, "quantity": 3}, headers=ALICE)
    assert response.status_code == 409
    assert response.get_json() == {"error": "insufficient stock", "available": 2}
    assert stock_of(products, product_id) == 2
    assert orders.get("/orders", headers=ALICE).get_json() == []


def test_order_for_missing_product_is_404(orders: Any) -> None:
    response = orders.post("/orders", json={"productId": 999, "quantity": 1}, headers=ALICE)
    assert response.status_code == 404
    assert response.get_json()["error"] == "product not found"


@pytest.mark.parametrize(
    ("body", "bad"),
    [
        ({}, {"productId", "quantity"}),
        ({"productId": "1", "quantity": 0}, {"productId", "quantity"}),
        ({"productId": True, "quantity": 1.0}, {"productId", "quantity"}),
        ({"productId": 1, "quantity": -2}, {"quantity"}),
        ({"productId": 2**31, "quantity": 1}, {"productId"}),
        ({"productId": None, "quantity": 1}, {"productId"}),
    ],
)
def test_invalid_orders_report_every_bad_field(orders: Any, body: Any, bad: set[str]) -> None:
    response = orders.post("/orders", json=body, headers=ALICE)
    assert response.status_code == 400
    payload = response.get_json()
    assert payload["error"] == "invalid order"
    assert set(payload["fields"]) == bad


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{", "not valid JSON"),
        (b"", "empty"),
        (b"[]", "not an array"),
        (b"42", "must be a JSON object"),
    ],
)
def test_malformed_body(orders: Any, body: bytes, message: str) -> None:
    response = orders.post("/orders", data=body, content_type="application/json", headers=ALICE)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


@pytest.mark.parametrize(
    ("method", "path"), [("post", "/orders"), ("get", "/orders"), ("get", "/orders/1")]
)
def test_every_orders_route_needs_the_user_header(orders: Any, method: str, path: str) -> None:
    response = getattr(orders, method)(path, json={"productId": 1, "quantity": 1})
    assert response.status_code == 401
    assert response.get_json() == {"error": "authentication required"}


def test_callers_see_only_their_own_orders(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=10)
    mine = [
        orders.post(
            "/orders", json={"productId": product_id, "quantity": q}, headers=ALICE
        ).get_json()
        for q in (1, 2)
    ]
    theirs = orders.post(
        "/orders", json={"productId": product_id, "quantity": 3}, headers=BOB
    ).get_json()

    listing = orders.get("/orders", headers=ALICE).get_json()
    assert [o["id"] for o in listing] == [mine[1]["id"], mine[0]["id"]]
    assert orders.get("/orders", headers=BOB).get_json() == [theirs]

    assert orders.get(f"/orders/{mine[0]['id']}", headers=ALICE).get_json() == mine[0]
    hidden = orders.get(f"/orders/{theirs['id']}", headers=ALICE)
    assert hidden.status_code == 404
    assert hidden.get_json() == {"error": "order not found"}


@pytest.mark.parametrize("path", ["/orders/999", "/orders/abc", f"/orders/{2**31}"])
def test_missing_order_is_404(orders: Any, path: str) -> None:
    response = orders.get(path, headers=ALICE)
    assert response.status_code == 404
    assert response.is_json


def test_unknown_route_and_wrong_method_are_json(orders: Any) -> None:
    assert orders.get("/nope").get_json() == {"error": "not found"}
    wrong = orders.put("/orders/1", headers=ALICE)
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "method not allowed"}


def test_cancelling_an_order_puts_its_stock_back(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=5)
    placed = orders.post("/orders", json={"productId": product_id, "quantity": 3}, headers=ALICE)
    kept = orders.post("/orders", json={"productId": product_id, "quantity": 1}, headers=ALICE)
    assert stock_of(products, product_id) == 1
    response = orders.delete(f"/orders/{placed.get_json()['id']}", headers=ALICE)
    assert (response.status_code, response.data) == (204, b"")
    assert stock_of(products, product_id) == 4
    assert orders.get("/orders", headers=ALICE).get_json() == [kept.get_json()]
    again = orders.delete(f"/orders/{placed.get_json()['id']}", headers=ALICE)
    assert again.status_code == 404 and stock_of(products, product_id) == 4


def test_nobody_cancels_someone_elses_order(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=5)
    order = orders.post("/orders", json={"productId": product_id, "quantity": 2}, headers=ALICE)
    path = f"/orders/{order.get_json()['id']}"
    for who in (BOB, ADMIN):
        response = orders.delete(path, headers=who)
        assert response.status_code == 404
        assert response.get_json() == {"error": "order not found"}
    assert orders.delete(path).status_code == 401
    assert stock_of(products, product_id) == 3
    assert orders.get(path, headers=ALICE).status_code == 200


def test_a_cancelled_orders_product_can_be_deleted(orders: Any, products: Any) -> None:
    product_id = new_product(products, stock=2)
    order = orders.post("/orders", json={"productId": product_id, "quantity": 1}, headers=ALICE)
    assert products.delete(f"/products/{product_id}", headers=ADMIN).status_code == 409
    orders.delete(f"/orders/{order.get_json()['id']}", headers=ALICE)
    assert products.delete(f"/products/{product_id}", headers=ADMIN).status_code == 204


@pytest.mark.parametrize("path", ["/orders/999", "/orders/abc", f"/orders/{2**31}"])
def test_cancelling_a_missing_order_is_404(orders: Any, path: str) -> None:
    assert orders.delete(path, headers=ALICE).status_code == 404


def test_order_rows_match_the_schema(orders: Any, products: Any, dsn: str) -> None:
    product_id = new_product(products, stock=1, price="3.10")
    orders.post("/orders", json={"productId": product_id, "quantity": 1}, headers=ALICE)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT user_id, product_id, quantity, unit_price FROM orders"
        ).fetchone()
    assert row is not None
    assert (row[0], row[1], row[2], str(row[3])) == ("alice", product_id, 1, "3.10")
