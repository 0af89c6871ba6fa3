"""Database outages, unexpected errors and what clients (never) see of them."""

from __future__ import annotations

import logging
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from msctl.local.postgres import LocalPostgres

USER = {"X-Authorized-User-Id": "user-1"}


def closed_port_dsn(port: int, password: str = "unused") -> str:
    return f"host=127.0.0.1 port={port} dbname=postgres user=postgres password={password}"


@pytest.mark.parametrize("service", ["products", "orders"])
def test_app_starts_without_database_alive_but_not_ready(
    make_app: Any, unused_port: int, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR):
        app = make_app(service, closed_port_dsn(unused_port), connect_timeout=1)
    assert not app.extensions["db"].migrated
    assert "migration failed" in caplog.text

    client = app.test_client()
    # Alive (ECS and the ALB keep the task), not ready (the database doesn't answer).
    alive = client.get("/health")
    assert (alive.status_code, alive.get_json()) == (200, {"status": "healthy", "service": service})
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.get_json() == {"status": "not ready", "service": service}

    path = "/products" if service == "products" else "/orders"
    data = client.get(path, headers=USER)
    assert data.status_code == 503
    assert data.get_json()["error"] == "Service temporarily unavailable"
    assert "Connection refused" not in data.get_data(as_text=True)


def test_ready_once_the_database_comes_up(
    make_app: Any, unused_port: int, server_dir: Path
) -> None:
    password = secrets.token_urlsafe(16)
    products = make_app("products", closed_port_dsn(unused_port, password), connect_timeout=1)
    orders = make_app("orders", closed_port_dsn(unused_port, password), connect_timeout=1)
    for app in (products, orders):
        assert app.test_client().get("/health").status_code == 200
        assert app.test_client().get("/ready").status_code == 503

    server = LocalPostgres(server_dir / "data", unused_port, password=password, ephemeral=True)
    with server:
        # The next request retries the migration and opens the pool.
        assert orders.test_client().get("/ready").status_code == 200
        assert products.test_client().get("/ready").status_code == 200
        listing = products.test_client().get("/products").get_json()
        assert [p["name"] for p in listing] == ["Sample Product 1"]
        # Free the server's connections before it stops.
        products.extensions["db"].close()
        orders.extensions["db"].close()


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize(("service", "path"), [("products", "/products"), ("orders", "/orders")])
def test_unexpected_errors_are_generic_500s(
    make_app: Any,
    service: str,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(service)
    db = app.extensions["db"]

    def explode() -> Any:
        raise Boom("secret internals: password=hunter2 at /app/app.py")

    monkeypatch.setattr(db, "connection", explode)
    client = app.test_client()
    with caplog.at_level(logging.ERROR):
        response = client.get(path, headers={**USER, "X-Request-Id": "req-42"})
    assert response.status_code == 500
    assert response.get_json() == {"error": "Internal server error", "requestId": "req-42"}
    assert "hunter2" not in response.get_data(as_text=True)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and errors[-1].request_id == "req-42"
    assert errors[-1].exc_info is not None and errors[-1].exc_info[0] is Boom

    # /ready never turns an exception into a 500; /health doesn't touch the database.
    assert client.get("/ready").status_code == 503
    assert client.get("/health").status_code == 200


def test_trace_id_header_is_the_request_id(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app("products")
    monkeypatch.setattr(app.extensions["db"], "connection", lambda: 1 / 0)
    trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    response = app.test_client().get("/products", headers={"X-Amzn-Trace-Id": trace})
    assert response.status_code == 500
    assert response.get_json()["requestId"] == trace


def test_generated_request_id_when_no_header(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app("orders")
    monkeypatch.setattr(app.extensions["db"], "connection", lambda: 1 / 0)
    response = app.test_client().get("/orders", headers=USER)
    assert response.status_code == 500
    request_id = response.get_json()["requestId"]
    assert len(request_id) == 32
    assert response.headers["X-Request-Id"] == request_id


def test_log_lines_are_single_line(service_loader: Any) -> None:
    module = service_loader("products")
    formatter = module._OneLineFormatter("%(message)s")
    try:
        raise ValueError("x")
    except ValueError:
        record = logging.LogRecord(
            "products", logging.ERROR, __file__, 1, "boom", None, sys.exc_info()
        )
    assert "\n" not in formatter.format(record)
