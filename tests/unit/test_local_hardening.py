"""The local target holds up to another local user: the runners pass on only safe variables
from the (unauthenticated) emulator, and root's shared PostgreSQL parent can't be squatted."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from msctl.aws.clients import Clients
from msctl.config import load_config
from msctl.local import dataplane
from msctl.local.environment import allowed
from msctl.local.services import ServiceRunner

from .hostile import plant

ROOT = Path(__file__).resolve().parents[2]

# A stand-in service: answers every GET with 200 and writes the environment it got.
APP = """
import http.server, json, os

with open(f"env-{os.environ['PORT']}.json", "w") as fh:
    json.dump(dict(os.environ), fh)

class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Ok).serve_forever()
"""


@pytest.mark.parametrize(
    "name",
    ["USERS_TABLE", "DB_NAME", "LOG_LEVEL", "AWS_XRAY_DAEMON_ADDRESS", "TZ", "camelCase"],
)
def test_lab_variables_pass(name):
    assert allowed(name)


@pytest.mark.parametrize(
    "name",
    [
        "PYTHONPATH", "PYTHONHOME", "pythonpath", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES",
        "BASH_ENV", "ENV", "BASH_FUNC_x%%", "PATH", "HOME", "GCONV_PATH", "PERL5OPT", "NODE_OPTIONS",
        "SSL_CERT_FILE", "OPENSSL_CONF", "PGOPTIONS", "AWS_ENDPOINT_URL", "AWS_CA_BUNDLE",
        "GUNICORN_CMD_ARGS", "_HANDLER", "LAMBDA_TASK_ROOT", "A=B", "", "1ABC", "DB HOST", None,
    ],
)  # fmt: skip
def test_loader_and_runner_variables_are_refused(name):
    assert not allowed(name)


@pytest.fixture
def aws(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    with mock_aws():
        yield Clients(boto3.Session(region_name="us-east-1"))


def test_services_get_no_hostile_variable_from_the_task_definition(aws, tmp_path, caplog):
    hostile, markers = plant(tmp_path / "attacker")
    source = tmp_path / "service"
    source.mkdir()
    (source / "Dockerfile").write_text('FROM python:3.11-slim\nCMD ["python", "app.py"]\n')
    (source / "app.py").write_text(APP)
    overrides = [f"ecs.services.{key}.source={source}" for key in ("products", "orders")]
    config = load_config(ROOT / "config" / "lab.yaml", overrides)
    given = {**hostile, "DB_HOST": "attacker.example", "DB_NAME": "shop", "LAB_SETTING": "kept"}
    aws.ecs.create_cluster(clusterName=config.ecs.cluster)
    task = aws.ecs.register_task_definition(
        family="svc",
        containerDefinitions=[
            {
                "name": "app",
                "image": "app:latest",
                "memory": 256,
                "environment": [{"name": k, "value": v} for k, v in given.items()],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]
    for svc in config.ecs.services.values():
        aws.ecs.create_service(
            cluster=config.ecs.cluster,
            serviceName=svc.service,
            taskDefinition=task,
            desiredCount=1,
        )
    runner = ServiceRunner(aws, config, "/run/db-socket", 5432, tmp_path)
    try:
        with caplog.at_level(logging.WARNING, logger="msctl.local"):
            tasks = runner.start_all()
    finally:
        runner.stop_all()

    assert sorted(p.name for p in markers.iterdir()) == []  # no attacker code ran
    for started in tasks:
        env = json.loads((source / f"env-{started.port}.json").read_text())
        assert not [key for key, value in hostile.items() if env.get(key) == value]
        assert env.get("HOME") == os.environ.get("HOME")
        assert (env["DB_HOST"], env["DB_NAME"], env["LAB_SETTING"]) == ("/run/db-socket", "shop", "kept")  # fmt: skip
        assert env["AWS_ENDPOINT_URL"] == aws.secretsmanager.meta.endpoint_url
    refused = "'PYTHONPATH', 'HOME', 'BASH_ENV', 'LD_PRELOAD' to the local process"
    assert f"service microservices-products-service: not passing {refused}" in caplog.text
    assert str(tmp_path) not in caplog.text


def test_a_squatted_shared_postgres_parent_is_refused(tmp_path, monkeypatch):
    shared = tmp_path / "msctl-postgres"
    monkeypatch.setattr(dataplane, "_SHARED_PARENT", shared)
    dataplane._own_directory(shared)  # made here: fine, and again
    dataplane._own_directory(shared)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o711
    shared.chmod(0o777)  # another user could swap what is in it
    with pytest.raises(dataplane.DataPlaneError, match="is not root's own directory"):
        dataplane._own_directory(shared)
    shared.rmdir()
    shared.symlink_to(tmp_path)
    with pytest.raises(dataplane.DataPlaneError, match="is not root's own directory"):
        dataplane._own_directory(shared)
