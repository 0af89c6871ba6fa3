"""The S3 state backend (moto in-process): the same StateStore API and document as the local
one, writes conditional on the ETag read, the lock object, unlock, the bucket's init/check,
and push/pull between backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from moto import mock_aws

from msctl.state import StateCorrupt, StateError, StateLocked, StateStore, encode, open_store
from msctl.state_ops import PROPERTIES, init_bucket, inspect_bucket, transfer
from msctl.state_s3 import S3StateStore, parse_url

BUCKET = "team-state"
URL = f"s3://{BUCKET}/labs"
LAB = "alice"


@pytest.fixture
def s3(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def store(s3, lab: str = LAB) -> S3StateStore:
    found = open_store(URL, lab, client=s3)
    assert isinstance(found, S3StateStore)
    return found


def stored(s3, key: str = f"labs/{LAB}.json") -> bytes:
    return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def fill(state) -> None:
    state.set_meta(target="aws", region="us-east-1")
    state.record_resource("vpc", "vpc", "vpc-1", "arn:vpc-1")
    state.set_outputs("vpc", {"vpc_id": "vpc-1", "subnets": ["subnet-a"]})
    state.set_status("vpc", "complete")
    state.journal_intent("sg", "alb", "create", token="alice-sg")


# --------------------------------------------------------------- locations


def test_open_store_picks_the_backend(tmp_path, s3):
    local = open_store(tmp_path, LAB)
    assert type(local) is StateStore and local.path == tmp_path / f"{LAB}.json"
    remote = store(s3)
    assert (remote.bucket, remote.key, remote.lock_key) == (
        BUCKET,
        "labs/alice.json",
        "labs/alice.lock",
    )
    assert remote.path == "s3://team-state/labs/alice.json"
    assert remote.lock_path == "s3://team-state/labs/alice.lock"
    assert remote.location == URL
    assert open_store(f"s3://{BUCKET}", LAB, client=s3).key == "alice.json"
    assert parse_url("s3://b-1.x/a/b/") == ("b-1.x", "a/b")
    for bad in ("s3://", "s3://UPPER/x", "s3://a/x", "s3://a..b/x"):
        with pytest.raises(StateError, match="is not s3://BUCKET/PREFIX"):
            parse_url(bad)
    with pytest.raises(StateError, match="unknown scheme"):
        open_store("gs://bucket/x", LAB)


# --------------------------------------------------------------- the document


def test_same_api_and_same_bytes_as_the_local_backend(tmp_path, s3):
    remote, local = store(s3), StateStore(tmp_path, LAB)
    assert not remote.exists()
    remote.load()
    assert remote.snapshot() == {"meta": {}, "steps": {}, "journal": []}
    for state in (remote, local):
        fill(state)
    again = store(s3)
    again.load()
    assert again.meta() == {"target": "aws", "region": "us-east-1"}
    assert again.resources("vpc") == {"vpc": {"id": "vpc-1", "arn": "arn:vpc-1"}}
    assert again.outputs("vpc")["subnets"] == ["subnet-a"]
    assert again.status("vpc") == ("complete", None)
    [intent] = again.open_intents()
    again.journal_done(intent["id"])
    again.forget_id("vpc", "vpc-1")
    again.clear_step("vpc")
    assert store(s3).snapshot() == {"meta": again.meta(), "steps": {}, "journal": []}

    local.load()
    remote.load()  # the same body gives the same bytes, checksum included
    local.replace(remote.snapshot())
    assert stored(s3) == local.path.read_bytes() == encode(remote.snapshot())
    remote.delete()
    assert not remote.exists() and store(s3).steps() == []
    remote.delete()  # absent is fine


def test_the_secret_guard_applies(s3):
    remote = store(s3)
    with pytest.raises(ValueError, match="looks like a secret"):
        remote.set_outputs("rds", {"master_password": "hunter2"})
    with pytest.raises(ValueError, match="looks like a secret"):
        remote.replace({"meta": {"session_token": "x"}, "steps": {}, "journal": []})
    assert not remote.exists()


def test_a_corrupt_object_is_refused_and_left_alone(s3):
    s3.put_object(Bucket=BUCKET, Key="labs/alice.json", Body=b'{"schema": 1')
    remote = store(s3)
    with pytest.raises(
        StateCorrupt, match=r"state file s3://team-state/labs/alice\.json is corrupt"
    ):
        remote.load()
    with pytest.raises(StateCorrupt):
        remote.set_meta(target="aws")
    assert stored(s3) == b'{"schema": 1'


def test_a_missing_bucket_says_how_to_make_it(s3):
    remote = open_store("s3://no-such-bucket/labs", LAB, client=s3)
    with pytest.raises(StateError) as err:
        remote.set_meta(target="aws")
    assert str(err.value) == (
        "cannot read the state s3://no-such-bucket/labs/alice.json: bucket no-such-bucket does "
        "not exist; create it with `msctl state init s3://no-such-bucket/labs`"
    )
    with pytest.raises(StateError, match="does not exist; create it with"), remote.locked("up"):
        pass


# --------------------------------------------------------------- lost updates


def test_a_write_with_a_stale_etag_is_refused(s3):
    first, second = store(s3), store(s3)
    first.set_meta(target="aws")
    first.load()
    second.load()
    second.record_resource("vpc", "vpc", "vpc-second")  # someone else writes in between
    theirs = stored(s3)
    with pytest.raises(StateError) as err:
        first.record_resource("vpc", "vpc", "vpc-first")
    assert str(err.value) == (
        "the state s3://team-state/labs/alice.json was changed by another msctl since this "
        "one read it; nothing was overwritten: run the command again"
    )
    assert stored(s3) == theirs
    assert first.resource_id("vpc", "vpc") is None, "the refused change is not kept in memory"
    with pytest.raises(StateError, match="was changed by another msctl"):
        first.delete()
    assert stored(s3) == theirs
    first.load()  # read again: now it may write
    first.record_resource("vpc", "nat", "nat-1")
    assert store(s3).resources("vpc").keys() == {"vpc", "nat"}


def test_a_new_state_does_not_overwrite_one_created_meanwhile(s3):
    first, second = store(s3), store(s3)
    first.load()
    second.set_meta(target="aws")
    with pytest.raises(StateError, match="was changed by another msctl"):
        first.set_meta(target="local")
    assert store(s3).meta() == {"target": "aws"}


def test_a_state_deleted_meanwhile_is_not_recreated(s3):
    first = store(s3)
    first.set_meta(target="aws")
    store(s3).delete()
    with pytest.raises(StateError, match="was changed by another msctl"):
        first.set_meta(target="local")
    assert not first.exists()


def test_move_aside_keeps_a_copy(s3):
    remote = store(s3)
    fill(remote)
    before = stored(s3)
    backup = remote.move_aside()
    assert backup.startswith("s3://team-state/labs/alice.json.bak-")
    assert stored(s3, backup.removeprefix(f"s3://{BUCKET}/")) == before
    assert not remote.exists() and remote.steps() == []
    assert remote.move_aside() is None


# --------------------------------------------------------------- the lock


def lock_body(s3) -> dict:
    return json.loads(stored(s3, "labs/alice.lock"))


def test_the_lock_names_its_holder_and_goes_on_release(s3):
    holder, other = store(s3), store(s3)
    with holder.locked("up --only vpc"):
        with holder.locked("up --only vpc"):  # re-entrant in one store
            pass
        info = lock_body(s3)
        assert set(info) == {"id", "holder", "host", "pid", "command", "started_at"}
        assert info["pid"] == os.getpid() and info["command"] == "up --only vpc"
        assert info["holder"].endswith("@" + info["host"])
        with pytest.raises(StateLocked) as err, other.locked("down"):
            pass
        assert str(err.value) == (
            f"lab 'alice' is locked by {info['holder']} (pid {os.getpid()}, up --only vpc, "
            f"started {info['started_at']}, lock id {info['id']}); wait for it to finish; if it "
            f"no longer runs, remove the stale lock with `msctl state unlock {info['id']} "
            f"--state {URL}`"
        )
        assert lock_body(s3) == info, "the refused command left the lock alone"
        holder.set_meta(target="aws")  # the holder works on
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="labs/alice.lock")
    with other.locked("down"):
        assert lock_body(s3)["command"] == "down"
    with store(s3, "bob").locked("up"), store(s3).locked("up"):
        pass  # one lock per lab


def dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)  # fmt: skip
    return int(done.stdout)


def test_a_stale_lock_is_reported_and_unlock_removes_only_its_own_id(s3):
    remote = store(s3)
    with remote.locked("up"):
        stale = lock_body(s3)
        remote._lock_handle = None  # as if the process died here: nothing releases it
        remote._lock_depth = 0
    s3.put_object(
        Bucket=BUCKET, Key="labs/alice.lock", Body=json.dumps({**stale, "pid": dead_pid()})
    )
    with pytest.raises(StateLocked) as err, store(s3).locked("down"):
        pass
    assert "that process no longer runs on this host, so the lock is stale: remove it with " in str(
        err.value
    )
    assert f"`msctl state unlock {stale['id']} --state {URL}`" in str(err.value)

    with pytest.raises(StateError) as err:
        store(s3).unlock("0000-not-it")
    assert str(err.value).startswith(
        f"the lock of lab 'alice' has id {stale['id']}, not 0000-not-it: it is held by "
        f"{stale['holder']} (pid "
    )
    assert str(err.value).endswith("; nothing removed")
    assert lock_body(s3)["id"] == stale["id"]
    removed = store(s3).unlock(stale["id"])
    assert (removed["id"], removed["command"]) == (stale["id"], "up")
    with pytest.raises(StateError, match=r"lab 'alice' is not locked \(s3://team-state/labs/alice\.lock does not exist\)"):  # fmt: skip
        store(s3).unlock(stale["id"])
    with store(s3).locked("down"):
        pass


def test_a_release_after_unlock_leaves_the_new_holders_lock(s3):
    first, second = store(s3), store(s3)
    with first.locked("up"):  # e.g. its machine hung; someone decided the lock was stale
        store(s3).unlock(lock_body(s3)["id"])
        taken = second.locked("down")
        taken.__enter__()
    assert lock_body(s3)["command"] == "down", "first's release removed second's lock"
    taken.__exit__(None, None, None)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="labs/alice.lock")


def test_the_local_backend_has_no_lock_to_remove(tmp_path):
    with pytest.raises(StateError, match="released by the system when its holder ends"):
        StateStore(tmp_path, LAB).unlock("x")


# --------------------------------------------------------------- the bucket


def test_init_creates_a_compliant_bucket(s3):
    done = init_bucket(s3, "class-state", "us-east-1")
    assert (done.created, done.owned, done.missing) == (True, True, [])
    assert done.fixed == list(PROPERTIES)
    block = s3.get_public_access_block(Bucket="class-state")["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    rules = s3.get_bucket_encryption(Bucket="class-state")["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert s3.get_bucket_versioning(Bucket="class-state")["Status"] == "Enabled"
    assert {"Key": "msctl:state", "Value": "true"} in s3.get_bucket_tagging(Bucket="class-state")[
        "TagSet"
    ]
    again = init_bucket(s3, "class-state", "us-east-1")
    assert (again.created, again.fixed, again.missing) == (False, [], [])

    west = init_bucket(s3, "class-state-west", "eu-west-1")
    assert west.region == "eu-west-1" and west.ok
    assert s3.get_bucket_location(Bucket="class-state-west")["LocationConstraint"] == "eu-west-1"


def test_init_reports_a_bucket_it_did_not_make_and_changes_nothing(s3):
    s3.put_bucket_tagging(Bucket=BUCKET, Tagging={"TagSet": [{"Key": "team", "Value": "web"}]})
    assert inspect_bucket(s3, BUCKET) == ["public_access", "encryption", "versioning", "tag"]
    done = init_bucket(s3, BUCKET, "us-east-1")
    assert (done.created, done.owned, done.fixed) == (False, False, [])
    assert done.missing == ["public_access", "encryption", "versioning", "tag"]
    assert inspect_bucket(s3, BUCKET) == done.missing, "nothing was changed"

    adopted = init_bucket(s3, BUCKET, "us-east-1", adopt=True)
    assert adopted.ok and adopted.fixed == ["public_access", "encryption", "versioning", "tag"]
    assert {"Key": "team", "Value": "web"} in s3.get_bucket_tagging(Bucket=BUCKET)["TagSet"]


def test_init_completes_msctls_own_bucket(s3):
    init_bucket(s3, "class-state", "us-east-1")
    s3.put_bucket_versioning(Bucket="class-state", VersioningConfiguration={"Status": "Suspended"})
    s3.delete_public_access_block(Bucket="class-state")
    done = init_bucket(s3, "class-state", "us-east-1")
    assert (done.owned, done.fixed, done.missing) == (True, ["public_access", "versioning"], [])


# --------------------------------------------------------------- push / pull


def test_push_pull_round_trip_is_identical(tmp_path, s3):
    local = StateStore(tmp_path / "a", LAB)
    fill(local)
    original = local.path.read_bytes()
    said = transfer(local, store(s3), force=False, command="state push")
    assert (
        said
        == f"copied the state of lab 'alice' from {local.path} to s3://team-state/labs/alice.json"
    )
    assert stored(s3) == original
    assert not list(s3.list_objects_v2(Bucket=BUCKET, Prefix="labs/alice.lock").get("Contents", []))
    assert transfer(local, store(s3), force=False, command="state push").endswith("nothing copied")

    back = StateStore(tmp_path / "b", LAB)
    transfer(store(s3), back, force=False, command="state pull")
    assert back.path.read_bytes() == original


def test_push_refuses_a_different_state_without_force(tmp_path, s3):
    local = StateStore(tmp_path, LAB)
    fill(local)
    remote = store(s3)
    remote.set_meta(target="aws", region="eu-west-1")
    theirs = stored(s3)
    with pytest.raises(StateError) as err:
        transfer(local, store(s3), force=False, command="state push")
    assert str(err.value).startswith(
        "s3://team-state/labs/alice.json already holds a different state of lab 'alice' "
        "(last changed never; the one at "
    )
    assert str(err.value).endswith("pass --force to replace it")
    assert stored(s3) == theirs
    transfer(local, store(s3), force=True, command="state push")
    assert stored(s3) == local.path.read_bytes()
    with pytest.raises(StateError, match="there is no state of lab 'bob' at "):
        transfer(StateStore(tmp_path, "bob"), store(s3, "bob"), force=False, command="state push")


def test_push_fails_at_once_while_the_destination_is_locked(tmp_path, s3):
    local = StateStore(tmp_path, LAB)
    fill(local)
    with store(s3).locked("up"), pytest.raises(StateLocked, match="lab 'alice' is locked by "):
        transfer(local, store(s3), force=False, command="state push")
    assert not store(s3).exists()
    with local.locked("up"), pytest.raises(StateLocked, match=f"lab 'alice' is locked by pid {os.getpid()}"):  # fmt: skip
        transfer(StateStore(tmp_path, LAB), store(s3), force=False, command="state push")
