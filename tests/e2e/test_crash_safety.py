"""Crash safety of the installed CLI: `msctl up` and `msctl down` killed (SIGKILL) at many
points, then run again, converge with no duplicate resources and nothing left over; a lost
state file is rebuilt by adoption, never by creating again; a second run on a locked lab
fails at once, and the lock dies with its holder.

How: a moto server, and in front of it a small counting HTTP proxy (`CrashProxy`). msctl
runs as a subprocess with `--target aws --yes`, AWS_ENDPOINT_URL pointing at the proxy and
fake credentials. The proxy forwards every request to moto, recognises the mutating ones
(X-Amz-Target, the Action= form field, or a REST method other than GET/HEAD) and kills msctl
with SIGKILL after the Nth of them: right after forwarding moto's answer (the resource exists
and msctl may or may not have seen it) or, every other time, before answering (AWS did it,
msctl never heard). Run after run is killed that way, every N mutating calls, so the kills
fall all through the build (or teardown) until a run finishes by itself; `up` is also killed
at the first call of each create that a careless re-run would repeat (before its answer).
No test hook lives in msctl.

Where moto in server mode differs from AWS for the aws target, the harness works around it
in the open: the X-Ray step is left out (`--only` every other step; moto answers its calls
404, which the aws target rightly treats as an error), images are given prebuilt (no Docker
here), the engine version is exact (moto lists no engine versions), and ACM issues
DNS-validated certificates at once. moto drops a distribution's origin access control, so
on this target the cloudfront step updates its distribution on every run: an update, never
a create, and no assertion here depends on it.

Runs are serial (`--parallel 1`), so the Nth mutating call is the same call every time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import boto3
import pytest

from msctl.config import load_config
from msctl.steps import all_steps
from tests.support.inventory import count, duplicates, inventory

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "lab.yaml"
REGION = "us-east-1"
OVERRIDES = (
    "ecr.images.products=public.ecr.aws/msctl-test/products:1",
    "ecr.images.orders=public.ecr.aws/msctl-test/orders:1",
    'rds.engine_version="15.4"',
    "route53.domain=example.com",  # so the route53 step takes part
)
# Not on this target: moto's server answers X-Ray's group and sampling-rule calls with 404.
LEFT_OUT = {"xray"}
STEPS = [name for name in all_steps() if name not in LEFT_OUT]
# Kill every this many mutating calls, run after run, until a run finishes on its own...
UP_EVERY = 30
DOWN_EVERY = 14
# ...and, before its answer reaches msctl, at the first call of each create that AWS (or
# moto) would happily repeat with a second resource, or that a re-run must find by its tags.
UP_CREATES = (
    "CreateVpc",
    "AllocateAddress",
    "CreateNatGateway",  # moto ignores the ClientToken: a blind retry makes a second NAT
    "CreateSecurityGroup",
    "CreateDBInstance",
    "RegisterTaskDefinition",  # a second revision is a second ACTIVE task definition
    "POST /restapis",  # CreateRestApi: names are not unique
    "POST /2020-05-31/distribution",  # CreateDistributionWithTags
    "POST /2013-04-01/hostedzone",  # CreateHostedZone: a CallerReference moto doesn't guard
    "RequestCertificate",
)
READ_PREFIXES = (
    "Describe",
    "List",
    "Get",
    "Head",
    "Lookup",
    "Search",
    "Scan",
    "Query",
    "BatchGet",
)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "expect",
    "upgrade",
    "te",
    "trailer",
}
RUN_TIMEOUT = 300


# ---------------------------------------------------------------- the counting proxy


def operation(method: str, path: str, headers, body: bytes) -> tuple[str, bool]:
    """(operation, mutating) of one AWS request, from its wire form."""
    target = headers.get("X-Amz-Target")
    if target:
        op = target.rsplit(".", 1)[-1]
        return op, not op.startswith(READ_PREFIXES)
    if "x-www-form-urlencoded" in headers.get("Content-Type", ""):
        action = parse_qs(body.decode("utf-8", "replace")).get("Action", [""])[0]
        if action:
            return action, not action.startswith(READ_PREFIXES)
    return f"{method} {path.split('?', 1)[0]}", method not in ("GET", "HEAD", "OPTIONS")


class CrashProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.mutating = 0  # mutating calls since the last arm()
        self.ops: list[str] = []
        self.kill_at: int | None = None
        self.kill_before_answer = False
        self.kill_on: set[str] = set()  # operations to kill at (once each), before the answer
        self.victim: subprocess.Popen | None = None
        self.kills: list[tuple[int, str, str]] = []  # (n, operation, when)
        self.passing = threading.Event()  # cleared: mutating calls wait (a held run)
        self.passing.set()
        self.inflight = 0

    def handle_error(self, request, client_address) -> None:
        """A killed msctl drops its connections mid-request: that is the point, not news."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def idle(self, timeout: float = 60) -> None:
        """Wait until no request is being forwarded (a held one of a killed run included)."""
        deadline = time.monotonic() + timeout
        while self.inflight and time.monotonic() < deadline:
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def arm(self, kill_at: int | None = None, before_answer: bool = False) -> None:
        with self.lock:
            self.mutating = 0
            self.ops = []
            self.kill_at = kill_at
            self.kill_before_answer = before_answer
            self.victim = None

    def count(self, op: str) -> tuple[bool, bool]:
        """Count one mutating call: (kill at it, before answering)."""
        with self.lock:
            self.mutating += 1
            self.ops.append(op)
            if self.kill_at is None:
                return False, False
            if op in self.kill_on:
                self.kill_on.discard(op)
                return True, True
            return self.mutating == self.kill_at, self.kill_before_answer

    def kill(self, op: str, when: str) -> None:
        deadline = time.monotonic() + 10
        while self.victim is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.victim is not None, "no process to kill"
        os.kill(self.victim.pid, signal.SIGKILL)
        with self.lock:
            self.kills.append((self.mutating, op, when))
            self.kill_at = None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CrashProxy

    def log_message(self, *_args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        with self.server.lock:
            self.server.inflight += 1
        try:
            self._relay()
        finally:
            with self.server.lock:
                self.server.inflight -= 1

    def _relay(self) -> None:
        body = self._body()
        op, mutating = operation(self.command, self.path, self.headers, body)
        proxy = self.server
        kill_here = before_answer = False
        if mutating and not self.path.startswith("/moto-api"):
            proxy.passing.wait(timeout=RUN_TIMEOUT)
            kill_here, before_answer = proxy.count(op)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        upstream = HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=RUN_TIMEOUT)
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            data = answer.read()
            answer_headers = answer.getheaders()
            status, reason = answer.status, answer.reason
        finally:
            upstream.close()
        if kill_here and before_answer:
            proxy.kill(op, "before its answer")
            self.close_connection = True
            return
        self.send_response_only(status, reason)
        for key, value in answer_headers:
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        if self.command == "HEAD":
            length = dict((k.lower(), v) for k, v in answer_headers).get("content-length", "0")
            self.send_header("Content-Length", length)
            self.end_headers()
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()
        if kill_here:
            proxy.kill(op, "after its answer")

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward


# ---------------------------------------------------------------- moto, the proxy, msctl


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory):
    port = _free_port()
    env = {
        **os.environ,
        "MOTO_ECS_SERVICE_RUNNING": "2",  # services report running tasks (steady state)
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "false",
        "MOTO_ACM_VALIDATION_WAIT": "0",  # DNS-validated certificates are issued at once
        "DOCKER_HOST": "unix:///dev/null/no-docker.sock",
        "MOTO_PORT": str(port),
    }
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/config", timeout=1).read()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def proxy(moto_server):
    server = CrashProxy(int(moto_server.rsplit(":", 1)[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


class Msctl:
    """The installed CLI on the aws target through the proxy, and what moto holds."""

    def __init__(self, proxy: CrashProxy, moto_url: str, state_dir: Path):
        exe = shutil.which("msctl")
        if exe is None:
            pytest.fail("msctl is not installed: pip install -e '.[test]'")
        self.exe = exe
        self.proxy = proxy
        self.moto_url = moto_url
        self.state_dir = state_dir
        self.config = load_config(CONFIG, list(OVERRIDES))
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("AWS_") and k not in ("HTTP_PROXY", "HTTPS_PROXY")
        }
        self.env.update(
            AWS_ENDPOINT_URL=proxy.url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION=REGION,
            NO_PROXY="127.0.0.1,localhost",
        )

    def command(self, verb: str, *extra: str) -> list[str]:
        sets = [arg for item in OVERRIDES for arg in ("--set", item)]
        args = [self.exe, verb, "-c", str(CONFIG), "--state-dir", str(self.state_dir), *sets]
        if verb in ("up", "down"):
            args += ["--target", "aws", "--yes", "--parallel", "1", "--only", ",".join(STEPS)]
        else:
            args += ["--target", "aws"]
        return args + list(extra)

    def start(self, verb: str, *extra: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            self.command(verb, *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self.proxy.victim = proc
        return proc

    def run(self, verb: str, *extra: str, kill_at: int | None = None, before: bool = False):
        self.proxy.arm(kill_at, before)
        proc = self.start(verb, *extra)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def client(self, service: str):
        return boto3.client(
            service,
            endpoint_url=self.moto_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def inventory(self):
        return inventory(self.client, self.config)

    def state(self) -> dict:
        return json.loads((self.state_dir / f"{self.config.lab}.json").read_text())["body"]


def interrupted(
    cli: Msctl, verb: str, every: int, log: list, creates: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run `verb` again and again, each run killed after `every` mutating calls (every
    other kill before moto's answer reaches msctl) or at the first of `creates` it makes,
    until a run finishes by itself."""
    cli.proxy.kill_on = set(creates)
    for attempt in range(40):
        before = attempt % 2 == 1
        done = cli.run(verb, kill_at=every, before=before)
        log.append((verb, attempt, cli.proxy.mutating, done.returncode))
        if done.returncode != -signal.SIGKILL:
            return done
    pytest.fail(f"`msctl {verb}` never finished: {log}")


def leftover(found) -> dict:
    return {(kind, name): ids for kind, names in found.items() for name, ids in names.items()}


def live(found) -> int:
    return sum(len(ids) for (_kind, _name), ids in leftover(found).items())


# ---------------------------------------------------------------- the scenario


def test_crashes_lost_state_and_locks(proxy, moto_server, tmp_path):
    cli = Msctl(proxy, moto_server, tmp_path / "state")
    log: list = []

    # 1. `up` killed again and again as it builds the lab: every UP_EVERY mutating calls,
    #    through the whole build, then a run that finishes. No resource exists twice.
    done = interrupted(cli, "up", UP_EVERY, log, UP_CREATES)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    up_kills = list(proxy.kills)
    assert len(up_kills) >= 10, log
    assert proxy.kill_on == set(), proxy.kill_on  # every targeted create was interrupted
    built = cli.inventory()
    assert duplicates(built) == {}
    assert cli.state()["journal"] == []  # every interrupted create was settled
    for kind in ("vpc", "nat-gateway", "db-instance", "service", "rest-api", "hosted-zone"):
        assert kind in built, sorted(built)

    # ...and another run creates nothing.
    again = cli.run("up", "--output", "json")
    assert again.returncode == 0, again.stderr[-3000:]
    creates = [
        (name, c["kind"], c["name"])
        for name, step in json.loads(again.stdout)["steps"].items()
        for c in step["changes"]
        if c["action"] == "create"
    ]
    assert creates == []

    # 2. Lost state: every resource is adopted (found by tags or name), none created.
    (cli.state_dir / f"{cli.config.lab}.json").unlink()
    adopted = cli.run("up", "--output", "json")
    assert adopted.returncode == 0, adopted.stderr[-3000:]
    steps = json.loads(adopted.stdout)["steps"]
    assert [
        (n, c["kind"], c["name"])
        for n, s in steps.items()
        for c in s["changes"]
        if c["action"] == "create"
    ] == []
    assert duplicates(cli.inventory()) == {}
    status = cli.run("status", "--output", "json")
    doc = json.loads(status.stdout)
    recorded = {n: s["resources"] for n, s in doc["steps"].items()}
    for name in STEPS:
        assert recorded[name], (name, doc["steps"][name])
    # What status checked against moto: all there (cloudfront differs only as moto drops the
    # origin access control; see the module docstring).
    failing = [
        (n, c["name"], c["detail"])
        for n, s in doc["steps"].items()
        if n in STEPS
        for c in s["checks"]
        if not c["ok"]
    ]
    assert all(n == "cloudfront" and "Origins" in detail for n, _c, detail in failing), failing

    # 3. A second `up` or `down` while one runs fails at once; the lock dies with its holder.
    proxy.arm()
    proxy.passing.clear()  # the holder's first mutating call waits in the proxy
    holder = cli.start("down")
    lock = cli.state_dir / f"{cli.config.lab}.lock"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if lock.exists() and f'"pid": {holder.pid}' in lock.read_text():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the first `down` never took the lock")
    try:
        for verb in ("up", "down"):
            started = time.monotonic()
            second = subprocess.run(
                cli.command(verb), capture_output=True, text=True, env=cli.env, timeout=60
            )
            assert second.returncode != 0
            said = " ".join(second.stderr.split())  # however the console wrapped it
            assert f"is locked by pid {holder.pid}" in said, second.stderr
            assert time.monotonic() - started < 30  # at once: no waiting for the holder
    finally:
        proxy.victim = holder
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        proxy.passing.set()  # its held call reaches moto after all, as AWS may still act on it
        proxy.idle()
    after_holder = cli.run("up")
    assert after_holder.returncode == 0, after_holder.stdout[-3000:] + after_holder.stderr[-3000:]
    assert duplicates(cli.inventory()) == {}

    # 4. `down` killed again and again, then a run that finishes: nothing is left.
    proxy.kills.clear()
    done = interrupted(cli, "down", DOWN_EVERY, log)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    down_kills = list(proxy.kills)
    assert len(down_kills) >= 4, log
    left = cli.inventory()
    assert leftover(left) == {}
    print(
        f"crash safety: up killed {len(up_kills)} times {up_kills}; built {count(built)} "
        f"resources, 0 duplicates; down killed {len(down_kills)} times {down_kills}; "
        f"left {live(left)}"
    )
