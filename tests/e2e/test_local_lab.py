"""The whole lab on the local target through the installed CLI: up, status, test-api, down."""

from __future__ import annotations

import json

from .conftest import msctl


def test_the_lab_serves_real_requests_and_leaves_nothing(local_lab):
    state = local_lab.state
    assert "The lab answers at http://127.0.0.1:" in local_lab.up.stdout

    status = local_lab.status()
    assert status["ok"], status
    assert status["endpoints"]["site"].startswith("http://127.0.0.1:")

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

    again = msctl(state, "up", "--output", "json")
    assert again.returncode == 0
    assert {s["status"] for s in json.loads(again.stdout)["steps"].values()} <= {
        "nochange",
        "unsupported",
    }

    down = msctl(state, "down", "--yes")
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    after = local_lab.status()
    assert {s["status"] for s in after["steps"].values()} <= {
        "absent",
        "nochange",
        "unsupported",
    }, after
    assert not (state / "microservices.json").exists()
