"""Schema migration of both services: idempotent, order-independent, concurrency-safe."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

USER = {"X-Authorized-User-Id": "user-1", "X-Authorized-Role": "admin"}


def tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {name for (name,) in rows}


def sample_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM products WHERE name = 'Sample Product 1'")
        return row.fetchone()[0]


def test_migration_runs_at_app_creation(make_app: Any, dsn: str) -> None:
    app = make_app("products")
    assert app.extensions["db"].migrated
    assert {"products", "schema_migrations"} <= tables(dsn)
    assert "orders" not in tables(dsn)


def test_migration_twice_is_idempotent(make_app: Any, dsn: str) -> None:
    first = make_app("products")
    first.extensions["db"].migrate()
    make_app("products")
    make_app("orders")
    make_app("orders").extensions["db"].migrate()
    assert sample_count(dsn) == 1
    assert {"products", "orders", "schema_migrations"} <= tables(dsn)


def test_deleted_sample_product_stays_deleted(make_app: Any, dsn: str) -> None:
    client = make_app("products").test_client()
    assert client.delete("/products/1", headers=USER).status_code == 204
    make_app("products")
    assert sample_count(dsn) == 0


def test_orders_first_then_products(make_app: Any, dsn: str) -> None:
    orders = make_app("orders")
    assert orders.extensions["db"].migrated
    assert {"products", "orders"} <= tables(dsn)
    assert sample_count(dsn) == 0  # the orders service never seeds
    make_app("products")
    assert sample_count(dsn) == 1


def test_both_services_migrating_concurrently(service_loader: Any, dsn: str) -> None:
    services = ["products", "orders"] * 4
    barrier = threading.Barrier(len(services))
    modules = {name: service_loader(name) for name in set(services)}

    def start(name: str) -> Any:
        barrier.wait()
        return modules[name].create_app(dsn)

    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        apps = list(pool.map(start, services))
    try:
        assert all(app.extensions["db"].migrated for app in apps)
        assert {"products", "orders", "schema_migrations"} <= tables(dsn)
        assert sample_count(dsn) == 1
        for app in apps:
            assert app.test_client().get("/ready").status_code == 200
    finally:
        for app in apps:
            app.extensions["db"].close()


def test_existing_seed_style_table_is_kept(make_app: Any, dsn: str) -> None:
    """A products table made by the seed's own app (already holding the sample) is reused."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE TABLE products (id SERIAL PRIMARY KEY, name VARCHAR(255) NOT NULL, "
            "description TEXT, price DECIMAL(10,2) NOT NULL, stock INTEGER NOT NULL DEFAULT 0, "
            "created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
        )
        conn.execute(
            "INSERT INTO products (name, description, price, stock) "
            "VALUES ('Sample Product 1', 'This is a sample product', 29.99, 100)"
        )
    client = make_app("products").test_client()
    assert sample_count(dsn) == 1
    assert client.get("/products/1").get_json()["price"] == "29.99"
