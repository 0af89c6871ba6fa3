"""lambda: the four functions and their log groups (seed 3.2, 3.3, 7.1, 7.2).

Each function is packaged deterministically (`lambda_package`), so its code is updated only
when the source changed (CodeSha256 differs), and its configuration only when a configured
value differs. Log groups are created by msctl first, with the configured retention, so
they are tagged and removed on destroy (Lambda would otherwise create them itself, without
retention, and leave them behind).

Every function is created (or updated) before any is waited for: their creates don't depend
on each other, so the step waits once, for all of them together, until each is Active with no
update in progress. Lambda refuses a second update of a function while one is in progress:
when both its code and its configuration differ, the second update is made after every
function's first one has been started, then waited for with the rest.

Each function runs with its own role (the iam step grants each only what its code calls).
Environment: USERS_TABLE and SESSIONS_TABLE are the configured tables whose partition key is
`userId` and `sessionId` (the keys the handlers read and write), so the order of
dynamodb.tables in the config doesn't matter.
"""

from __future__ import annotations

from collections.abc import Callable

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.waiters import Wait
from ..build.lambda_package import PackageError, code_sha256, function_zip
from ..engine.model import Pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.compute import FUNCTION, LOG_GROUP
from .base import LabStep
from .iam import NOTIFICATIONS_PREFIX, lab_tables, lambda_log_group
from .log_groups import ensure_log_group
from .run import Fix, StepRun

HANDLER = "handler.lambda_handler"
TRACING_MODE = "Active"

# A new role (or its new policy) takes a few seconds to become usable by Lambda.
ROLE_PROPAGATION_TIMEOUT = 60
ROLE_NOT_READY = ("cannot be assumed", "does not have permissions")
ACTIVE_TIMEOUT = 300
UPDATE_TIMEOUT = 300
SETTLE_EXPECTED = 5  # seconds: a function outside a VPC is Active, or updated, within seconds


class LambdaStep(LabStep):
    name = "lambda"
    requires = ("iam", "dynamodb", "s3")
    services = ("lambda", "logs")
    description = "Lambda functions (auth, users, notifications, authorizer) and their logs"
    kinds = (LOG_GROUP, FUNCTION)

    def names(self, config):
        names = [f.name for f in config.lambda_.functions.values()]
        return [(FUNCTION, n) for n in names] + [(LOG_GROUP, lambda_log_group(n)) for n in names]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config
        role_arns = run.outputs_of("iam")["lambda_role_arns"]
        bucket = run.outputs_of("s3")["bucket"]
        environment = function_environment(cfg, bucket)
        functions = {}
        started = Started()
        for key, function in cfg.lambda_.functions.items():
            name = function.name
            role_arn = role_arns[key]
            ensure_log_group(run, lambda_log_group(name), cfg.cloudwatch.log_retention_days)
            try:
                code = function_zip(cfg, key)
            except (PackageError, OSError) as exc:
                raise StepError(
                    f"cannot package function {key}: {exc}",
                    hint=f"check lambda.functions.{key}.source in the config",
                ) from None
            desired = {
                "FunctionName": name,
                "Runtime": cfg.lambda_.runtime,
                "Handler": HANDLER,
                "Role": role_arn,
                "MemorySize": cfg.lambda_.memory_mb,
                "Timeout": cfg.lambda_.timeout_seconds,
                "Environment": {"Variables": environment},
                "TracingConfig": {"Mode": TRACING_MODE},
            }
            run.ensure(
                FUNCTION,
                name,
                after=[role_arn, bucket],
                create=lambda d=desired, c=code: _create_function(run, d, c, started),
                fixes=lambda found, d=desired, c=code: _function_fixes(run, found, d, c, started),
            )
            found = run.got(FUNCTION, name)
            arn = found["FunctionArn"] if found else Pending(f"ARN of function {name}")
            functions[key] = {"name": name, "arn": arn}
        for update in started.second_updates:
            update()
        lam = run.clients.get("lambda")
        run.wait_all(
            Wait(
                f"function {n} to be {what}", lambda n=n: _settled(lam, n), timeout, SETTLE_EXPECTED
            )
            for n, (what, timeout) in started.functions.items()
        )
        return {"functions": functions}


class Started:
    """What this run started: the functions to wait for, and the second updates of those
    whose code and configuration both changed."""

    def __init__(self):
        self.functions: dict[str, tuple[str, float]] = {}  # name -> (what, timeout)
        self.second_updates: list[Callable[[], None]] = []

    def created(self, name: str) -> None:
        self.functions[name] = ("Active", ACTIVE_TIMEOUT)

    def updated(self, name: str) -> None:
        self.functions.setdefault(name, ("updated", UPDATE_TIMEOUT))


def function_environment(cfg, bucket: str) -> dict[str, str]:
    """The variables every function gets (the handlers read the ones they need)."""
    tables = lab_tables(cfg)
    return {
        "USERS_TABLE": tables["users"],
        "SESSIONS_TABLE": tables["sessions"],
        "STATIC_BUCKET": bucket,
        "SESSION_TTL_HOURS": str(cfg.lambda_.session_ttl_hours),
        "ALLOWED_ORIGINS": ",".join(cfg.cors.allowed_origins),
        "NOTIFICATIONS_PREFIX": NOTIFICATIONS_PREFIX,
    }


# ---------------------------------------------------------------- lookups


def _role_not_ready(exc: ClientError) -> bool:
    message = exc.response.get("Error", {}).get("Message", "")
    return any(text in message for text in ROLE_NOT_READY)


# ---------------------------------------------------------------- create


def _create_function(run: StepRun, desired: dict, code: bytes, started: Started) -> Resource:
    lam = run.clients.get("lambda")
    name = desired["FunctionName"]
    run.retry(
        lambda: lam.create_function(
            **desired,
            Code={"ZipFile": code},
            Tags=run.tags(name),
        ),
        codes=("InvalidParameterValueException",),
        match=_role_not_ready,
        timeout=ROLE_PROPAGATION_TIMEOUT,
        reason=f"IAM is still propagating the new role {desired['Role']} to Lambda",
    )
    started.created(name)
    return FUNCTION.read(lam, name)


def _settled(lam, name: str) -> tuple[bool, str]:
    """Done when the function is Active with no update in progress; a function that failed
    to become active, or whose update just made failed, is an error."""
    fn = lam.get_function_configuration(FunctionName=name)
    state = fn.get("State", "Active")
    if state == "Failed":
        raise StepError(
            f"function {name} failed to become active: "
            f"{fn.get('StateReasonCode')}: {fn.get('StateReason', '')}",
            hint="fix the cause, then run `msctl down --only lambda` and `msctl up` again",
        )
    return _updated(lam, name, fn=fn)


# ---------------------------------------------------------------- fix


def config_differences(found: Resource, desired: dict) -> list[str]:
    """What of the function's configuration differs from `desired`, one phrase each."""
    diffs = []
    for key, label in (
        ("Runtime", "runtime"),
        ("Handler", "handler"),
        ("Role", "role"),
        ("MemorySize", "memory"),
        ("Timeout", "timeout"),
    ):
        if found.get(key) != desired[key]:
            diffs.append(f"{label} {found.get(key)} -> {desired[key]}")
    current_env = (found.get("Environment") or {}).get("Variables") or {}
    wanted_env = desired["Environment"]["Variables"]
    if current_env != wanted_env:
        changed = sorted(
            k
            for k in wanted_env.keys() | current_env.keys()
            if current_env.get(k) != wanted_env.get(k)
        )
        diffs.append(f"environment {', '.join(changed)}")
    mode = (found.get("TracingConfig") or {}).get("Mode", "PassThrough")
    if mode != desired["TracingConfig"]["Mode"]:
        diffs.append(f"tracing {mode} -> {desired['TracingConfig']['Mode']}")
    return diffs


def _function_fixes(
    run: StepRun, found: Resource, desired: dict, code: bytes, started: Started
) -> list[Fix]:
    lam = run.clients.get("lambda")
    name = desired["FunctionName"]
    fixes = []
    sha = code_sha256(code)
    if found.get("CodeSha256") != sha:
        fixes.append(
            Fix(
                f"code {str(found.get('CodeSha256'))[:10]}... -> {sha[:10]}...",
                lambda: _update(
                    run,
                    name,
                    lambda: lam.update_function_code(FunctionName=name, ZipFile=code),
                    started,
                ),
            )
        )
    diffs = config_differences(found, desired)
    if diffs:

        def update_config() -> None:
            _update(run, name, lambda: lam.update_function_configuration(**desired), started)

        second = bool(fixes)  # after the code update: once every first update has started
        fixes.append(
            Fix(
                "; ".join(diffs),
                (lambda: started.second_updates.append(update_config)) if second else update_config,
            )
        )
    return fixes


def _update(run: StepRun, name: str, call, started: Started) -> None:
    """Start an update (the step waits for it with the others). One at a time per function:
    Lambda refuses a second while one is in progress."""
    lam = run.clients.get("lambda")
    run.wait(
        f"function {name} to be ready for an update",
        lambda: _updated(lam, name, fail_on_failed=False),
        timeout=UPDATE_TIMEOUT,
        expected=SETTLE_EXPECTED,
    )
    run.retry(
        call,
        codes=("ResourceConflictException", "InvalidParameterValueException"),
        match=lambda exc: is_code(exc, "ResourceConflictException") or _role_not_ready(exc),
        timeout=ROLE_PROPAGATION_TIMEOUT,
        reason=f"a previous update of {name} is still in progress, or its role is propagating",
    )
    started.updated(name)


def _updated(lam, name: str, fail_on_failed: bool = True, fn: Resource | None = None):
    """(done, seen): done when no update is in progress. A failed earlier update doesn't
    block a new one; the update just made failing is an error."""
    fn = fn or lam.get_function_configuration(FunctionName=name)
    status = fn.get("LastUpdateStatus", "Successful")
    state = fn.get("State", "Active")
    if status == "Failed" and fail_on_failed:
        raise StepError(
            f"update of function {name} failed: {fn.get('LastUpdateStatusReason', '')}",
            hint="fix the cause and run `msctl up` again",
        )
    return status != "InProgress" and state == "Active", f"{state}, last update {status}"
