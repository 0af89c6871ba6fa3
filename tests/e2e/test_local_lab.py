"""The whole lab on the local target through the installed CLI: up, status, test-api, down."""

from __future__ import annotations

import json
import re
import socket

from .conftest import msctl


def served(state) -> dict:
    return json.loads((state / "dataplane.json").read_text())


def test_the_lab_serves_real_requests_and_leaves_nothing(local_lab):
    state = local_lab.state
    url = re.search(r"The lab answers at (http://127\.0\.0\.1:\d+)/", local_lab.up.stdout)[1]
    assert local_lab.up.stderr.count("starting local services...") == 1
    # Each notice once: the emulator's missing X-Ray shows as the step's status, not twice.
    assert local_lab.up.stdout.count("X-Ray groups and sampling rules are not implemented") == 1

    shown = msctl(state, "status")
    assert shown.returncode == 0, shown.stdout
    assert shown.stdout.strip().splitlines()[-1] == (
        f"lab microservices: all 16 steps built and as configured; it answers at {url}/"
    )
    assert "cloudfront.net" not in shown.stdout and "execute-api" not in shown.stdout
    verbose = msctl(state, "status", "-v")
    assert re.search(
        r"site: https://\S+\.cloudfront\.net/ \(emulated: opens nowhere\)", verbose.stdout
    )
    status = local_lab.status()
    assert status["ok"], status
    assert status["endpoints"] == {"site": f"{url}/", "api": f"{url}/api/"}
    assert set(status["emulated_endpoints"]) == {"site", "api", "load_balancer", "database"}

    checks = msctl(state, "test-api", "--output", "json")
    doc = json.loads(checks.stdout)
    failed = [c for c in doc["checks"] if not c["ok"]]
    assert checks.returncode == 0 and not failed, failed
    assert len(doc["checks"]) >= 25

    load = msctl(
        state,
        "test-api",
        "--load",
        "--requests",
        "200",
        "--concurrency",
        "10",
        "--output",
        "json",
    )
    summary = json.loads(load.stdout)
    assert load.returncode == 0, summary
    assert summary["status_codes"] == {"200": 200} and summary["errors"] == {}

    # Three ups in a row: one URL, and the data plane isn't even restarted (nothing changed).
    pid = served(state)["pid"]
    again = msctl(state, "up", "--output", "json")
    assert again.returncode == 0
    assert {s["status"] for s in json.loads(again.stdout)["steps"].values()} <= {
        "nochange",
        "unsupported",
    }
    third = msctl(state, "up")
    assert f"The lab answers at {url}/" in third.stdout
    assert "starting local services" not in third.stderr
    assert served(state)["pid"] == pid and served(state)["url"] == url
    # A port of the user's choosing, kept from then on (a restart for it, then none).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moved = msctl(state, "up", "--port", str(port))
    assert f"The lab answers at http://127.0.0.1:{port}/" in moved.stdout, moved.stdout
    kept = msctl(state, "up")
    assert f"The lab answers at http://127.0.0.1:{port}/" in kept.stdout

    down = msctl(state, "down", "--yes")
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    after = local_lab.status()
    assert {s["status"] for s in after["steps"].values()} <= {
        "absent",
        "nochange",
        "unsupported",
    }, after
    assert not (state / "microservices.json").exists()
    assert msctl(state, "status").returncode == 3
