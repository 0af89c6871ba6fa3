"""Waiting only for what is needed: the poll schedule, waits polled together, the order of
creates and polls in the steps that used to wait one thing at a time, the ecs step's rollout
overlapping RDS's creation, and `down`'s graph letting independent slow deletions overlap."""

from __future__ import annotations

import itertools

import pytest

from msctl.aws.waiters import MAX_INTERVAL, Backoff, Wait, WaitTimeout, wait_all
from msctl.engine import runner
from msctl.engine.step import StepError
from msctl.steps import alb as alb_step
from msctl.steps import all_steps

from .conftest import Lab

# ---------------------------------------------------------------- the schedule


def first(n: int, backoff: Backoff, expected: float | None = None) -> list[float]:
    return [round(x, 3) for x in itertools.islice(backoff.intervals(expected), n)]


def test_polls_start_short_and_back_off_to_a_cap():
    assert first(9, Backoff()) == [1, 1.5, 2.25, 3.375, 5.062, 7.594, 11.391, 15, 15]
    # Never more than a tenth of what the wait typically takes: a 5 s Lambda, a 7 min RDS.
    assert first(3, Backoff(), expected=5) == [0.5, 0.5, 0.5]
    assert max(first(20, Backoff(), expected=420)) == 15
    assert max(first(20, Backoff(), expected=60)) == 6
    # Scaled: a layer that runs AWS's minutes as seconds scales the polls with them.
    assert first(3, Backoff(unit=0.01), expected=420) == [0.01, 0.015, 0.022]
    assert max(first(30, Backoff(unit=0.01), expected=420)) == 0.15
    # Tests: no sleep at all; and no scale makes a poll longer than MAX_INTERVAL.
    assert first(3, Backoff(unit=0)) == [0, 0, 0]
    assert max(first(30, Backoff(unit=2))) == MAX_INTERVAL


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ready_at(clock: Clock, at: float, polls: list[float]):
    def check() -> tuple[bool, str]:
        polls.append(clock.now)
        return clock.now >= at, "ready" if clock.now >= at else "not yet"

    return check


def test_waits_polled_together_end_at_the_latest_not_at_their_sum():
    clock = Clock()
    slow, fast = [], []
    seen = wait_all(
        [
            Wait("slow", ready_at(clock, 60, slow), timeout=600, expected=60),
            Wait("fast", ready_at(clock, 5, fast), timeout=600, expected=5),
        ],
        sleep=clock.sleep,
        clock=clock,
    )
    assert seen == ["ready", "ready"]
    assert fast[-1] - 5 <= 0.5 and slow[-1] - 60 <= 6  # each overshoots by one of its polls
    assert clock.now == slow[-1] < 60 + 5  # not 60 + 5: they overlapped
    assert fast[0] == slow[0] == 0  # both polled at once, from the start


def test_a_wait_past_its_timeout_names_itself_and_a_failing_check_ends_all():
    clock = Clock()
    never = Wait("the ALB", lambda: (False, "provisioning"), timeout=30)
    done = Wait("the DB", lambda: (True, "available"), timeout=600)
    with pytest.raises(WaitTimeout, match=r"waiting for the ALB \(last seen: provisioning\)"):
        wait_all([done, never], sleep=clock.sleep, clock=clock)
    assert 30 <= clock.now <= 30 + 15

    def failed() -> tuple[bool, str]:
        raise StepError("DB instance is failed")

    with pytest.raises(StepError, match="failed"):
        wait_all([never, Wait("x", failed, 600)], sleep=clock.sleep, clock=clock)


# ---------------------------------------------------------------- down's graph


def test_down_orders_only_on_what_resources_really_need():
    steps = all_steps()
    needs = runner.teardown_requires(steps)
    # The services and the roles only name the database: its delete needn't wait for theirs
    # (nor for CloudFront's disable, through apigw -> lambda -> iam).
    assert "rds" not in needs["ecs"] and "rds" not in needs["iam"]
    # The API only names the ALB's DNS name: the ALB goes once the services are gone.
    assert "alb" not in needs["apigw"] and "alb" in needs["ecs"]
    # What resources do depend on stays: the services' target groups, subnets, groups...
    assert {"nat", "sg", "alb"} <= set(needs["ecs"])
    assert set(needs["cloudfront"]) == {"apigw", "s3", "route53"}
    waits_for_rds = [s for s, deps in needs.items() if "rds" in deps]
    assert "ecs" not in waits_for_rds and "iam" not in waits_for_rds
    # Selection is unchanged: `down --only rds` still takes what reads its outputs.
    assert {"ecs", "iam"} <= set(runner.select(steps, ["rds"], "destroy"))


# ---------------------------------------------------------------- call order in the steps


def calls_since(lab: Lab, mark: int) -> list[tuple[str, str]]:
    return lab.recorder.calls[mark:]


def index(calls, call, start: int = 0) -> int:
    return next(i for i in range(start, len(calls)) if calls[i] == call)


def only(lab: Lab, step: str, action: str = "apply"):
    result = runner.run(lab.ctx, lab.steps, action, selected=[step])
    bad = {n: (r.status, r.error, r.debug) for n, r in result.results.items() if not r.ok}
    assert not bad, bad
    return result


@pytest.fixture
def quiet(monkeypatch):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")


def test_lambda_creates_every_function_before_waiting_for_any(lab, quiet):
    from .test_iam import install_steps

    install_steps(lab)
    lab.run("apply", ["iam", "dynamodb", "s3"])
    mark = len(lab.recorder.calls)
    only(lab, "lambda")
    calls = calls_since(lab, mark)
    creates = [i for i, c in enumerate(calls) if c == ("lambda", "CreateFunction")]
    polls = [i for i, c in enumerate(calls) if c == ("lambda", "GetFunctionConfiguration")]
    assert len(creates) == len(lab.config.lambda_.functions) == 4
    assert polls and max(creates) < min(polls)


def test_lambda_starts_every_update_before_waiting_for_any(lab, quiet, tmp_path):
    from .test_iam import install_steps
    from .test_lambda import ParamRecorder, copy_functions, names, use_config

    install_steps(lab)
    cfg = copy_functions(lab.config, tmp_path / "functions")
    use_config(lab, cfg)
    lab.run("apply", ["lambda"])
    handler = tmp_path / "functions" / "users" / "handler.py"
    handler.write_text(handler.read_text() + "\n# a change\n")
    use_config(
        lab, cfg.model_copy(update={"lambda_": cfg.lambda_.model_copy(update={"memory_mb": 512})})
    )
    calls = ParamRecorder(lab)
    only(lab, "lambda")
    updates = [
        (op, name)
        for op, name in calls.calls
        if op in ("UpdateFunctionCode", "UpdateFunctionConfiguration")
    ]
    # Users' code and every other function's configuration first; users' configuration
    # (Lambda takes one update at a time) only after every other update has started.
    users = "microservices-users"
    assert updates[-1] == ("UpdateFunctionConfiguration", users)
    assert sorted(updates[:-1]) == sorted(
        [("UpdateFunctionCode", users)]
        + [("UpdateFunctionConfiguration", n) for n in names(cfg).values() if n != users]
    )
    # Then one wait for them all: each function polled after the last update.
    last = max(i for i, c in enumerate(calls.calls) if c == updates[-1])
    settle = {n for op, n in calls.calls[last + 1 :] if op == "GetFunctionConfiguration"}
    assert settle == set(names(cfg).values())
    assert lab.changes(lab.run("plan", ["lambda"]), "lambda") == []


def test_the_alb_step_returns_at_create_and_the_ecs_step_waits_with_rds(lab, monkeypatch):
    """The ALB is left provisioning and the DB instance creating: the ecs step registers its
    task definitions and creates both services meanwhile, then waits for the services, the
    ALB and the database together."""
    polled: list[str] = []
    real = alb_step._lb_state

    def lb_state(elb, arn):
        polled.append(arn)
        done, seen = real(elb, arn)
        return (done, seen) if len(polled) > 3 else (False, "provisioning")

    monkeypatch.setattr(alb_step, "_lb_state", lb_state)
    lab.run("apply", ["alb", "rds", "nat", "ecr", "iam"])
    assert polled == []  # nothing up to here waited for the ALB

    rds = lab.ctx.clients.rds
    describe = rds.describe_db_instances
    reads = []

    def creating(**kwargs):
        answer = describe(**kwargs)
        reads.append(kwargs)
        if len(reads) <= 3:
            for db in answer["DBInstances"]:
                db["DBInstanceStatus"] = "creating"
                db.pop("Endpoint", None)
        return answer

    monkeypatch.setattr(rds, "describe_db_instances", creating)
    mark = len(lab.recorder.calls)
    only(lab, "ecs")
    calls = calls_since(lab, mark)
    first_db = index(calls, ("rds", "DescribeDBInstances"))
    registered = [i for i, c in enumerate(calls) if c == ("ecs", "RegisterTaskDefinition")]
    created = [i for i, c in enumerate(calls) if c == ("ecs", "CreateService")]
    assert len(registered) == len(created) == 2
    # Every create before the database is even asked about: the rollout overlaps RDS's
    # creation.
    assert max(registered + created) < first_db
    # Then one wait, all polled together (each round: both services, the ALB, the DB) until
    # the last of them is done, with nothing else made meanwhile.
    service, lb = ("ecs", "DescribeServices"), ("elbv2", "DescribeLoadBalancers")
    db = ("rds", "DescribeDBInstances")
    last_change = max(i for i, c in enumerate(calls) if c in lab.recorder.mutating())
    start = first_db - 3  # the first round: both services, the ALB, then the DB
    assert start > last_change
    assert sorted(calls[start : start + 4]) == sorted([service, service, lb, db])
    assert set(calls[start:]) == {service, lb, db}
    assert len(reads) == 4 and len(polled) == 4  # each polled until it was done


def test_ecs_down_deletes_both_services_before_waiting_for_either(lab):
    lab.run("apply", ["ecs"])
    mark = len(lab.recorder.calls)
    only(lab, "ecs", "destroy")
    calls = calls_since(lab, mark)
    deletes = [i for i, c in enumerate(calls) if c == ("ecs", "DeleteService")]
    assert len(deletes) == 2
    assert max(deletes) < index(calls, ("ecs", "DescribeServices"), min(deletes))
    deregistered = [i for i, c in enumerate(calls) if c == ("ecs", "DeregisterTaskDefinition")]
    assert len(deregistered) == 2 and min(deregistered) > max(deletes)
