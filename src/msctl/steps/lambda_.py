"""lambda: the four functions and their log groups (seed 3.2, 3.3, 7.1, 7.2).

Each function is packaged deterministically (`lambda_package`), so its code is updated only
when the source changed (CodeSha256 differs), and its configuration only when a configured
value differs. Log groups are created by msctl first, with the configured retention, so
they are tagged and removed on destroy (Lambda would otherwise create them itself, without
retention, and leave them behind).

Each function runs with its own role (the iam step grants each only what its code calls).
Environment: USERS_TABLE and SESSIONS_TABLE are the configured tables whose partition key is
`userId` and `sessionId` (the keys the handlers read and write), so the order of
dynamodb.tables in the config doesn't matter.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

from ..aws.errors import is_code
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
                create=lambda d=desired, c=code: _create_function(run, d, c),
                fixes=lambda found, d=desired, c=code: _function_fixes(run, found, d, c),
            )
            found = run.got(FUNCTION, name)
            arn = found["FunctionArn"] if found else Pending(f"ARN of function {name}")
            functions[key] = {"name": name, "arn": arn}
        return {"functions": functions}


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


def _create_function(run: StepRun, desired: dict, code: bytes) -> Resource:
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
    run.wait(f"function {name} to be Active", lambda: _state(lam, name), timeout=ACTIVE_TIMEOUT)
    return FUNCTION.read(lam, name)


def _state(lam, name: str) -> tuple[bool, str]:
    fn = lam.get_function_configuration(FunctionName=name)
    state = fn.get("State", "Active")
    if state == "Failed":
        raise StepError(
            f"function {name} failed to become active: "
            f"{fn.get('StateReasonCode')}: {fn.get('StateReason', '')}",
            hint="fix the cause, then run `msctl down --only lambda` and `msctl up` again",
        )
    return state == "Active", state


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


def _function_fixes(run: StepRun, found: Resource, desired: dict, code: bytes) -> list[Fix]:
    lam = run.clients.get("lambda")
    name = desired["FunctionName"]
    fixes = []
    sha = code_sha256(code)
    if found.get("CodeSha256") != sha:
        fixes.append(
            Fix(
                f"code {str(found.get('CodeSha256'))[:10]}... -> {sha[:10]}...",
                lambda: _update(
                    run, name, lambda: lam.update_function_code(FunctionName=name, ZipFile=code)
                ),
            )
        )
    diffs = config_differences(found, desired)
    if diffs:
        fixes.append(
            Fix(
                "; ".join(diffs),
                lambda: _update(run, name, lambda: lam.update_function_configuration(**desired)),
            )
        )
    return fixes


def _update(run: StepRun, name: str, call) -> None:
    """One update at a time: Lambda refuses a second while one is in progress."""
    lam = run.clients.get("lambda")
    run.wait(
        f"function {name} to be ready for an update",
        lambda: _updated(lam, name, fail_on_failed=False),
        timeout=UPDATE_TIMEOUT,
    )
    run.retry(
        call,
        codes=("ResourceConflictException", "InvalidParameterValueException"),
        match=lambda exc: is_code(exc, "ResourceConflictException") or _role_not_ready(exc),
        timeout=ROLE_PROPAGATION_TIMEOUT,
        reason=f"a previous update of {name} is still in progress, or its role is propagating",
    )
    run.wait(f"function {name} update", lambda: _updated(lam, name), timeout=UPDATE_TIMEOUT)


def _updated(lam, name: str, fail_on_failed: bool = True) -> tuple[bool, str]:
    """Done when no update is in progress. A failed earlier update doesn't block a new one;
    the update just made failing is an error."""
    fn = lam.get_function_configuration(FunctionName=name)
    status = fn.get("LastUpdateStatus", "Successful")
    state = fn.get("State", "Active")
    if status == "Failed" and fail_on_failed:
        raise StepError(
            f"update of function {name} failed: {fn.get('LastUpdateStatusReason', '')}",
            hint="fix the cause and run `msctl up` again",
        )
    return status != "InProgress" and state == "Active", f"{state}, last update {status}"
