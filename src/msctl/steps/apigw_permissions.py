"""The Lambda invoke permissions of the REST API: one statement per function in the
function's resource policy, Sid `msctl-apigw-<api id>-<key>`, allowing API Gateway to invoke
it from this API only (the authorizer: from this authorizer only).

They are parts of the lambda step's functions: reconciled as settings, statements of an
earlier copy of the API removed, and all of msctl's removed when the apigw step goes.
"""

from __future__ import annotations

import json

from ..engine.model import is_pending
from ..resources.base import absent
from ..resources.compute import FUNCTION
from .run import StepRun

STATEMENT_PREFIX = "msctl-apigw-"  # Sid prefix of the Lambda permissions this step adds
INVOKE_PRINCIPAL = "apigateway.amazonaws.com"
KIND = "lambda-permission"


def function_policy(lam, name: str) -> list[dict]:
    """The statements of a function's resource policy ([] without one or without the
    function)."""
    policy = absent(lambda: lam.get_policy(FunctionName=name)["Policy"])
    statements = json.loads(policy).get("Statement", []) if policy else []
    return statements if isinstance(statements, list) else [statements]


def _source_arn(statement: dict) -> str | None:
    for operator in ("ArnLike", "ArnEquals", "StringEquals", "StringLike"):
        value = (statement.get("Condition") or {}).get(operator, {}).get("AWS:SourceArn")
        if value:
            return value[0] if isinstance(value, list) else value
    return None


def _principal(statement: dict) -> str | None:
    principal = statement.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("Service")
    if isinstance(principal, list):
        principal = principal[0] if len(principal) == 1 else None
    return principal


def _add(lam, name: str, sid: str, source: str, replace: bool) -> None:
    if replace:
        _remove(lam, name, sid)
    lam.add_permission(
        FunctionName=name,
        StatementId=sid,
        Action="lambda:InvokeFunction",
        Principal=INVOKE_PRINCIPAL,
        SourceArn=source,
    )


def _remove(lam, name: str, sid: str) -> None:
    absent(lambda: lam.remove_permission(FunctionName=name, StatementId=sid))


def _remove_setting(run: StepRun, lam, function: str, sid: str, detail: str) -> None:
    run.setting(
        KIND,
        f"{function} {sid}",
        ok=False,
        detail=detail,
        action="delete",
        apply=lambda: _remove(lam, function, sid),
    )


def ensure_permissions(
    run: StepRun, api_id: str, execution_arn: str, functions: dict[str, str], authorizer_id: str
) -> None:
    """Each function invocable from this API (the authorizer from its authorizer) only."""
    lam = run.clients.get("lambda")
    api_name = run.config.apigw.name
    for key, function in run.config.lambda_.functions.items():
        name = f"{function.name} from {api_name}"
        authorizer = key == "authorizer"
        if is_pending(api_id, functions.get(key)) or (authorizer and is_pending(authorizer_id)):
            run.setting(
                KIND,
                name,
                ok=False,
                detail="invoke from this API only",
                action="create",
                apply=lambda: None,
            )
            continue
        source = (
            f"{execution_arn}/authorizers/{authorizer_id}"
            if authorizer
            else f"{execution_arn}/*/*/*"
        )
        sid = f"{STATEMENT_PREFIX}{api_id}-{key}"
        statements = function_policy(lam, function.name)
        ours = next((s for s in statements if s.get("Sid") == sid), None)
        ok = ours is not None and (_source_arn(ours), _principal(ours)) == (
            source,
            INVOKE_PRINCIPAL,
        )
        run.setting(
            KIND,
            name,
            ok=ok,
            detail=f"invoke from {source}",
            action="create" if ours is None else "update",
            apply=lambda n=function.name, s=sid, src=source, old=ours is not None: _add(
                lam, n, s, src, replace=old
            ),
        )
        for stale in statements:  # for an earlier copy of this API (deleted and rebuilt)
            stale_sid = stale.get("Sid", "")
            if stale_sid.startswith(STATEMENT_PREFIX) and stale_sid != sid:
                _remove_setting(
                    run, lam, function.name, stale_sid, "for an API that no longer exists"
                )


def remove_permissions(run: StepRun) -> None:
    """On teardown: every statement msctl's apigw step added to the lab's functions (a
    same-named function of someone else's is left alone)."""
    lam = run.clients.get("lambda")
    for function in run.config.lambda_.functions.values():
        if run.lookup(FUNCTION, function.name) is None:
            continue
        for statement in function_policy(lam, function.name):
            sid = statement.get("Sid", "")
            if sid.startswith(STATEMENT_PREFIX):
                _remove_setting(run, lam, function.name, sid, "invoke permission of the API")
