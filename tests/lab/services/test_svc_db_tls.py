"""The task definition sets DB_SSLMODE=require: the services then never talk to PostgreSQL
over TCP in clear, and still work on the local target, whose PostgreSQL serves a unix
socket only (libpq ignores sslmode there)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from msctl.local.postgres import LocalPostgres


@pytest.fixture
def from_env(service_loader: Any) -> Iterator[Any]:
    """create_app as the container runs it: configured by DB_* alone."""
    apps: list[Any] = []

    def build(service: str) -> Any:
        app = service_loader(service).create_app(None, connect_timeout=2)
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["db"].close()


def test_sslmode_require_refuses_tcp_in_clear_and_works_on_the_socket(
    pg: LocalPostgres, dsn: str, from_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in pg.service_env(conninfo_to_dict(dsn)["dbname"]).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DB_SSLMODE", "require")
    # This server speaks no TLS on 127.0.0.1: the service won't use it.
    for service in ("products", "orders"):
        assert from_env(service).test_client().get("/ready").status_code == 503
    monkeypatch.setenv("DB_HOST", str(pg.socket_dir))
    for service in ("products", "orders"):
        assert from_env(service).test_client().get("/ready").status_code == 200
