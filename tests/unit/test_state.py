"""Tests for msctl.state.StateStore."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import msctl.state as state_mod
from msctl.state import (
    REBUILD_HINT,
    SCHEMA_VERSION,
    StateCorrupt,
    StateError,
    StateLocked,
    StateStore,
    check_no_secrets,
)

LAB = "day21"
SRC_DIR = str(Path(state_mod.__file__).resolve().parents[1])


def wait_until(condition, what: str, limit: float = 30.0) -> None:
    """Poll ``condition`` until it holds; ``limit`` is only a safety net against hangs."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def run_python(code: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC_DIR + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def make_store(tmp_path: Path) -> StateStore:
    return StateStore(tmp_path / "state", LAB)


def populated(tmp_path: Path) -> StateStore:
    store = make_store(tmp_path)
    store.set_meta(target="local", region="us-east-1")
    store.record_resource("vpc", "vpc", "vpc-123", "arn:aws:ec2:::vpc/vpc-123")
    store.set_outputs("vpc", {"vpc_id": "vpc-123", "subnets": ["subnet-1", "subnet-2"]})
    store.set_status("vpc", "applied")
    return store


# --------------------------------------------------------------- round trip


def test_paths(tmp_path):
    store = make_store(tmp_path)
    assert store.path == tmp_path / "state" / f"{LAB}.json"
    assert store.lock_path == tmp_path / "state" / f"{LAB}.lock"


def test_missing_file_is_empty_state(tmp_path):
    store = make_store(tmp_path)
    store.load()
    assert not store.exists()
    assert store.steps() == []
    assert store.meta() == {}
    assert store.resources("vpc") == {}
    assert store.resource_id("vpc", "vpc") is None
    assert store.outputs("vpc") == {}
    assert store.status("vpc") == (None, None)
    assert store.open_intents() == []
    assert store.snapshot() == {"meta": {}, "steps": {}, "journal": []}
    assert not store.state_dir.exists(), "reading must not create anything"


def test_round_trip_every_method(tmp_path):
    store = make_store(tmp_path)
    store.set_meta(target="local", endpoint="http://127.0.0.1:5000", region="us-east-1")
    store.set_meta(emulator_id="abc")
    store.record_resource("vpc", "vpc", "vpc-1", "arn:vpc-1")
    store.record_resource("vpc", "igw", "igw-1")
    store.record_resource("sg", "alb", "sg-1")
    store.set_outputs("vpc", {"vpc_id": "vpc-1", "subnets": {"a": "subnet-a"}})
    store.set_status("vpc", "applied")
    store.set_status("sg", "failed", "DependencyViolation")
    intent = store.journal_intent("sg", "ecs", "create", token="tok-1")
    assert store.exists()

    again = make_store(tmp_path)
    again.load()
    assert again.meta() == {
        "target": "local",
        "endpoint": "http://127.0.0.1:5000",
        "region": "us-east-1",
        "emulator_id": "abc",
    }
    assert again.steps() == ["sg", "vpc"]
    assert again.resources("vpc") == {
        "vpc": {"id": "vpc-1", "arn": "arn:vpc-1"},
        "igw": {"id": "igw-1", "arn": None},
    }
    assert again.resource_id("vpc", "igw") == "igw-1"
    assert again.resource_id("vpc", "nat") is None
    assert again.outputs("vpc") == {"vpc_id": "vpc-1", "subnets": {"a": "subnet-a"}}
    assert again.status("vpc") == ("applied", None)
    assert again.status("sg") == ("failed", "DependencyViolation")
    [entry] = again.open_intents()
    assert entry["id"] == intent
    snap = again.snapshot()
    assert snap == store.snapshot()
    assert set(snap) == {"meta", "steps", "journal"}
    assert set(snap["steps"]["vpc"]) == {"resources", "outputs", "status", "reason", "updated_at"}

    again.set_outputs("vpc", {"vpc_id": "vpc-2"})  # replaces, does not merge
    again.forget_id("vpc", "igw-1")
    again.forget_id("vpc", "igw-never-recorded")  # no-op
    again.clear_step("sg")
    third = make_store(tmp_path)
    assert third.outputs("vpc") == {"vpc_id": "vpc-2"}
    assert third.resources("vpc") == {"vpc": {"id": "vpc-1", "arn": "arn:vpc-1"}}
    assert third.steps() == ["vpc"]
    assert third.open_intents() == [], "clear_step drops the step's journal entries"

    third.delete()
    assert not third.exists()
    assert third.steps() == []
    third.delete()  # absent is fine
    fourth = make_store(tmp_path)
    assert fourth.snapshot() == {"meta": {}, "steps": {}, "journal": []}


def test_returned_values_are_copies(tmp_path):
    store = populated(tmp_path)
    store.outputs("vpc")["subnets"].append("subnet-evil")
    store.resources("vpc")["vpc"]["id"] = "changed"
    store.meta()["target"] = "aws"
    store.snapshot()["steps"].clear()
    assert store.outputs("vpc")["subnets"] == ["subnet-1", "subnet-2"]
    assert store.resource_id("vpc", "vpc") == "vpc-123"
    assert store.meta()["target"] == "local"
    assert store.steps() == ["vpc"]
    given = {"nested": {"x": 1}}
    store.set_outputs("s3", given)
    given["nested"]["x"] = 2
    assert store.outputs("s3") == {"nested": {"x": 1}}


def test_file_format_permissions_and_checksum(tmp_path):
    store = populated(tmp_path)
    assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    text = store.path.read_text()
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True) + "\n"
    assert doc["schema"] == SCHEMA_VERSION
    assert (
        doc["checksum"]
        == "sha256:"
        + hashlib.sha256(
            json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )


# --------------------------------------------------------------- atomic save


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    store = populated(tmp_path)
    before = store.path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_mod.os, "replace", boom)
    with pytest.raises(StateError, match="cannot save state file.*No space left"):
        store.record_resource("vpc", "nat", "nat-1")
    with pytest.raises(StateError):
        store.set_outputs("vpc", {"vpc_id": "other"})
    monkeypatch.undo()

    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.state_dir.iterdir()) == [f"{LAB}.json"]
    # in memory, the failed changes did not happen either
    assert store.resource_id("vpc", "nat") is None
    assert store.outputs("vpc")["vpc_id"] == "vpc-123"
    fresh = make_store(tmp_path)
    fresh.load()
    assert fresh.resource_id("vpc", "vpc") == "vpc-123"
    assert fresh.resource_id("vpc", "nat") is None
    # and the store still works once the disk recovers
    store.record_resource("vpc", "nat", "nat-1")
    assert make_store(tmp_path).resource_id("vpc", "nat") == "nat-1"


def test_failed_fsync_leaves_no_temp_file(tmp_path, monkeypatch):
    store = populated(tmp_path)
    before = store.path.read_bytes()

    def boom(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(state_mod.os, "fsync", boom)
    with pytest.raises(StateError, match="Input/output error"):
        store.set_status("vpc", "failed")
    monkeypatch.undo()
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.state_dir.iterdir()) == [f"{LAB}.json"]


# --------------------------------------------------------------- corruption


def _valid_bytes(tmp_path: Path) -> bytes:
    return populated(tmp_path).path.read_bytes()


def _checksum_mismatch(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["body"]["meta"]["target"] = "aws"
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _future_schema(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["schema"] = SCHEMA_VERSION + 1
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def _missing_body(raw: bytes) -> bytes:
    doc = json.loads(raw)
    del doc["body"]
    return json.dumps(doc).encode()


CORRUPTIONS = {
    "truncated": (lambda raw: raw[: len(raw) // 2], "not valid JSON"),
    "garbage": (lambda raw: b"\x00\xffnot json at all", "not valid JSON"),
    "empty": (lambda raw: b"", "not valid JSON"),
    "not an object": (lambda raw: b"[1, 2, 3]", "not an object"),
    "checksum mismatch": (_checksum_mismatch, "checksum mismatch"),
    "future schema": (_future_schema, "newer msctl"),
    "missing body": (_missing_body, "missing key"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_file_is_refused_and_left_alone(tmp_path, kind):
    damage, problem = CORRUPTIONS[kind]
    bad = damage(_valid_bytes(tmp_path))
    store = make_store(tmp_path)
    store.path.write_bytes(bad)

    with pytest.raises(StateCorrupt) as info:
        store.load()
    message = str(info.value)
    assert str(store.path) in message
    assert problem in message
    assert REBUILD_HINT in message
    assert "msctl status --rebuild-state" in message
    assert "\n" not in message

    # nothing the engine might do next overwrites it
    with pytest.raises(StateCorrupt):
        store.record_resource("vpc", "vpc", "vpc-new")
    with pytest.raises(StateCorrupt):
        store.steps()
    with pytest.raises(StateCorrupt):
        make_store(tmp_path).set_meta(target="local")
    assert store.path.read_bytes() == bad
    assert sorted(p.name for p in store.state_dir.iterdir()) == [f"{LAB}.json"]


def test_move_aside_keeps_the_old_file(tmp_path):
    store = populated(tmp_path)
    before = store.path.read_bytes()
    first, second = store.move_aside(), store.move_aside()
    assert first.startswith(f"{store.path}.bak-") and second is None
    assert Path(first).read_bytes() == before
    assert not store.exists() and store.steps() == []
    store.set_meta(target="local")
    assert store.move_aside() != first, "a second backup never replaces the first"
    assert Path(first).read_bytes() == before


def test_replace_takes_a_whole_state(tmp_path):
    source = populated(tmp_path / "a")
    target = populated(tmp_path / "b")
    target.set_outputs("sg", {"alb": "sg-1"})
    target.replace(source.snapshot())
    assert target.path.read_bytes() == source.path.read_bytes()
    with pytest.raises(ValueError, match="looks like a secret"):
        target.replace(
            {"meta": {}, "steps": {"rds": {"outputs": {"password": "x"}}}, "journal": []}
        )
    assert target.path.read_bytes() == source.path.read_bytes()


def test_state_errors_are_state_errors():
    assert issubclass(StateLocked, StateError)
    assert issubclass(StateCorrupt, StateError)


# --------------------------------------------------------------- lock

LOCK_AND_REPORT = """
    import sys
    from pathlib import Path
    from msctl.state import StateLocked, StateStore
    try:
        with StateStore(Path(sys.argv[1]), sys.argv[2]).locked("down"):
            print("acquired")
    except StateLocked as e:
        print(e)
        sys.exit(3)
"""

HOLD_LOCK = """
    import sys, time
    from pathlib import Path
    from msctl.state import StateStore
    with StateStore(Path(sys.argv[1]), sys.argv[2]).locked("up --parallel 8"):
        print("holding", flush=True)
        time.sleep(600)
"""


def _argv_code(code: str, store: StateStore) -> str:
    return code.replace("sys.argv[1]", repr(str(store.state_dir))).replace(
        "sys.argv[2]", repr(store.lab)
    )


def _lock_holder_pid(store: StateStore) -> int | None:
    try:
        return json.loads(store.lock_path.read_text()).get("pid")
    except (OSError, ValueError):
        return None


def test_lock_blocks_another_process_at_once(tmp_path):
    store = make_store(tmp_path)
    with store.locked("up"):
        holder = json.loads(store.lock_path.read_text())
        assert holder["pid"] == os.getpid()
        assert holder["command"] == "up"
        assert holder["host"] and holder["started_at"]

        proc = run_python(_argv_code(LOCK_AND_REPORT, store))
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 3, err
        assert f"lab '{LAB}' is locked by pid {os.getpid()} on {holder['host']}" in out
        assert "(up, started" in out
        assert "wait for it to finish or stop it" in out

    assert store.lock_path.read_text() == "", "holder info is cleared on release"
    proc = run_python(_argv_code(LOCK_AND_REPORT, store))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert out.strip() == "acquired"


def test_lock_released_when_holder_is_killed(tmp_path):
    store = make_store(tmp_path)
    holder = run_python(_argv_code(HOLD_LOCK, store))
    try:
        wait_until(lambda: _lock_holder_pid(store) == holder.pid, "the holder to take the lock")
        with pytest.raises(StateLocked) as info, store.locked("up"):
            pytest.fail("lock should have been refused")
        assert f"pid {holder.pid}" in str(info.value)
        assert "(up --parallel 8, started" in str(info.value)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL

    # the kernel dropped the flock with the process; stale holder info does not matter
    with store.locked("down"):
        assert _lock_holder_pid(store) == os.getpid()


def test_lock_in_process_and_reentrant(tmp_path):
    store = make_store(tmp_path)
    other = make_store(tmp_path)
    with store.locked("up"):
        with store.locked("up"):  # nested use by the same store is fine
            pass
        with pytest.raises(StateLocked, match=f"pid {os.getpid()}"), other.locked("status"):
            pass
        assert _lock_holder_pid(store) == os.getpid(), "still held after the nested exit"
    with other.locked("status"):
        pass
    assert stat.S_IMODE(store.lock_path.stat().st_mode) == 0o600


def test_lock_creates_state_dir(tmp_path):
    store = StateStore(tmp_path / "deep" / "state", LAB)
    with store.locked("up"):
        assert store.state_dir.is_dir()
    assert stat.S_IMODE(store.state_dir.stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d.write_text("x"), "is not a directory; move it away or pass another"),
        (lambda d: d.symlink_to(d.parent / "gone"), "is a symbolic link to "),
    ],
    ids=["file", "dangling-link"],
)
def test_unusable_state_dir_is_one_state_error(tmp_path, make, message):
    state_dir = tmp_path / "state"
    make(state_dir)
    store = StateStore(state_dir, LAB)
    for use in (store.load, store.exists, lambda: store.set_meta(a=1), lambda: store.locked("up").__enter__()):  # fmt: skip
        with pytest.raises(StateError) as err:
            use()
        assert str(err.value).startswith(f"state directory {state_dir} ")
        assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "gone").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_state_dir_is_one_state_error(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o500)
    with pytest.raises(StateError, match=f"cannot write in state directory {state_dir}: "):
        StateStore(state_dir, LAB).set_meta(a=1)
    with pytest.raises(StateError, match=f"cannot create state directory {state_dir / 'sub'}"):
        StateStore(state_dir / "sub", LAB).set_meta(a=1)


def test_a_huge_state_file_is_not_read_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(state_mod, "MAX_STATE_BYTES", 1000)
    store = make_store(tmp_path)
    store.set_meta(padding="x" * 2000)
    with pytest.raises(StateCorrupt, match="more than 1000 bytes"):
        make_store(tmp_path).load()


# --------------------------------------------------------------- journal


def test_journal_survives_crash_and_done_removes(tmp_path):
    store = make_store(tmp_path)
    first = store.journal_intent("vpc", "nat", "create", token="day21-nat")
    second = store.journal_intent("rds", "db", "create")
    done = store.journal_intent("vpc", "igw", "create")
    store.journal_done(done)
    # simulated crash: the process goes away, a new one opens the same state
    del store

    after = make_store(tmp_path)
    after.load()
    intents = after.open_intents()
    assert [e["id"] for e in intents] == [first, second]
    nat = intents[0]
    assert nat["step"] == "vpc"
    assert nat["logical"] == "nat"
    assert nat["action"] == "create"
    assert nat["token"] == "day21-nat"
    assert nat["pid"] == os.getpid()
    assert nat["at"]
    assert [e["id"] for e in after.open_intents("rds")] == [second]
    assert after.open_intents("sg") == []

    after.journal_done(first)
    after.journal_done(first)  # idempotent
    after.journal_done("no-such-entry")
    assert [e["id"] for e in make_store(tmp_path).open_intents()] == [second]


# --------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.set_outputs("rds", {"db": {"connection": {"Password": "hunter2"}}}),
        lambda s: s.set_outputs("rds", {"users": [{"master_password": "x"}]}),
        lambda s: s.set_outputs("iam", {"SecretString": "x"}),
        lambda s: s.set_outputs("iam", {"secret_value": "x"}),
        lambda s: s.set_outputs("ecs", {"tls": {"private_key": "-----BEGIN"}}),
        lambda s: s.set_outputs("apigw", {"auth_token": "x"}),
        lambda s: s.set_meta(session_token="x"),
        lambda s: s.record_resource("rds", "db_password", "x"),
    ],
)
def test_secret_guard_rejects(tmp_path, call):
    store = make_store(tmp_path)
    with pytest.raises(ValueError, match="looks like a secret"):
        call(store)
    assert not store.exists(), "nothing was written"


def test_secret_guard_names_the_key():
    with pytest.raises(ValueError, match=r"'outputs\.db\.users\[1\]\.Password'"):
        check_no_secrets({"db": {"users": [{}, {"Password": "x"}]}}, "outputs")


def test_secret_guard_accepts_arns_and_idempotency_tokens(tmp_path):
    store = make_store(tmp_path)
    ok = {
        "master_secret_arn": "arn:aws:secretsmanager:us-east-1:1:secret:db",
        "db": {"password_secret_arn": "arn:x", "SecretArn": "arn:y", "token_arn": "arn:z"},
        "client_token": "day21-vpc",
        "caller_reference": "day21-cf",
        "CallerReference": "day21-r53",
        "ClientToken": "day21-nat",
        "secret_name": "day21/db",
    }
    store.set_outputs("rds", ok)
    store.set_meta(client_token="t")
    store.record_resource("rds", "master_secret_arn", "arn:x")
    assert make_store(tmp_path).outputs("rds") == ok


# --------------------------------------------------------------- threads


def test_concurrent_threads_lose_nothing(tmp_path):
    store = make_store(tmp_path)
    threads_n, per_thread = 20, 5
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            step = f"step{n % 4}"
            for i in range(per_thread):
                entry = store.journal_intent(step, f"r{n}-{i}", "create")
                store.record_resource(step, f"r{n}-{i}", f"id-{n}-{i}")
                store.journal_done(entry)
            store.set_status(step, "applied")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    reloaded = make_store(tmp_path)
    reloaded.load()
    for n in range(threads_n):
        for i in range(per_thread):
            assert reloaded.resource_id(f"step{n % 4}", f"r{n}-{i}") == f"id-{n}-{i}"
    total = sum(len(reloaded.resources(s)) for s in reloaded.steps())
    assert total == threads_n * per_thread
    assert reloaded.open_intents() == []
    assert sorted(p.name for p in store.state_dir.iterdir()) == [f"{LAB}.json"]
