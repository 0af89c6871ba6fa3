"""`msctl state` against a real moto server (the local emulator): init on the local target,
push/pull of a built lab, and the S3 lock across processes: one holds it, a second msctl in
another directory fails at once naming it; a killed holder's lock is reported and removed
by `msctl state unlock`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import boto3
import pytest

from msctl.cli import main
from msctl.local import emulator

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "msctl-state"
URL = f"s3://{BUCKET}/labs"
LOCK_KEY = "labs/microservices.lock"

HOLD = """
    import sys, time
    from msctl.state import open_store
    with open_store(sys.argv[1], "microservices").locked("up --only vpc"):
        print("holding", flush=True)
        time.sleep(600)
"""


@pytest.fixture
def emu(runner, tmp_path):
    """The local emulator (its record in emu/), stopped afterwards: (state dir, endpoint)."""
    state_dir = tmp_path / "emu"
    info, _started = emulator.start(state_dir)
    yield state_dir, info.endpoint
    emulator.stop(state_dir)


def s3_client(endpoint: str):
    return boto3.client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def aws_env(endpoint: str) -> dict[str, str]:
    """The aws target pointed at the emulator, as a team member's shell would be at AWS."""
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_PROFILE", "MSCTL_CONFIG")}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    return env


def msctl(cwd: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("msctl")
    if exe is None:
        pytest.fail("msctl is not installed: pip install -e '.[test]'")
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def hold_lock(cwd: Path, env: dict) -> subprocess.Popen:
    cwd.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLD), URL],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    return holder


def local_state(state_dir: Path) -> Path:
    """A small saved state of the config's lab in state_dir."""
    from msctl.state import StateStore

    store = StateStore(state_dir, "microservices")
    store.set_meta(target="aws", region="us-east-1")
    store.record_resource("vpc", "vpc", "vpc-1")
    return store.path


# --------------------------------------------------------------- init


def test_init_makes_a_compliant_bucket_and_reports_a_non_compliant_one(runner, config, emu):
    state_dir, endpoint = emu
    args = ["-c", str(config), "--state-dir", str(state_dir)]
    made = runner.invoke(main, ["state", "init", URL, *args])
    assert made.exit_code == 0, made.output
    assert made.output.splitlines() == [
        f"created bucket {BUCKET} in us-east-1: Block Public Access (all four settings), "
        "default encryption (SSE-S3), versioning, tag msctl:state=true",
        f"bucket {BUCKET} is ready for msctl state; use it with --state {URL}",
    ]
    s3 = s3_client(endpoint)
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    assert all(s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"].values())
    again = runner.invoke(main, ["state", "init", URL, *args])
    assert again.exit_code == 0
    assert again.output.splitlines() == [
        f"bucket {BUCKET} is ready for msctl state; use it with --state {URL}"
    ]

    s3.create_bucket(Bucket="someones-bucket")
    theirs = runner.invoke(main, ["state", "init", "s3://someones-bucket/x", *args])
    assert theirs.exit_code == 1
    assert theirs.output.strip() == (
        "Error: bucket someones-bucket lacks Block Public Access (all four settings), default "
        "encryption (SSE-S3), versioning, tag msctl:state=true; msctl did not create it (no tag "
        "msctl:state=true), so it changed nothing: set these yourself, or pass --adopt to let "
        "msctl set them"
    )
    assert s3.get_bucket_versioning(Bucket="someones-bucket").get("Status") is None
    adopted = runner.invoke(main, ["state", "init", "s3://someones-bucket/x", "--adopt", *args])
    assert adopted.exit_code == 0, adopted.output
    assert adopted.output.startswith("bucket someones-bucket (us-east-1): set Block Public Access")

    bad = runner.invoke(main, ["state", "init", "s3://Bad_Bucket/x", *args])
    assert bad.exit_code == 2
    assert bad.output.startswith("Error: state location 's3://Bad_Bucket/x' is not s3://BUCKET/")


def test_init_on_the_local_target_starts_the_emulator(runner, config, tmp_path):
    state_dir = tmp_path / "fresh"
    try:
        made = runner.invoke(main, ["state", "init", URL, "-c", str(config), "--state-dir", str(state_dir)])  # fmt: skip
        assert made.exit_code == 0, made.output
        assert "started the local emulator at" in made.output
        assert emulator.status(state_dir) is not None
    finally:
        emulator.stop(state_dir)
    gone = runner.invoke(main, ["state", "push", URL, "-c", str(config), "--state-dir", str(state_dir)])  # fmt: skip
    assert gone.exit_code == 2
    assert "the local emulator is not running, so it holds no state bucket" in gone.output


# --------------------------------------------------------------- push / pull


def test_push_pull_round_trip_of_a_built_lab_changes_nothing(runner, config, emu):
    from msctl.config import load_config
    from msctl.context import Context, Target
    from msctl.engine import runner as engine
    from msctl.state import open_store
    from msctl.state_s3 import client_for
    from msctl.steps import all_steps

    state_dir, endpoint = emu
    args = ["-c", str(config), "--state-dir", str(state_dir)]
    assert runner.invoke(main, ["state", "init", URL, *args]).exit_code == 0
    up = runner.invoke(main, ["up", "--only", "sg", *args])
    assert up.exit_code == 0, up.output
    local_file = state_dir / "microservices.json"
    built = local_file.read_bytes()

    pushed = runner.invoke(main, ["state", "push", URL, *args])
    assert pushed.exit_code == 0, pushed.output
    assert pushed.output.strip() == (
        f"copied the state of lab 'microservices' from {local_file} to "
        f"s3://{BUCKET}/labs/microservices.json"
    )
    s3 = s3_client(endpoint)
    assert s3.get_object(Bucket=BUCKET, Key="labs/microservices.json")["Body"].read() == built
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=LOCK_KEY)

    # The lab used from S3: a plan finds every resource and changes nothing.
    lab = load_config(config, [])
    info = emulator.status(state_dir)
    target = Target("local", lab.region, info.endpoint, info.instance_id)
    remote = open_store(URL, lab.lab, client=client_for(target))
    steps = all_steps()
    with remote.locked("plan"):
        remote.load()
        plan = engine.run(
            Context(lab, target, remote),
            steps,
            "plan",
            selected=engine.select(steps, ["sg"], "plan"),
        )
    assert plan.ok and not [c for r in plan.results.values() for c in r.changes]

    same = runner.invoke(main, ["state", "pull", URL, *args])
    assert same.exit_code == 0
    assert same.output.strip().endswith(
        "already holds this state of lab 'microservices'; nothing copied"
    )
    local_file.unlink()
    pulled = runner.invoke(main, ["state", "pull", URL, *args])
    assert pulled.exit_code == 0, pulled.output
    assert local_file.read_bytes() == built
    replan = runner.invoke(main, ["plan", "--only", "sg", *args])
    assert replan.exit_code == 0 and "no changes" in replan.output, replan.output

    # A different state on the other side is kept unless --force.
    assert runner.invoke(main, ["up", "--only", "dynamodb", *args]).exit_code == 0
    refused = runner.invoke(main, ["state", "push", URL, *args])
    assert refused.exit_code == 1
    assert "already holds a different state of lab 'microservices'" in refused.output
    assert "pass --force to replace it" in refused.output
    forced = runner.invoke(main, ["state", "push", URL, "--force", *args])
    assert forced.exit_code == 0, forced.output
    newer = s3.get_object(Bucket=BUCKET, Key="labs/microservices.json")["Body"].read()
    assert newer == local_file.read_bytes() != built
    runner.invoke(main, ["down", "--yes", *args])


# --------------------------------------------------------------- the lock, two processes


def test_a_second_msctl_elsewhere_fails_at_once_naming_the_holder(config, emu, tmp_path):
    state_dir, endpoint = emu
    env = aws_env(endpoint)
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    holder = hold_lock(tmp_path / "alice", env)
    try:
        lock = json.loads(
            s3_client(endpoint).get_object(Bucket=BUCKET, Key=LOCK_KEY)["Body"].read()
        )
        assert lock["pid"] == holder.pid
        bob = tmp_path / "bob"
        local_state(bob / ".msctl")
        started = time.monotonic()
        second = msctl(bob, env, "state", "push", URL, "--target", "aws", "-c", str(config), "--state-dir", str(bob / ".msctl"))  # fmt: skip
        assert time.monotonic() - started < 60, "it waited for the holder"
        assert second.returncode == 1, second.stderr
        assert second.stderr.strip() == (
            f"Error: lab 'microservices' is locked by {lock['holder']} (pid {holder.pid}, "
            f"up --only vpc, started {lock['started_at']}, lock id {lock['id']}); wait for it to "
            f"finish; if it no longer runs, remove the stale lock with `msctl state unlock "
            f"{lock['id']} --state {URL}`"
        )
        assert holder.poll() is None, "the holder still runs"
    finally:
        holder.kill()
        holder.communicate(timeout=60)


def test_a_killed_holders_lock_is_reported_and_cleared_by_unlock(config, emu, tmp_path):
    state_dir, endpoint = emu
    env = aws_env(endpoint)
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=BUCKET)
    holder = hold_lock(tmp_path / "alice", env)
    os.kill(holder.pid, signal.SIGKILL)
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    lock = json.loads(s3.get_object(Bucket=BUCKET, Key=LOCK_KEY)["Body"].read())

    bob = tmp_path / "bob"
    local_state(bob / ".msctl")
    common = ["--target", "aws", "-c", str(config), "--state-dir", str(bob / ".msctl")]
    refused = msctl(bob, env, "state", "push", URL, *common)
    assert refused.returncode == 1
    assert (
        f"(pid {holder.pid}, up --only vpc, started {lock['started_at']}, lock id {lock['id']}); "
        "that process no longer runs on this host, so the lock is stale: remove it with "
        f"`msctl state unlock {lock['id']} --state {URL}`"
    ) in refused.stderr

    wrong = msctl(bob, env, "state", "unlock", "not-the-id", "--state", URL, *common)
    assert wrong.returncode == 1
    assert wrong.stderr.strip().startswith(
        f"Error: the lock of lab 'microservices' has id {lock['id']}, not not-the-id: it is held "
        f"by {lock['holder']} (pid {holder.pid}, "
    )
    assert s3.get_object(Bucket=BUCKET, Key=LOCK_KEY), "still there"

    removed = msctl(bob, env, "state", "unlock", lock["id"], "--state", URL, *common)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.strip() == (
        f"removed lock {lock['id']} of lab 'microservices' (held by {lock['holder']}, pid "
        f"{holder.pid}, up --only vpc, started {lock['started_at']})"
    )
    pushed = msctl(bob, env, "state", "push", URL, *common)
    assert pushed.returncode == 0, pushed.stderr
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix=LOCK_KEY)


def test_unlock_of_a_local_state_says_there_is_nothing_to_remove(runner, config, tmp_path):
    result = runner.invoke(main, ["state", "unlock", "x", "-c", str(config), "--state-dir", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 1
    assert "whose lock is released by the system when its holder ends" in result.output
