"""Step lifecycle harness: every step is tested against moto with the same rhythm."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from moto import mock_aws

from msctl.config import load_config
from msctl.context import Context, Target
from msctl.engine import runner
from msctl.engine.model import Status
from msctl.state import StateStore
from msctl.steps import all_steps

ROOT = Path(__file__).resolve().parents[2]
READ_PREFIXES = ("Describe", "List", "Get", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet")


class CallRecorder:
    """Every AWS operation made through the context's clients, as (service, operation)."""

    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def __call__(self, model, **_kwargs):
        self.calls.append((model.service_model.service_name, model.name))

    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if not c[1].startswith(READ_PREFIXES)]


# moto imports each service's backend on first use; steps run in threads, and two threads
# importing the same backend at once deadlock on the import lock. Import them up front.
for _service in (
    "acm",
    "apigateway",
    "applicationautoscaling",
    "cloudfront",
    "cloudwatch",
    "dynamodb",
    "ec2",
    "ecr",
    "ecs",
    "elbv2",
    "iam",
    "awslambda",
    "logs",
    "rds",
    "resourcegroupstaggingapi",
    "route53",
    "s3",
    "secretsmanager",
    "sns",
    "sts",
    "xray",
):
    importlib.import_module(f"moto.{_service}.models")


@pytest.fixture
def aws(monkeypatch, request):
    managed = request.node.get_closest_marker("managed_policies") is not None
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        # Loading the AWS-managed IAM policies costs ~2 s per test; tests that need them opt in
        # with @pytest.mark.managed_policies.
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true" if managed else "false",
        # ECS services report this many running tasks (as the local emulator does); without
        # it no service ever reaches steady state.
        "MOTO_ECS_SERVICE_RUNNING": "2",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield


@pytest.fixture
def lab_config():
    return load_config(ROOT / "config" / "lab.yaml")


class Lab:
    """A lab context on moto plus helpers to run steps the way the CLI does."""

    def __init__(self, config, state_dir: Path):
        self.config = config
        self.state = StateStore(state_dir, config.lab)
        self.events = []
        self.ctx = Context(
            config,
            Target("local", config.region, None),
            self.state,
            listener=self.events.append,
            poll_interval=0,
        )
        self.recorder = CallRecorder()
        self.ctx.session.events.register("before-call.*.*", self.recorder)
        self.steps = all_steps()

    def run(self, action: str, only: list[str], expect_ok: bool = True):
        selected = runner.select(self.steps, only, action)
        result = runner.run(self.ctx, self.steps, action, selected=selected, parallel=4)
        if expect_ok:
            bad = {n: (r.status, r.error, r.debug) for n, r in result.results.items() if not r.ok}
            assert not bad, bad
        return result

    def changes(self, result, step: str):
        return result.results[step].changes


@pytest.fixture
def lab(aws, lab_config, tmp_path):
    return Lab(lab_config, tmp_path / "state")


def assert_lifecycle(lab: Lab, step: str, expected_creates: set[tuple[str, str]]):
    """plan lists creates; apply; plan empty; verify passes; apply again makes no mutating
    call; destroy; destroy again is a no-op. Returns the outputs of the apply."""
    deps = [s for s in runner.select(lab.steps, [step], "apply") if s != step]
    if deps:
        lab.run("apply", deps)
    plan = lab.run("plan", [step])
    creates = {(c.kind, c.name) for c in lab.changes(plan, step) if c.action == "create"}
    assert expected_creates <= creates, expected_creates - creates
    assert all(c.action == "create" for c in lab.changes(plan, step))

    applied = lab.run("apply", [step])
    assert applied.results[step].status is Status.COMPLETE
    outputs = applied.results[step].outputs

    replan = lab.run("plan", [step])
    assert lab.changes(replan, step) == []
    checks = lab.run("verify", [step]).results[step].checks
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]

    lab.recorder.calls.clear()
    again = lab.run("apply", [step])
    assert again.results[step].status is Status.NOCHANGE
    assert lab.recorder.mutating() == []

    removed = lab.run("destroy", [step])
    assert removed.results[step].status is Status.COMPLETE
    again = lab.run("destroy", [step])
    assert again.results[step].status is Status.NOCHANGE
    assert lab.changes(again, step) == []
    return outputs
