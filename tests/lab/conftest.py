"""Fixtures for the lab's Lambda handlers, run in-process against moto."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

# lab_helpers sits next to this file; make it importable whatever pytest's import mode.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import lab_helpers  # noqa: E402
from lab_helpers import BUCKET, ORIGIN, SESSIONS_TABLE, USERS_TABLE, LabApi  # noqa: E402

FUNCTIONS = Path(__file__).resolve().parents[2] / "lab" / "functions"
SHARED = FUNCTIONS / "_shared"
HANDLERS = ("auth", "users", "notifications", "authorizer")


@pytest.fixture(scope="session")
def labcommon() -> ModuleType:
    sys.path.insert(0, str(SHARED))
    try:
        yield importlib.import_module("labcommon")
    finally:
        sys.path.remove(str(SHARED))


def _load_handler(name: str) -> ModuleType:
    # Every handler file is called handler.py: give each module its own name.
    spec = importlib.util.spec_from_file_location(
        f"lab_{name}_handler", FUNCTIONS / name / "handler.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def handlers(labcommon: ModuleType) -> dict[str, ModuleType]:
    return {name: _load_handler(name) for name in HANDLERS}


@pytest.fixture
def lab_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "USERS_TABLE": USERS_TABLE,
        "SESSIONS_TABLE": SESSIONS_TABLE,
        "STATIC_BUCKET": BUCKET,
        "ALLOWED_ORIGINS": f"{ORIGIN},https://other.example.com",
        "PASSWORD_HASH_ITERATIONS": "1000",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("SESSION_TTL_HOURS", "NOTIFICATIONS_PREFIX"):
        monkeypatch.delenv(name, raising=False)


def _create_table(client: Any, name: str, key: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


@pytest.fixture(scope="session")
def boto3_default_session():
    """A default boto3 session private to these tests, restored afterwards."""
    saved = boto3.DEFAULT_SESSION
    boto3.DEFAULT_SESSION = None
    yield
    boto3.DEFAULT_SESSION = saved


@pytest.fixture
def aws(boto3_default_session: None, lab_env: None, labcommon: ModuleType):
    # Keeping boto3's default session across tests keeps its loaded service
    # models: creating clients then costs milliseconds instead of ~100 ms.
    with mock_aws(config={"core": {"reset_boto3_session": False}}):
        labcommon.reset_clients()
        # The handlers' own (fresh, mocked) clients: building clients is most of a test's time.
        _create_table(labcommon.dynamodb_client(), USERS_TABLE, "userId")
        _create_table(labcommon.dynamodb_client(), SESSIONS_TABLE, "sessionId")
        labcommon.s3().create_bucket(Bucket=BUCKET)
        yield
        labcommon.reset_clients()


@pytest.fixture
def api(aws: None, handlers: dict[str, ModuleType]) -> LabApi:
    return LabApi(handlers)


@pytest.fixture
def put_session(aws: None):
    """Write a session item directly, e.g. one that has already expired."""
    return lab_helpers.put_session
