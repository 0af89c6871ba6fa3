"""Routes and errors of lab/services/products against a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

ADMIN = {"X-Authorized-User-Id": "admin-1", "X-Authorized-Role": "admin"}
USER = {"X-Authorized-User-Id": "user-1", "X-Authorized-Role": "user"}


def create(client: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "Widget", "price": "9.50", "stock": 3} | fields
    response = client.post("/products", json=body, headers=ADMIN)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_health(products: Any) -> None:
    response = products.get("/health")
    assert response.status_code == 200
    assert response.get_json() == {"status": "healthy", "service": "products"}
    ready = products.get("/ready")
    assert ready.status_code == 200
    assert ready.get_json() == {"status": "ready", "service": "products"}


def test_sample_product_is_seeded(products: Any) -> None:
    listing = products.get("/products").get_json()
    assert [p["name"] for p in listing] == ["Sample Product 1"]
    sample = listing[0]
    assert sample["description"] == "This is a sample product"
    assert sample["price"] == "29.99"
    assert sample["stock"] == 100
    assert set(sample) == {"id", "name", "description", "price", "stock", "created_at"}


def test_create_then_get_and_list_newest_first(products: Any) -> None:
    created = create(products, name="  Gadget  ", description="shiny", price=12, stock=7)
    assert created["name"] == "Gadget"
    assert created["price"] == "12.00"
    assert created["stock"] == 7
    assert created["description"] == "shiny"

    fetched = products.get(f"/products/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == created

    names = [p["name"] for p in products.get("/products").get_json()]
    assert names == ["Gadget", "Sample Product 1"]


@pytest.mark.parametrize(
    ("price", "stored"),
    [("29.99", "29.99"), (29.99, "29.99"), (0, "0.00"), ("5", "5.00"), ("1.50", "1.50")],
)
def test_price_accepts_numbers_and_numeric_strings(products: Any, price: Any, stored: str) -> None:
    assert create(products, price=price)["price"] == stored


def test_defaults_stock_zero_and_no_description(products: Any) -> None:
    response = products.post("/products", json={"name": "Bare", "price": 1}, headers=ADMIN)
    assert response.status_code == 201
    body = response.get_json()
    assert body["stock"] == 0
    assert body["description"] is None


def test_post_reports_every_bad_field_at_once(products: Any) -> None:
    response = products.post(
        "/products",
        json={"name": "", "description": 5, "price": "1.234", "stock": -1},
        headers=ADMIN,
    )
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "invalid product"
    assert set(body["fields"]) == {"name", "description", "price", "stock"}


def test_post_missing_required_fields(products: Any) -> None:
    response = products.post("/products", json={}, headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"name": "is required", "price": "is required"}


@pytest.mark.parametrize(
    "price",
    [True, None, "NaN", "Infinity", "-1", -0.01, "abc", "", "1e3", 1.001, 100000000, [1], {}],
)
def test_bad_prices_are_rejected(products: Any, price: Any) -> None:
    response = products.post("/products", json={"name": "x", "price": price}, headers=ADMIN)
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"price"}


def test_nan_and_infinity_json_literals_are_rejected(products: Any) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        response = products.post(
            "/products",
            data=f'{{"name": "x", "price": {literal}}}',
            content_type="application/json",
            headers=ADMIN,
        )
        assert response.status_code == 400
        assert set(response.get_json()["fields"]) == {"price"}


@pytest.mark.parametrize("stock", [True, 1.5, 2.0, "3", -1, 2**31, None])
def test_bad_stock_is_rejected(products: Any, stock: Any) -> None:
    response = products.post(
        "/products", json={"name": "x", "price": 1, "stock": stock}, headers=ADMIN
    )
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"stock"}


def test_name_too_long(products: Any) -> None:
    response = products.post("/products", json={"name": "n" * 256, "price": 1}, headers=ADMIN)
    assert response.status_code == 400
    assert "255" in response.get_json()["fields"]["name"]
    assert create(products, name="n" * 255)["name"] == "n" * 255


def test_put_partial_update(products: Any) -> None:
    product = create(products)
    response = products.put(f"/products/{product['id']}", json={"stock": 42}, headers=ADMIN)
    assert response.status_code == 200
    updated = response.get_json()
    assert updated == product | {"stock": 42}

    response = products.put(
        f"/products/{product['id']}",
        json={"name": "Renamed", "description": None, "price": "0.10"},
        headers=ADMIN,
    )
    assert response.get_json() == updated | {
        "name": "Renamed",
        "description": None,
        "price": "0.10",
    }


def test_put_reports_every_bad_field_at_once(products: Any) -> None:
    product = create(products)
    response = products.put(
        f"/products/{product['id']}",
        json={"name": None, "price": "free", "stock": 1.5},
        headers=ADMIN,
    )
    assert response.status_code == 400
    assert set(response.get_json()["fields"]) == {"name", "price", "stock"}
    assert products.get(f"/products/{product['id']}").get_json() == product


def test_put_with_nothing_to_update(products: Any) -> None:
    product = create(products)
    response = products.put(f"/products/{product['id']}", json={"color": "red"}, headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()["error"] == "nothing to update"


def test_put_and_delete_missing_product(products: Any) -> None:
    assert products.put("/products/999", json={"stock": 1}, headers=ADMIN).status_code == 404
    assert products.delete("/products/999", headers=ADMIN).status_code == 404


def test_delete(products: Any) -> None:
    product = create(products)
    response = products.delete(f"/products/{product['id']}", headers=ADMIN)
    assert response.status_code == 204
    assert response.data == b""
    assert products.get(f"/products/{product['id']}").status_code == 404


def test_delete_product_with_orders_is_a_conflict(products: Any, orders: Any) -> None:
    product = create(products, stock=5)
    placed = orders.post("/orders", json={"productId": product["id"], "quantity": 1}, headers=USER)
    assert placed.status_code == 201
    response = products.delete(f"/products/{product['id']}", headers=ADMIN)
    assert response.status_code == 409
    assert response.get_json()["productId"] == product["id"]
    assert products.get(f"/products/{product['id']}").status_code == 200


@pytest.mark.parametrize(
    "path", ["/products/999", "/products/abc", "/products/-1", "/products/1.5"]
)
def test_get_missing_or_non_integer_id_is_json_404(products: Any, path: str) -> None:
    response = products.get(path)
    assert response.status_code == 404
    assert response.is_json
    assert "error" in response.get_json()


def test_id_beyond_integer_range_is_404_not_500(products: Any) -> None:
    assert products.get(f"/products/{2**31}").status_code == 404
    assert products.get("/products/99999999999999999999").status_code == 404
    assert products.delete(f"/products/{2**40}", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/products"), ("put", "/products/1"), ("delete", "/products/1")],
)
@pytest.mark.parametrize(
    "headers", [{}, {"X-Authorized-User-Id": ""}, {"X-Authorized-User-Id": " "}]
)
def test_writes_need_the_user_header(
    products: Any, method: str, path: str, headers: dict[str, str]
) -> None:
    response = getattr(products, method)(path, json={"name": "x", "price": 1}, headers=headers)
    assert response.status_code == 401
    assert response.get_json() == {"error": "authentication required"}


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/products"), ("put", "/products/1"), ("delete", "/products/1")],
)
@pytest.mark.parametrize(
    "role", [None, "", "user", "Admin", "admin,user", "administrator"], ids=repr
)
def test_writes_need_the_admin_role(
    products: Any, method: str, path: str, role: str | None
) -> None:
    headers = {"X-Authorized-User-Id": "user-1"} | (
        {} if role is None else {"X-Authorized-Role": role}
    )
    response = getattr(products, method)(path, json={"name": "x", "price": 1}, headers=headers)
    assert response.status_code == 403
    assert response.get_json() == {"error": "the admin role is required to change products"}
    assert products.get("/products/1").get_json()["name"] == "Sample Product 1"


@pytest.mark.parametrize("char", ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\n", "\t"], ids=repr)
def test_control_characters_in_the_name_are_a_400_naming_it(products: Any, char: str) -> None:
    for send in (
        lambda body: products.post("/products", json=body, headers=ADMIN),
        lambda body: products.put("/products/1", json=body, headers=ADMIN),
    ):
        response = send({"name": f"Wid{char}get", "price": 1})
        assert response.status_code == 400
        assert response.get_json() == {
            "error": "invalid product",
            "fields": {"name": "must not contain control characters"},
        }
    assert products.get("/products/1").get_json()["name"] == "Sample Product 1"


def test_a_description_may_span_lines_but_holds_no_other_control_characters(
    products: Any,
) -> None:
    text = "line one\r\n\tline two\n"
    assert create(products, description=text)["description"] == text
    response = products.post(
        "/products", json={"name": "x", "price": 1, "description": "a\x00b"}, headers=ADMIN
    )
    assert response.status_code == 400
    assert response.get_json()["fields"] == {
        "description": "must not contain control characters other than tab and line breaks"
    }


def test_lone_surrogates_are_a_400(products: Any) -> None:
    body = b'{"name": "\\ud800", "price": 1}'
    response = products.post("/products", data=body, content_type="application/json", headers=ADMIN)
    assert response.status_code == 400
    assert response.get_json()["fields"] == {"name": "must be valid Unicode text"}


def test_reads_need_no_user_header(products: Any) -> None:
    assert products.get("/products").status_code == 200
    assert products.get("/products/1").status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"name": "x", "price": 1', "not valid JSON"),
        (b"", "empty"),
        (b"[1, 2]", "must be a JSON object, not an array"),
        (b'"text"', "must be a JSON object"),
        (b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_malformed_body(products: Any, body: bytes, message: str) -> None:
    response = products.post("/products", data=body, content_type="application/json", headers=ADMIN)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_body_too_large(products: Any) -> None:
    response = products.post(
        "/products",
        data=b'{"name": "' + b"x" * 70_000 + b'"}',
        content_type="application/json",
        headers=ADMIN,
    )
    assert response.status_code == 413
    assert response.is_json


def test_unknown_route_and_wrong_method_are_json(products: Any) -> None:
    missing = products.get("/nope")
    assert missing.status_code == 404
    assert missing.get_json() == {"error": "not found"}

    wrong = products.patch("/products")
    assert wrong.status_code == 405
    assert wrong.get_json() == {"error": "method not allowed"}
    assert "GET" in wrong.headers["Allow"]
    assert products.delete("/products", headers=ADMIN).status_code == 405


def test_trailing_slash_is_accepted(products: Any) -> None:
    assert products.get("/products/").status_code == 200


def test_prices_are_stored_exactly(products: Any, dsn: str) -> None:
    product = create(products, price="0.10")
    with psycopg.connect(dsn) as conn:
        (price,) = conn.execute(
            "SELECT price FROM products WHERE id = %s", (product["id"],)
        ).fetchone()
    assert str(price) == "0.10"


def test_request_id_is_echoed(products: Any) -> None:
    response = products.get("/products", headers={"X-Request-Id": "abc-123"})
    assert response.headers["X-Request-Id"] == "abc-123"
    generated = products.get("/products").headers["X-Request-Id"]
    assert len(generated) == 32
