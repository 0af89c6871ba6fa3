"""Fixtures for the lab's container services (lab/services/products and orders).

One private PostgreSQL server per test session (LocalPostgres, random password,
free loopback port), one database per test module, and the service tables
dropped before every test, so each test starts from a freshly migrated schema.
The services check the lab's origin secret as in a task: their apps' test clients send it,
as the ALB forwards it from API Gateway (origin_secret.py).
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from origin_secret import ORIGIN_SHA256, ThroughGateway

from msctl.local.postgres import LocalPostgres, PostgresNotInstalled

REPO = Path(__file__).resolve().parents[3]
SERVICES_DIR = REPO / "lab" / "services"
SERVICES = ("products", "orders")
USER_HEADER = "X-Authorized-User-Id"


def load_service(name: str) -> ModuleType:
    """Import lab/services/<name>/app.py under a unique module name (no side effects)."""
    module_name = f"lab_service_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, SERVICES_DIR / name / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_postgres() -> Path:
    """The PostgreSQL bin dir, or skip (fail on CI) saying how to install it."""
    try:
        return LocalPostgres.find_binaries()
    except PostgresNotInstalled as exc:
        reason = f"PostgreSQL server binaries not installed: {exc}"
        print(f"\n{reason}", file=sys.__stderr__)
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run .ci/postgres.sh first)", pytrace=False)
        pytest.skip(reason)


def new_server_dir() -> Path:
    """A fresh directory that the postgres system user can traverse (CI runs as root)."""
    base = Path(tempfile.mkdtemp(prefix="msctl-pg-"))
    base.chmod(0o711)
    return base


@pytest.fixture(autouse=True)
def origin_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the task definition gives the services: the origin secret's SHA-256."""
    monkeypatch.setenv("ORIGIN_SECRET_SHA256", ORIGIN_SHA256)
    monkeypatch.delenv("ORIGIN_CHECK", raising=False)


@pytest.fixture(scope="session")
def service_loader() -> Callable[[str], ModuleType]:
    return load_service


@pytest.fixture
def unused_port() -> int:
    return free_port()


@pytest.fixture
def pg_bin() -> Path:
    return require_postgres()


@pytest.fixture
def server_dir(pg_bin: Path) -> Iterator[Path]:
    """A fresh directory for an extra LocalPostgres; removed after the test."""
    base = new_server_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[LocalPostgres]:
    require_postgres()
    base = new_server_dir()
    server = LocalPostgres(
        base / "data", free_port(), password=secrets.token_urlsafe(24), ephemeral=True
    )
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def database(pg: LocalPostgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """DSN of a database private to the requesting test module."""
    stem = re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:40]
    name = f"t_{stem}_{secrets.token_hex(3)}"
    pg.create_database(name)
    yield pg.dsn(name)
    pg.drop_database(name)


def drop_service_tables(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS orders, products, schema_migrations CASCADE")


@pytest.fixture
def dsn(database: str) -> str:
    """The module's database, emptied of every service table."""
    drop_service_tables(database)
    return database


@pytest.fixture
def make_app(dsn: str) -> Iterator[Callable[..., Any]]:
    """make_app(service, dsn=None, **kwargs): a Flask app whose pool is closed after the test."""
    apps: list[Any] = []

    def factory(service: str, app_dsn: str | None = None, **kwargs: Any) -> Any:
        app = load_service(service).create_app(dsn if app_dsn is None else app_dsn, **kwargs)
        app.test_client_class = ThroughGateway
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["db"].close()


@pytest.fixture
def products_app(make_app: Callable[..., Any]) -> Any:
    return make_app("products")


@pytest.fixture
def orders_app(make_app: Callable[..., Any], products_app: Any) -> Any:
    return make_app("orders")


@pytest.fixture
def products(products_app: Any) -> Any:
    return products_app.test_client()


@pytest.fixture
def orders(orders_app: Any) -> Any:
    return orders_app.test_client()
