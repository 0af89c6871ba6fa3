"""Each service starts under gunicorn with its shipped config, configured by DB_* and the
origin secret's hash only, and answers only requests that carry the origin secret."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from origin_secret import ORIGIN_HEADER, ORIGIN_SECRET, ORIGIN_SHA256
from psycopg.conninfo import conninfo_to_dict

from msctl.local.postgres import LocalPostgres

SERVICES_DIR = Path(__file__).resolve().parents[3] / "lab" / "services"


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, object]]:
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> tuple[int, dict[str, object]]:
    deadline = time.monotonic() + 60
    while True:
        try:
            return get(url)
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture
def gunicorn_env(pg: LocalPostgres, dsn: str) -> dict[str, str]:
    dbname = conninfo_to_dict(dsn)["dbname"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "PG"))}
    env.update(pg.service_env(dbname))
    env.update({"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "2", "PYTHONUNBUFFERED": "1"})
    env.update({"ORIGIN_SECRET_SHA256": ORIGIN_SHA256})
    env.pop("ORIGIN_CHECK", None)
    return env


@pytest.fixture
def serve(gunicorn_env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(service: str, port: int) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"{service}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-b", f"127.0.0.1:{port}", "app:app"],
                cwd=SERVICES_DIR / service,
                env=gunicorn_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        processes.append((process, log_path))
        return process

    yield start
    for process, _ in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process, log_path in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        assert gunicorn_env["DB_PASSWORD"] not in log_path.read_text(errors="replace")


def test_both_services_under_gunicorn(serve: Any) -> None:
    ports = dict(zip(["orders", "products"], free_ports(2), strict=True))
    processes = {name: serve(name, port) for name, port in ports.items()}
    for name, port in ports.items():
        status, body = wait_until_serving(f"http://127.0.0.1:{port}/health", processes[name])
        assert (status, body) == (200, {"status": "healthy", "service": name})
        assert get(f"http://127.0.0.1:{port}/ready") == (200, {"status": "ready", "service": name})

    origin = {ORIGIN_HEADER: ORIGIN_SECRET}
    status, listing = get(f"http://127.0.0.1:{ports['products']}/products", origin)
    assert status == 200
    assert [p["name"] for p in listing] == ["Sample Product 1"]  # type: ignore[index]
    status, body = get(f"http://127.0.0.1:{ports['orders']}/orders", origin)
    assert (status, body) == (401, {"error": "authentication required"})
    # Without the origin secret: nothing but the health check, whatever the headers say.
    forged = {"X-Authorized-User-Id": "someone", "X-Authorized-Role": "admin"}
    for name, path in (("products", "/products"), ("orders", "/orders")):
        status, body = get(f"http://127.0.0.1:{ports[name]}{path}", forged)
        assert (status, body) == (403, {"error": "forbidden"})
