"""The services find the database themselves: the task definition gives them the RDS
instance's identifier (DB_INSTANCE_ID), not its endpoint, so they start while RDS is still
creating it. Until RDS reports the endpoint they are alive (/health 200) and not ready
(/ready 503, and 503 for what needs the database); then ready without a restart. DB_HOST
wins when set (the local target and these tests point them at a local PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from origin_secret import ThroughGateway
from psycopg.conninfo import conninfo_to_dict

from msctl.local.postgres import LocalPostgres

INSTANCE = "microservices-db"
PATHS = {"products": "/products", "orders": "/orders"}
USER = {"X-Authorized-User-Id": "user-1"}


class FakeRds:
    """What DescribeDBInstances says of the instance: no endpoint while it is created."""

    def __init__(self, host: str, port: int) -> None:
        self.endpoint = {"host": host, "port": str(port)}
        self.status = "creating"
        self.asked: list[str] = []

    def __call__(self, instance_id: str) -> tuple[dict[str, str] | None, str]:
        self.asked.append(instance_id)
        if self.status != "available":
            return None, self.status
        return dict(self.endpoint), self.status


@pytest.fixture
def from_env(
    service_loader: Any, pg: LocalPostgres, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """create_app as a task runs it: DB_INSTANCE_ID and the login, no DB_HOST."""
    env = pg.service_env(conninfo_to_dict(dsn)["dbname"])
    for name in ("DB_NAME", "DB_USER", "DB_PASSWORD"):
        monkeypatch.setenv(name, env[name])
    for name in ("DB_HOST", "DB_PORT", "DB_SECRET_ARN", "DB_SSLMODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DB_INSTANCE_ID", INSTANCE)
    monkeypatch.setenv("DB_LOCATE_INTERVAL", "0")  # every attempt asks RDS again
    rds = FakeRds(env["DB_HOST"], pg.port)
    apps: list[Any] = []

    def build(service: str) -> Any:
        module = service_loader(service)
        monkeypatch.setattr(module, "describe_instance", rds)
        app = module.create_app(None, connect_timeout=2)
        app.test_client_class = ThroughGateway  # as the ALB forwards from API Gateway
        apps.append(app)
        return app

    build.rds = rds  # type: ignore[attr-defined]
    yield build
    for app in apps:
        app.extensions["db"].close()


@pytest.mark.parametrize("service", ["products", "orders"])
def test_alive_while_rds_creates_the_instance_ready_once_it_is_available(
    from_env: Any, service: str
) -> None:
    app = from_env(service)
    client = app.test_client()
    assert from_env.rds.asked and set(from_env.rds.asked) == {INSTANCE}
    assert not app.extensions["db"].migrated

    alive = client.get("/health")
    assert (alive.status_code, alive.get_json()) == (200, {"status": "healthy", "service": service})
    ready = client.get("/ready")
    assert ready.status_code == 503
    assert ready.get_json() == {"status": "not ready", "service": service}
    data = client.get(PATHS[service], headers=USER)
    assert data.status_code == 503
    assert data.get_json()["error"] == "Service temporarily unavailable"

    from_env.rds.status = "available"  # RDS reports the endpoint: no restart needed
    assert client.get("/ready").status_code == 200
    assert client.get(PATHS[service], headers=USER).status_code == 200
    assert app.extensions["db"].migrated
    asked = len(from_env.rds.asked)
    assert client.get("/ready").status_code == 200
    assert len(from_env.rds.asked) == asked  # found once: the endpoint doesn't move


def test_db_host_wins_over_the_instance_id(
    from_env: Any, pg: LocalPostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DB_HOST", pg.service_env()["DB_HOST"])
    monkeypatch.setenv("DB_PORT", str(pg.port))
    app = from_env("products")
    assert app.extensions["db"].migrated
    assert app.test_client().get("/ready").status_code == 200
    assert from_env.rds.asked == []


def test_the_lookup_asks_rds_for_exactly_that_instance(
    service_loader: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    module = service_loader("orders")
    with mock_aws():
        found, status = module.describe_instance(INSTANCE)
        assert found is None and "DBInstanceNotFound" in status
        rds = boto3.client("rds", region_name="us-east-1")
        rds.create_db_instance(
            DBInstanceIdentifier=INSTANCE,
            DBInstanceClass="db.t3.micro",
            Engine="postgres",
            MasterUsername="postgres",
            MasterUserPassword="not-used-here",
            AllocatedStorage=20,
        )
        endpoint = rds.describe_db_instances()["DBInstances"][0]["Endpoint"]
        found, status = module.describe_instance(INSTANCE)
    assert found == {"host": endpoint["Address"], "port": str(endpoint["Port"])}
    assert status == "available"
