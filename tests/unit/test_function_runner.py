"""The local function runner: real handlers, from deployed zips, against a real emulator."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import multiprocessing
import os
import threading
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest

from msctl.local import emulator, functions
from msctl.local.functions import FunctionError, FunctionRunner

from .hostile import plant

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "lab" / "functions"

# Deployed zips by function name: the runner's code source (what `msctl up` packaged).
CODE: dict[str, bytes] = {}

ECHO = """
import os, sys

def lambda_handler(event, context):
    print("echo says", event)
    names = ("ONLY_A", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_ACCESS_KEY_ID", "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
             "AWS_LAMBDA_FUNCTION_VERSION", "LAMBDA_TASK_ROOT", "_HANDLER", "NO_PROXY", "no_proxy")
    return {
        "event": event,
        "env": {name: os.environ.get(name) for name in names},
        "env_keys": sorted(os.environ),
        "all_env": dict(os.environ),
        "sys_path0": sys.path[0],
        "cwd": os.getcwd(),
        "context": {
            "aws_request_id": context.aws_request_id,
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "log_group_name": context.log_group_name,
            "log_stream_name": context.log_stream_name,
            "remaining": context.get_remaining_time_in_millis(),
        },
    }
"""

STATE = """
import os

STATE = {}
COUNT = 0

def lambda_handler(event, context):
    global COUNT
    COUNT += 1
    STATE.update(event.get("set") or {})
    return {
        "state": STATE,
        "count": COUNT,
        "pid": os.getpid(),
        "i": event.get("i"),
        "only": {k: v for k, v in os.environ.items() if k.startswith("ONLY_")},
    }
"""

MISBEHAVE = """
import decimal, logging, os, signal, time

def lambda_handler(event, context):
    action = event.get("do")
    if action == "raise":
        logging.getLogger("lab").error("about to fail")
        raise ValueError("boom")
    if action == "sleep":
        print("sleeping")
        time.sleep(event["seconds"])
    if action == "exit":
        os._exit(3)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "set":
        return {1, 2}
    if action == "decimal":
        return {"n": decimal.Decimal("2"), "x": decimal.Decimal("1.5")}
    return {"pid": os.getpid()}
"""

DYNAMO = """
import boto3

def lambda_handler(event, context):
    ddb = boto3.client("dynamodb")
    ddb.create_table(
        TableName=event["table"],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    ddb.put_item(TableName=event["table"], Item={"id": {"S": "k1"}, "rid": {"S": context.aws_request_id}})
    return {"rid": context.aws_request_id}
"""


def make_zip(files: dict[str, str | bytes]) -> bytes:
    """A deterministic zip: sorted entries, fixed timestamps and modes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            archive.writestr(info, files[name])
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    state = tmp_path_factory.mktemp("emulator")
    info, _ = emulator.start(state)
    try:
        yield info
    finally:
        emulator.stop(state)


@pytest.fixture(scope="module")
def client(emu):
    def make(service: str):
        return boto3.client(
            service,
            endpoint_url=emu.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    return make


@pytest.fixture(scope="module")
def deploy(client):
    role = client("iam").create_role(
        RoleName="fn-runner-test",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    lam = client("lambda")

    def deploy(name, files, handler="handler.lambda_handler", timeout=3, env=None, memory=128):
        files = {"handler.py": files} if isinstance(files, str) else files
        code = make_zip(files)
        found = lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=role,
            Handler=handler,
            Code={"ZipFile": code},
            Timeout=timeout,
            MemorySize=memory,
            Environment={"Variables": env or {}},
        )
        assert found["CodeSha256"] == sha(code)
        CODE[name] = code
        return found

    return deploy


@pytest.fixture(scope="module")
def runner(emu, tmp_path_factory):
    with FunctionRunner(
        emu.endpoint, REGION, tmp_path_factory.mktemp("functions"), code_source=CODE.get
    ) as runner:
        yield runner


@pytest.fixture(scope="module")
def misbehave(deploy):
    return deploy("misbehave", MISBEHAVE, timeout=1)["FunctionArn"]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- tests -------------------------------------------------------------------------------


def test_echo_env_context_and_log(emu, deploy, runner, monkeypatch):
    monkeypatch.setenv("MSCTL_TEST_CANARY", "must not leak")
    arn = deploy("echo", ECHO, timeout=7, memory=256, env={"ONLY_A": "a"})["FunctionArn"]

    out = runner.invoke("echo", {"hello": ["world", 1]})

    spec = runner.load("echo")
    task_root = str(runner.work_dir / "echo" / base64.b64decode(spec.code_sha256).hex())
    assert spec.arn == arn and spec.timeout == 7 and spec.memory_mb == 256
    assert spec.environment == {"ONLY_A": "a"} and spec.handler == "handler.lambda_handler"
    assert out["event"] == {"hello": ["world", 1]}
    env = out["env"]
    assert env["ONLY_A"] == "a"
    assert env["AWS_ENDPOINT_URL"] == emu.endpoint
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == REGION
    assert env["AWS_ACCESS_KEY_ID"] == "testing"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "echo"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["LAMBDA_TASK_ROOT"] == task_root == out["sys_path0"] == out["cwd"]
    assert env["_HANDLER"] == "handler.lambda_handler"
    for variable in ("NO_PROXY", "no_proxy"):
        assert {"127.0.0.1", "localhost"} <= set(env[variable].split(","))
    assert "MSCTL_TEST_CANARY" not in out["env_keys"]
    ctx = out["context"]
    assert uuid.UUID(ctx["aws_request_id"]).version == 4
    assert ctx["function_name"] == "echo" and ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == arn
    assert ctx["memory_limit_in_mb"] == "256"  # a string, as in Lambda
    assert ctx["log_group_name"] == "/aws/lambda/echo" and ctx["log_stream_name"]
    assert 0 < ctx["remaining"] <= 7000

    # By ARN: the same function, the same warm worker pool.
    again = runner.invoke(arn, {"n": 2})
    assert again["event"] == {"n": 2} and again["context"]["invoked_function_arn"] == arn
    assert again["context"]["aws_request_id"] != ctx["aws_request_id"]

    log = (runner.work_dir / "echo.log").read_text()
    assert "echo says {'hello': ['world', 1]}" in log
    assert f"START RequestId: {ctx['aws_request_id']} Version: $LATEST" in log
    assert f"REPORT RequestId: {ctx['aws_request_id']}\tDuration: " in log


def test_hostile_environment_from_the_emulator_is_not_passed(deploy, runner, tmp_path, caplog):
    hostile, markers = plant(tmp_path)
    env = {**hostile, "ONLY_A": "kept", "AWS_ENDPOINT_URL_DYNAMODB": "http://attacker.example"}
    deploy("hostile", ECHO, env=env)
    with caplog.at_level(logging.WARNING, logger="msctl.local"):
        out = runner.invoke("hostile", {})

    assert sorted(p.name for p in markers.iterdir()) == []  # no attacker code ran
    assert out["env"]["ONLY_A"] == "kept"
    assert out["all_env"].get("HOME") == os.environ.get("HOME")  # msctl's, not the emulator's
    assert not [key for key, value in hostile.items() if out["all_env"].get(key) == value]
    assert "AWS_ENDPOINT_URL_DYNAMODB" not in out["env_keys"]
    refused = "'PYTHONPATH', 'HOME', 'BASH_ENV', 'LD_PRELOAD', 'AWS_ENDPOINT_URL_DYNAMODB'"
    assert f"function hostile: not passing {refused}" in caplog.text
    assert str(tmp_path) not in caplog.text and "attacker.example" not in caplog.text


def test_handler_must_be_in_the_deployed_code(deploy, runner):
    deploy("foreign-handler", STATE, handler="json.dumps")
    with pytest.raises(FunctionError) as err:
        runner.invoke("foreign-handler", {})
    assert err.value.error_type == "Runtime.ImportModuleError"
    assert err.value.message == "Unable to import module 'json': no json in the deployed code"


def test_isolation_between_functions_and_warm_reuse(deploy, runner):
    deploy("iso-a", STATE, env={"ONLY_A": "1"})
    deploy("iso-b", STATE, env={"ONLY_B": "2"})

    a = [runner.invoke("iso-a", {"set": {"x": n}}) for n in range(4)]
    b = runner.invoke("iso-b", {})

    assert a[-1]["state"] == {"x": 3} and a[-1]["only"] == {"ONLY_A": "1"}
    assert b["state"] == {} and b["only"] == {"ONLY_B": "2"} and b["count"] == 1
    assert b["pid"] not in {r["pid"] for r in a}
    # Warm starts: each worker imported the module once; its counter keeps going.
    counts: dict[int, list[int]] = {}
    for result in a:
        counts.setdefault(result["pid"], []).append(result["count"])
    assert all(c == list(range(1, len(c) + 1)) for c in counts.values())
    assert max(len(c) for c in counts.values()) >= 2


def test_unhandled_error_is_raised_and_logged(misbehave, runner, caplog):
    pid = runner.invoke(misbehave, {})["pid"]
    with (
        caplog.at_level(logging.ERROR, logger="msctl.functions"),
        pytest.raises(FunctionError) as err,
    ):
        runner.invoke(misbehave, {"do": "raise"})
    assert (err.value.kind, err.value.error_type, err.value.message) == (
        "Unhandled",
        "ValueError",
        "boom",
    )
    assert err.value.request_id
    assert "Traceback" in caplog.text and "ValueError: boom" in caplog.text
    # The worker survives a handled-by-runtime exception (same warm process).
    assert runner.invoke(misbehave, {})["pid"] == pid
    log = (runner.work_dir / "misbehave.log").read_text()
    assert "[ERROR] ValueError: boom" in log
    assert f"\t{err.value.request_id}\tabout to fail" in log


def test_timeout_kills_the_worker_and_the_next_call_works(misbehave, runner):
    pid = runner.invoke(misbehave, {})["pid"]
    with pytest.raises(FunctionError) as err:
        runner.invoke(misbehave, {"do": "sleep", "seconds": 30})
    assert err.value.kind == "Timeout"
    assert err.value.message == "Task timed out after 1.00 seconds"
    assert gone(pid)
    after = runner.invoke(misbehave, {})["pid"]
    assert after != pid

    with pytest.raises(FunctionError) as err:
        runner.invoke(misbehave, {"do": "sleep", "seconds": 30}, timeout=0.25)
    assert err.value.message == "Task timed out after 0.25 seconds"
    assert runner.invoke(misbehave, {"do": "decimal"}) == {"n": 2, "x": 1.5}
    log = (runner.work_dir / "misbehave.log").read_text()
    assert "Task timed out after 1.00 seconds" in log


@pytest.mark.parametrize(
    ("action", "status"), [("exit", "exit status 3"), ("kill", "signal: SIGKILL")]
)
def test_crashed_worker_is_replaced(misbehave, runner, action, status):
    pid = runner.invoke(misbehave, {})["pid"]
    with pytest.raises(FunctionError) as err:
        runner.invoke(misbehave, {"do": action})
    assert (err.value.kind, err.value.error_type) == ("RuntimeError", "Runtime.ExitError")
    assert err.value.message == f"Runtime exited with error: {status}"
    assert gone(pid)
    assert runner.invoke(misbehave, {})["pid"] != pid


def test_result_must_be_json(misbehave, runner):
    with pytest.raises(FunctionError) as err:
        runner.invoke(misbehave, {"do": "set"})
    assert (err.value.kind, err.value.error_type) == ("RuntimeError", "Runtime.MarshalError")
    assert "Object of type set is not JSON serializable" in err.value.message


def test_bad_handler_paths(deploy, runner):
    deploy("no-module", STATE, handler="nope.lambda_handler")
    deploy("no-function", STATE, handler="handler.missing")
    with pytest.raises(FunctionError) as err:
        runner.invoke("no-module", {})
    assert (err.value.kind, err.value.error_type) == ("RuntimeError", "Runtime.ImportModuleError")
    assert "Unable to import module 'nope'" in err.value.message
    with pytest.raises(FunctionError) as err:
        runner.invoke("no-function", {})
    assert (err.value.kind, err.value.error_type) == ("RuntimeError", "Runtime.HandlerNotFound")
    with pytest.raises(FunctionError) as err:
        runner.invoke("does-not-exist", {})
    assert (err.value.kind, err.value.error_type) == ("RuntimeError", "ResourceNotFoundException")


def test_unsafe_zip_is_refused(deploy, runner):
    deploy("unsafe", {"handler.py": STATE, "../escape.py": "x = 1\n"})
    with pytest.raises(FunctionError) as err:
        runner.invoke("unsafe", {})
    assert err.value.kind == "RuntimeError" and "unsafe entry '../escape.py'" in err.value.message
    assert not (runner.work_dir / "unsafe" / "escape.py").exists()
    assert not (runner.work_dir / "escape.py").exists()


def test_boto3_in_handlers_reaches_the_emulator(deploy, runner, client):
    deploy("dynamo", DYNAMO)
    rid = runner.invoke("dynamo", {"table": "runner-made"})["rid"]
    item = client("dynamodb").get_item(TableName="runner-made", Key={"id": {"S": "k1"}})
    assert item["Item"]["rid"] == {"S": rid}


def test_redeploys_are_picked_up_and_drift_is_refused(emu, deploy, client, tmp_path, monkeypatch):
    monkeypatch.setattr(functions, "CHECK_INTERVAL", 0.0)  # check the emulator on every call
    lam = client("lambda")
    deploy("drift", "def lambda_handler(event, context):\n    return 'v1'\n")
    with FunctionRunner(emu.endpoint, REGION, tmp_path, code_source=CODE.get) as runner:
        assert runner.invoke("drift", {}) == "v1"

        # A proper redeploy: the emulator and the local package agree on v2.
        CODE["drift"] = make_zip({"handler.py": "def lambda_handler(event, context):\n    return 'v2'\n"})  # fmt: skip
        lam.update_function_code(FunctionName="drift", ZipFile=CODE["drift"])
        assert runner.invoke("drift", {}) == "v2"
        lam.update_function_configuration(FunctionName="drift", Environment={"Variables": {"V": "3"}})  # fmt: skip
        assert runner.invoke("drift", {}) == "v2"
        assert runner.load("drift").environment == {"V": "3"}

        # Deployed behind msctl's back: the local package no longer matches CodeSha256.
        other = make_zip({"handler.py": "def lambda_handler(event, context):\n    return 'v3'\n"})
        deployed = lam.update_function_code(FunctionName="drift", ZipFile=other)["CodeSha256"]
        with pytest.raises(FunctionError) as err:
            runner.invoke("drift", {})
        assert err.value.kind == "RuntimeError"
        assert f"doesn't match its CodeSha256 {deployed}" in err.value.message
        assert f"the local package has CodeSha256 {sha(CODE['drift'])}" in err.value.message
        assert "is not served by the emulator" in err.value.message  # moto's Code.Location
        assert "run msctl up" in err.value.message
        with pytest.raises(FunctionError):  # and v2 is not served meanwhile
            runner.invoke("drift", {})


def test_cached_zip_is_verified(emu, deploy, tmp_path):
    deploy("cached", "def lambda_handler(event, context):\n    return 'cached'\n")
    with FunctionRunner(emu.endpoint, REGION, tmp_path, code_source=CODE.get) as runner:
        spec = runner.load("cached")
    cached = tmp_path / "cached" / (base64.b64decode(spec.code_sha256).hex() + ".zip")
    assert cached.read_bytes() == CODE["cached"]

    # No code source: the verified cached zip is enough.
    with FunctionRunner(emu.endpoint, REGION, tmp_path) as runner:
        assert runner.invoke("cached", {}) == "cached"

    cached.write_bytes(make_zip({"handler.py": "def lambda_handler(e, c):\n    return 'evil'\n"}))
    with (
        FunctionRunner(emu.endpoint, REGION, tmp_path) as runner,
        pytest.raises(FunctionError) as err,
    ):
        runner.load("cached")
    assert "the cached zip has CodeSha256" in err.value.message
    assert not cached.exists()  # the tampered copy is dropped


def test_concurrent_invocations(deploy, runner):
    deploy("conc-a", STATE)
    deploy("conc-b", STATE)
    barrier = threading.Barrier(20)
    results: dict[int, object] = {}

    def call(i: int) -> None:
        barrier.wait()
        try:
            results[i] = runner.invoke("conc-a" if i % 2 else "conc-b", {"i": i})
        except Exception as exc:  # noqa: BLE001 - reported by the assert below
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == list(range(20))
    assert all(isinstance(r, dict) and r["i"] == i for i, r in results.items()), results
    pids_a = {results[i]["pid"] for i in range(1, 20, 2)}
    pids_b = {results[i]["pid"] for i in range(0, 20, 2)}
    assert len(pids_a) <= 2 and len(pids_b) <= 2 and not pids_a & pids_b


def test_close_stops_every_worker(emu, deploy, misbehave, tmp_path):
    deploy("closing", STATE)
    runner = FunctionRunner(emu.endpoint, REGION, tmp_path, code_source=CODE.get)
    runner.warm("closing")
    pids = {runner.invoke("closing", {})["pid"], runner.invoke(misbehave, {})["pid"]}
    failures = []

    def stuck() -> None:
        try:
            runner.invoke(misbehave, {"do": "sleep", "seconds": 30}, timeout=60)
        except FunctionError as exc:
            failures.append(exc)

    thread = threading.Thread(target=stuck)
    thread.start()
    log = tmp_path / "misbehave.log"
    while "sleeping" not in log.read_text():  # until the handler is busy
        thread.join(0.05)
    workers = _workers_in(tmp_path)
    assert pids <= set(workers) and len(workers) == 3  # closing: 2 (warmed), misbehave: 1
    runner.close()
    thread.join(10)
    assert not thread.is_alive()
    assert [f.kind for f in failures] == ["RuntimeError"]
    runner.close()  # idempotent
    assert all(gone(pid) for pid in workers)  # reaped, not zombies
    assert multiprocessing.active_children() == []
    with pytest.raises(FunctionError, match="closed"):
        runner.invoke("closing", {})


def _workers_in(work_dir: Path) -> list[int]:
    """Live child processes of this test process working in ``work_dir``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            cwd = os.readlink(proc / "cwd")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and cwd.startswith(str(work_dir)):
            found.append(int(proc.name))
    return found


def test_lab_code_source_packages_like_the_lambda_step():
    from msctl.build.lambda_package import function_zip
    from msctl.config import load_config

    config = load_config(ROOT / "config" / "lab.yaml")
    source = functions.lab_code_source(config)
    key, function = next(iter(config.lambda_.functions.items()))
    assert source(function.name) == function_zip(config, key)
    assert source("not-a-lab-function") is None


# --- the lab's real auth function ---------------------------------------------------------


def _proxy_event(method: str, path: str, body=None, headers=None) -> dict:
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "queryStringParameters": None,
        "pathParameters": None,
        "requestContext": {"requestId": str(uuid.uuid4()), "stage": "prod"},
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def test_lab_auth_register_and_login(deploy, runner, client):
    ddb = client("dynamodb")
    for table, key in (("lab-users", "userId"), ("lab-sessions", "sessionId")):
        ddb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": key, "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
    files = {
        "handler.py": (LAB / "auth" / "handler.py").read_bytes(),
        "labcommon.py": (LAB / "_shared" / "labcommon.py").read_bytes(),
    }
    env = {
        "USERS_TABLE": "lab-users",
        "SESSIONS_TABLE": "lab-sessions",
        "PASSWORD_HASH_ITERATIONS": "1000",
        "ALLOWED_ORIGINS": "*",
    }
    deploy("lab-auth", files, timeout=10, env=env)
    credentials = {"email": "ada@example.com", "password": "correct horse battery"}

    registered = runner.invoke(
        "lab-auth", _proxy_event("POST", "/auth/register", {**credentials, "name": "Ada"})
    )
    assert registered["statusCode"] == 202, registered
    assert json.loads(registered["body"])["email"] == "ada@example.com"

    again = runner.invoke("lab-auth", _proxy_event("POST", "/auth/register", {**credentials, "name": "Ada"}))  # fmt: skip
    assert (again["statusCode"], again["body"]) == (202, registered["body"])  # tells nothing

    login = runner.invoke("lab-auth", _proxy_event("POST", "/auth/login", credentials))
    assert login["statusCode"] == 200, login
    session = json.loads(login["body"])
    user = session["user"]
    assert session["token"] and user["email"] == "ada@example.com" and "passwordHash" not in user

    bearer = {"Authorization": f"Bearer {session['token']}"}
    verified = runner.invoke("lab-auth", _proxy_event("GET", "/auth/verify", headers=bearer))
    assert verified["statusCode"] == 200 and json.loads(verified["body"])["valid"] is True
    stored = ddb.get_item(TableName="lab-sessions", Key={"sessionId": {"S": session["token"]}})
    assert stored["Item"]["userId"] == {"S": user["userId"]}
