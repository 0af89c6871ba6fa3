"""lambda against moto: deterministic packages, functions as configured, minimal updates."""

from __future__ import annotations

import io
import os
import shutil
import zipfile

import boto3
import pytest
from botocore.exceptions import ClientError

from msctl.build.lambda_package import (
    FIXED_DATE_TIME,
    SHARED_SOURCE,
    build_zip,
    code_sha256,
    function_zip,
)

from .conftest import ROOT, assert_lifecycle
from .test_iam import REGION, install_steps

FUNCTIONS = ("auth", "users", "notifications", "authorizer")
NOT_ASSUMABLE = "The role defined for the function cannot be assumed by Lambda."


@pytest.fixture
def fn_lab(lab, monkeypatch):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")  # not needed here; slow
    install_steps(lab)
    return lab


def lambda_client():
    return boto3.client("lambda", region_name=REGION)


def names(config) -> dict[str, str]:
    return {k: f.name for k, f in config.lambda_.functions.items()}


def copy_functions(config, dest):
    """A copy of lab/functions and a config whose sources point at it."""
    shutil.copytree(ROOT / "lab" / "functions", dest, ignore=shutil.ignore_patterns("__pycache__"))
    functions = {
        k: f.model_copy(update={"source": dest / k}) for k, f in config.lambda_.functions.items()
    }
    return config.model_copy(
        update={"lambda_": config.lambda_.model_copy(update={"functions": functions})}
    )


def use_config(lab, config) -> None:
    lab.config = config
    lab.ctx.config = config


class ParamRecorder:
    """(operation, FunctionName) of every Lambda call made through the lab's clients."""

    def __init__(self, lab):
        self.calls: list[tuple[str, str]] = []
        # Clients copy the session's events when built: register on the step's client.
        lab.ctx.clients.get("lambda").meta.events.register("before-parameter-build.lambda", self)

    def __call__(self, params, model, **_kwargs):
        self.calls.append((model.name, params.get("FunctionName", "")))

    def of(self, operation: str) -> list[str]:
        return [name for op, name in self.calls if op == operation]


# ---------------------------------------------------------------- packaging


def test_package_is_deterministic_across_copies_and_mtimes(tmp_path):
    first = build_zip(ROOT / "lab/functions/users", ROOT / SHARED_SOURCE)
    assert build_zip(ROOT / "lab/functions/users", ROOT / SHARED_SOURCE) == first
    copies = []
    for i, stamp in enumerate((1_000_000_000, 1_700_000_000)):
        dest = tmp_path / f"copy{i}"
        shutil.copytree(ROOT / "lab/functions", dest)
        for path in dest.rglob("*"):
            os.utime(path, (stamp, stamp))
            if path.is_file():
                path.chmod(0o755 if i else 0o600)
        cache = dest / "users" / "__pycache__"
        cache.mkdir(exist_ok=True)
        (cache / f"handler.cpython-31{i}.pyc").write_bytes(os.urandom(32))
        (dest / "users" / "stray.pyc").write_bytes(os.urandom(8))
        copies.append(build_zip(dest / "users", dest / "_shared"))
    assert copies[0] == copies[1] == first
    assert code_sha256(copies[0]) == code_sha256(first)

    with zipfile.ZipFile(io.BytesIO(first)) as archive:
        infos = archive.infolist()
    entries = [i.filename for i in infos]
    assert entries == sorted(entries)
    assert "handler.py" in entries and "labcommon.py" in entries
    assert not any(e.endswith(".pyc") or "__pycache__" in e or "/" in e for e in entries)
    for info in infos:
        assert info.date_time == FIXED_DATE_TIME
        assert (info.external_attr >> 16) & 0o777 == 0o644
        assert info.compress_type == zipfile.ZIP_DEFLATED


def test_every_function_zip_has_its_handler_and_the_shared_module(lab_config):
    shas = set()
    for key in FUNCTIONS:
        data = function_zip(lab_config, key)
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = archive.namelist()
            handler = archive.read("handler.py")
        assert "handler.py" in entries and "labcommon.py" in entries
        assert handler == (ROOT / "lab/functions" / key / "handler.py").read_bytes()
        shas.add(code_sha256(data))
    assert len(shas) == len(FUNCTIONS)


# ---------------------------------------------------------------- the step


def test_lambda_lifecycle(fn_lab):
    fn = names(fn_lab.config)
    expected = {("lambda-function", n) for n in fn.values()}
    expected |= {("log-group", f"/aws/lambda/{n}") for n in fn.values()}
    outputs = assert_lifecycle(fn_lab, "lambda", expected)
    assert set(outputs["functions"]) == set(FUNCTIONS)
    for key, name in fn.items():
        assert outputs["functions"][key]["name"] == name
        assert outputs["functions"][key]["arn"].endswith(f":function:{name}")
    assert lambda_client().list_functions()["Functions"] == []
    logs = boto3.client("logs", region_name=REGION)
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/")["logGroups"] == []


def test_functions_as_configured_and_a_handler_change_updates_only_its_code(fn_lab, tmp_path):
    cfg = copy_functions(fn_lab.config, tmp_path / "functions")
    use_config(fn_lab, cfg)
    fn_lab.run("apply", ["lambda"])
    roles = fn_lab.ctx.outputs_of("iam")["lambda_role_arns"]
    bucket = fn_lab.ctx.outputs_of("s3")["bucket"]
    lam = lambda_client()
    logs = boto3.client("logs", region_name=REGION)
    for key, name in names(cfg).items():
        got = lam.get_function(FunctionName=name)
        conf = got["Configuration"]
        assert conf["Runtime"] == "python3.12"
        assert conf["Handler"] == "handler.lambda_handler"
        assert conf["MemorySize"] == 256 and conf["Timeout"] == 10
        assert conf["Role"] == roles[key]  # each function its own least-privilege role
        assert conf["TracingConfig"] == {"Mode": "Active"}
        assert conf["Environment"]["Variables"] == {
            "USERS_TABLE": "microservices-users",
            "SESSIONS_TABLE": "microservices-sessions",
            "STATIC_BUCKET": bucket,
            "SESSION_TTL_HOURS": "24",
            "ALLOWED_ORIGINS": "*",
            "NOTIFICATIONS_PREFIX": "notifications/",
        }
        assert conf["CodeSha256"] == code_sha256(function_zip(cfg, key))
        assert got["Tags"]["msctl:lab"] == cfg.lab and got["Tags"]["msctl:step"] == "lambda"
        groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}")["logGroups"]
        (group,) = [g for g in groups if g["logGroupName"] == f"/aws/lambda/{name}"]
        assert group["retentionInDays"] == cfg.cloudwatch.log_retention_days

    handler = tmp_path / "functions" / "users" / "handler.py"
    handler.write_text(handler.read_text() + "\n# a change\n")
    plan = fn_lab.run("plan", ["lambda"])
    changes = fn_lab.changes(plan, "lambda")
    assert [(c.action, c.kind, c.name) for c in changes] == [
        ("update", "lambda-function", "microservices-users")
    ]
    assert changes[0].detail.startswith("code ")
    calls = ParamRecorder(fn_lab)
    fn_lab.run("apply", ["lambda"])
    assert calls.of("UpdateFunctionCode") == ["microservices-users"]
    assert calls.of("UpdateFunctionConfiguration") == []
    deployed = lam.get_function(FunctionName="microservices-users")["Configuration"]
    assert deployed["CodeSha256"] == code_sha256(function_zip(cfg, "users"))
    assert fn_lab.changes(fn_lab.run("plan", ["lambda"]), "lambda") == []


def _failing(monkeypatch, client, operation: str, code: str, message: str, times: int = 2):
    """Make the step's client answer `code` for the first `times` calls, then call through."""
    real = getattr(type(client), operation).__get__(client)  # the unpatched method
    attempts = []

    def flaky(**kwargs):
        attempts.append(kwargs.get("FunctionName"))
        if len(attempts) <= times:
            raise ClientError({"Error": {"Code": code, "Message": message}}, operation)
        return real(**kwargs)

    monkeypatch.setattr(client, operation, flaky)
    return attempts


def test_a_memory_change_updates_configuration_only_waiting_out_conflicts(fn_lab, monkeypatch):
    fn_lab.run("apply", ["lambda"])
    cfg = fn_lab.config
    use_config(
        fn_lab,
        cfg.model_copy(update={"lambda_": cfg.lambda_.model_copy(update={"memory_mb": 512})}),
    )
    plan = fn_lab.run("plan", ["lambda"])
    assert {(c.action, c.name, c.detail) for c in fn_lab.changes(plan, "lambda")} == {
        ("update", n, "memory 256 -> 512") for n in names(cfg).values()
    }
    calls = ParamRecorder(fn_lab)
    # AWS refuses an update while another is in progress: the step retries it.
    _failing(
        monkeypatch,
        fn_lab.ctx.clients.get("lambda"),
        "update_function_configuration",
        "ResourceConflictException",
        "The operation cannot be performed at this time. An update is in progress",
    )
    fn_lab.run("apply", ["lambda"])
    assert sorted(calls.of("UpdateFunctionConfiguration")) == sorted(names(cfg).values())
    assert calls.of("UpdateFunctionCode") == []
    lam = lambda_client()
    for name in names(cfg).values():
        assert lam.get_function(FunctionName=name)["Configuration"]["MemorySize"] == 512
    waits = [e.message for e in fn_lab.events if e.kind == "wait" and e.step == "lambda"]
    assert any("ResourceConflictException" in m for m in waits)
    assert fn_lab.changes(fn_lab.run("plan", ["lambda"]), "lambda") == []


def test_create_retries_only_while_the_new_role_is_not_assumable(fn_lab, monkeypatch):
    fn_lab.run("apply", ["iam"])
    client = fn_lab.ctx.clients.get("lambda")
    attempts = _failing(
        monkeypatch,
        client,
        "create_function",
        "InvalidParameterValueException",
        "Unzipped size must be smaller than 262144000 bytes",
        times=1,
    )
    result = fn_lab.run("apply", ["lambda"], expect_ok=False)
    assert "Unzipped size" in result.results["lambda"].error
    assert attempts == ["microservices-auth"]  # another InvalidParameterValue: not retried

    attempts = _failing(
        monkeypatch, client, "create_function", "InvalidParameterValueException", NOT_ASSUMABLE
    )
    fn_lab.run("apply", ["lambda"])
    assert attempts[:3] == ["microservices-auth"] * 3
    listed = {f["FunctionName"] for f in lambda_client().list_functions()["Functions"]}
    assert listed == set(names(fn_lab.config).values())
    waits = [e.message for e in fn_lab.events if e.kind == "wait" and e.step == "lambda"]
    assert any("propagating the new role" in m and "InvalidParameterValue" in m for m in waits)
