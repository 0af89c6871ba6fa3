"""The services read the database login from the RDS-managed secret (DB_SECRET_ARN) and
survive its rotation: real PostgreSQL, moto's Secrets Manager in this process."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws
from origin_secret import ThroughGateway
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

USER = {"X-Authorized-User-Id": "user-1"}
PATHS = {"products": "/products", "orders": "/orders"}
REREAD = "database refused the password: reading secret"


class Rds:
    """A database role and its secret, rotated the way RDS does: a new password for the
    role, then the same one in the secret (AWSCURRENT). Running sessions keep working."""

    def __init__(self, admin_dsn: str, load: Callable[[str], Any]) -> None:
        self.admin_dsn = admin_dsn
        self.load = load
        self.user = f"svc_{secrets.token_hex(4)}"
        self.passwords: list[str] = []
        self.apps: list[Any] = []
        self.client = boto3.client("secretsmanager", region_name="us-east-1")
        self.arn = self.client.create_secret(
            Name=f"rds!db-{secrets.token_hex(4)}", SecretString=self._login(self._new())
        )["ARN"]
        self.role = sql.Identifier(self.user)
        self.admin("CREATE ROLE {} LOGIN PASSWORD {}", self.role, sql.Literal(self.passwords[-1]))
        self.admin("GRANT CREATE ON SCHEMA public TO {}", self.role)
        # The services' DB_USER/DB_PASSWORD are stale: the secret's login wins.
        stale = {"user": "stale", "password": "not-the-password"}
        self.app_dsn = make_conninfo("", **{**conninfo_to_dict(admin_dsn), **stale})

    def _new(self) -> str:
        self.passwords.append(secrets.token_urlsafe(18))
        return self.passwords[-1]

    def _login(self, password: str) -> str:
        return json.dumps({"username": self.user, "password": password})

    def admin(self, statement: str, *args: sql.Composable) -> Any:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cursor = conn.execute(sql.SQL(statement).format(*args))
            return cursor.fetchall() if cursor.description else None

    def rotate(self) -> None:
        password = self._new()
        self.admin("ALTER ROLE {} PASSWORD {}", self.role, sql.Literal(password))
        self.client.put_secret_value(SecretId=self.arn, SecretString=self._login(password))

    def drop_connections(self) -> int:
        """Ends the role's sessions (as a failover or a restarted server would)."""
        query = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = {}"
        return self.admin(query, sql.Literal(self.user))[0][0]

    def app(self, service: str, **kwargs: Any) -> Any:
        app = self.load(service).create_app(self.app_dsn, connect_timeout=2, **kwargs)
        app.test_client_class = ThroughGateway
        self.apps.append(app)
        return app

    def close(self) -> None:
        for app in self.apps:
            app.extensions["db"].close()
        self.drop_connections()
        self.admin("DROP OWNED BY {}", self.role)
        self.admin("DROP ROLE {}", self.role)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # what the task definition sets
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield


@pytest.fixture
def rds(aws: None, dsn: str, service_loader: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rds]:
    rds = Rds(dsn, service_loader)
    monkeypatch.setenv("DB_SECRET_ARN", rds.arn)
    try:
        yield rds
    finally:
        rds.close()


def assert_no_secret(rds: Rds, *texts: str) -> None:
    for text in texts:
        for password in rds.passwords:
            assert password not in text


@pytest.mark.parametrize("service", ["products", "orders"])
def test_rotation_needs_no_restart(
    rds: Rds, service: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = PATHS[service]
    with caplog.at_level(logging.INFO):
        app = rds.app(service)
        assert app.extensions["db"].migrated
        client = app.test_client()
        assert client.get(path, headers=USER).status_code == 200
        assert REREAD not in caplog.text  # the first read needed no retry

        rds.rotate()
        # The pool's session was opened before the rotation and keeps working.
        assert client.get(path, headers=USER).status_code == 200
        assert rds.drop_connections() >= 1
        # The pool replaces the dead session: the cached password is refused, the
        # secret is read again, and the request is served without a restart.
        answers = [client.get(path, headers=USER) for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert client.get("/ready").status_code == 200
        assert f"{REREAD} {rds.arn} again" in caplog.text

        # The migration's connection goes through the same login.
        rds.rotate()
        rereads = caplog.text.count(REREAD)
        app.extensions["db"].migrate()
        assert caplog.text.count(REREAD) == rereads + 1

        # A fresh app reads the current secret directly.
        rds.rotate()
        fresh = rds.app(service).test_client()
        assert fresh.get(path, headers=USER).status_code == 200
        assert caplog.text.count(REREAD) == rereads + 1

    bodies = [a.get_data(as_text=True) for a in answers]
    assert_no_secret(rds, caplog.text, *bodies)


@pytest.mark.parametrize("service", ["products", "orders"])
@pytest.mark.parametrize("secret", ["missing", "not-json"])
def test_unreadable_secret_is_the_usual_database_unavailable(
    rds: Rds,
    service: str,
    secret: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if secret == "missing":
        arn = rds.arn.replace("rds!db-", "rds!db-gone-")
    else:  # a plain password instead of the JSON RDS writes: its text must not leak
        rds.passwords.append(secrets.token_urlsafe(18))
        arn = rds.client.create_secret(Name="plain", SecretString=rds.passwords[-1])["ARN"]
    monkeypatch.setenv("DB_SECRET_ARN", arn)
    with caplog.at_level(logging.INFO):
        app = rds.app(service)
        client = app.test_client()
        health = client.get("/ready")
        answer = client.get(PATHS[service], headers=USER)
        alive = client.get("/health")
    assert not app.extensions["db"].migrated
    assert f"cannot read database secret {arn}" in caplog.text
    assert alive.status_code == 200
    assert health.status_code == 503
    assert health.get_json() == {"status": "not ready", "service": service}
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "Service temporarily unavailable"
    assert_no_secret(rds, caplog.text, health.get_data(as_text=True), answer.get_data(as_text=True))
    assert "not-the-password" not in caplog.text
