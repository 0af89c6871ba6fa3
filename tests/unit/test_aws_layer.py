"""Error classification, the eventual-consistency retry and the short-poll waiter."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from msctl.aws.errors import ErrorKind, classify, describe
from msctl.aws.retry import retry_eventual
from msctl.aws.tags import as_dict, ec2_filters, lab_tags
from msctl.aws.waiters import WaitTimeout, wait_for


def error(code: str, message: str = "msg", op: str = "DeleteSubnet") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, op)


@pytest.mark.parametrize(
    "code, kind",
    [
        ("Throttling", ErrorKind.THROTTLING),
        ("TooManyRequestsException", ErrorKind.THROTTLING),
        ("RequestLimitExceeded", ErrorKind.THROTTLING),
        ("DependencyViolation", ErrorKind.EVENTUAL),
        ("DistributionNotDisabled", ErrorKind.EVENTUAL),
        ("AccessDenied", ErrorKind.TERMINAL),
        ("ValidationError", ErrorKind.TERMINAL),
        ("VpcLimitExceeded", ErrorKind.TERMINAL),
    ],
)
def test_classify(code, kind):
    assert classify(error(code)) is kind


def test_describe_names_the_operation_and_gives_a_hint():
    text, hint = describe(
        error("VpcLimitExceeded", "The maximum number of VPCs has been reached.", "CreateVpc")
    )
    assert text == "CreateVpc: VpcLimitExceeded: The maximum number of VPCs has been reached."
    assert "quota" in hint
    assert describe(RuntimeError("x")) == ("RuntimeError: x", "")


class Clock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def test_waiter_polls_until_done_with_short_interval():
    clock = Clock()
    answers = iter([(False, "creating"), (False, "creating"), (True, "available")])
    seen = []
    assert (
        wait_for(
            "db",
            lambda: next(answers),
            timeout=60,
            interval=2,
            on_wait=seen.append,
            sleep=clock.sleep,
            clock=clock,
        )
        == "available"
    )
    assert clock.sleeps == [2, 2]
    assert seen == ["waiting for db: creating"] * 2


def test_waiter_treats_throttling_as_not_yet_never_success():
    clock = Clock()
    calls = []

    def check():
        calls.append(1)
        if len(calls) < 3:
            raise error("Throttling")
        return True, "available"

    wait_for("x", check, timeout=60, sleep=clock.sleep, clock=clock)
    assert len(calls) == 3


def test_waiter_times_out_with_last_seen_state():
    clock = Clock()
    with pytest.raises(
        WaitTimeout, match=r"timed out after 10s waiting for nat \(last seen: pending\)"
    ):
        wait_for(
            "nat",
            lambda: (False, "pending"),
            timeout=10,
            interval=2,
            sleep=clock.sleep,
            clock=clock,
        )


def test_waiter_raises_terminal_errors_at_once():
    with pytest.raises(ClientError):
        wait_for(
            "x",
            lambda: (_ for _ in ()).throw(error("AccessDenied")),
            timeout=60,
            sleep=lambda s: None,
        )


def test_retry_eventual_retries_only_the_named_codes(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    attempts, waits = [], []

    def flaky():
        attempts.append(1)
        if len(attempts) < 3:
            raise error("DependencyViolation")
        return "ok"

    assert (
        retry_eventual(
            flaky, codes=("DependencyViolation",), reason="ENIs draining", on_wait=waits.append
        )
        == "ok"
    )
    assert len(attempts) == 3
    assert waits[0].startswith("ENIs draining (retrying DependencyViolation, attempt 1)")

    def terminal():
        attempts.append(1)
        raise error("AccessDenied")

    attempts.clear()
    with pytest.raises(ClientError):
        retry_eventual(terminal, codes=("DependencyViolation",), reason="r")
    assert len(attempts) == 1


def test_retry_eventual_gives_up_after_the_timeout(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    with pytest.raises(ClientError):
        retry_eventual(
            lambda: (_ for _ in ()).throw(error("DependencyViolation")),
            codes=("DependencyViolation",),
            reason="r",
            timeout=0,
        )


def test_retry_match_narrows_a_broad_code(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda s: None)
    calls = []

    def create():
        calls.append(1)
        raise error("InvalidParameterValueException", "Invalid runtime")

    with pytest.raises(ClientError):
        retry_eventual(
            create,
            codes=("InvalidParameterValueException",),
            reason="role",
            match=lambda exc: "cannot be assumed" in str(exc),
        )
    assert len(calls) == 1


def test_tags():
    tags = lab_tags("lab1", "vpc", "microservices-vpc")
    assert tags == {
        "msctl:lab": "lab1",
        "msctl:step": "vpc",
        "msctl:name": "microservices-vpc",
        "Name": "microservices-vpc",
    }
    assert as_dict([{"Key": "a", "Value": "b"}]) == {"a": "b"}
    assert ec2_filters("lab1", "n") == [
        {"Name": "tag:msctl:lab", "Values": ["lab1"]},
        {"Name": "tag:msctl:name", "Values": ["n"]},
    ]
