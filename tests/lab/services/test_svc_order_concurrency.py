"""Forty parallel orders for five items over real HTTP: no overselling."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from origin_secret import ORIGIN_HEADER, ORIGIN_SECRET
from werkzeug.serving import make_server

PARALLEL_ORDERS = 40
STOCK = 5


@pytest.fixture
def orders_url(make_app: Any, products_app: Any) -> Iterator[str]:
    # A generous pool timeout: 40 requests share 10 connections on a slow CI box.
    app = make_app("orders", pool_timeout=60)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def place_order(url: str, user: str, product_id: int) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"{url}/orders",
        data=json.dumps({"productId": product_id, "quantity": 1}).encode(),
        headers={
            "Content-Type": "application/json",
            "X-Authorized-User-Id": user,
            ORIGIN_HEADER: ORIGIN_SECRET,
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def test_parallel_orders_never_oversell(orders_url: str, products: Any, dsn: str) -> None:
    created = products.post(
        "/products",
        json={"name": "Limited", "price": "10.00", "stock": STOCK},
        headers={"X-Authorized-User-Id": "seller", "X-Authorized-Role": "admin"},
    )
    product_id = created.get_json()["id"]
    barrier = threading.Barrier(PARALLEL_ORDERS)

    def buyer(n: int) -> tuple[int, dict[str, Any]]:
        barrier.wait()
        return place_order(orders_url, f"buyer-{n}", product_id)

    with ThreadPoolExecutor(max_workers=PARALLEL_ORDERS) as pool:
        results = list(pool.map(buyer, range(PARALLEL_ORDERS)))

    statuses = Counter(status for status, _ in results)
    assert statuses == {201: STOCK, 409: PARALLEL_ORDERS - STOCK}
    for status, body in results:
        if status == 409:
            assert body == {"error": "insufficient stock", "available": 0}

    with psycopg.connect(dsn) as conn:
        (stock,) = conn.execute(
            "SELECT stock FROM products WHERE id = %s", (product_id,)
        ).fetchone()
        count, total = conn.execute(
            "SELECT count(*), sum(quantity) FROM orders WHERE product_id = %s", (product_id,)
        ).fetchone()
    assert stock == 0
    assert (count, total) == (STOCK, STOCK)
