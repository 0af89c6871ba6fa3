"""API Gateway REQUEST authorizer: `Authorization: Bearer <session token>` -> IAM policy."""

from __future__ import annotations

from typing import Any

import labcommon


def api_wide_arn(method_arn: Any) -> str | None:
    """arn:aws:execute-api:<region>:<account>:<api>/<stage>/*/* for a method ARN, or None.

    Allowing the whole stage lets API Gateway reuse a cached decision across routes.
    """
    if not isinstance(method_arn, str):
        return None
    parts = method_arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "execute-api":
        return None
    api_id, _, rest = parts[5].partition("/")
    stage = rest.partition("/")[0]
    if not all(parts[1:5]) or not api_id or not stage or "*" in api_id + stage:
        return None
    return f"{':'.join(parts[:5])}:{api_id}/{stage}/*/*"


def _policy(principal_id: str, effect: str, resource: str, context: dict | None = None) -> dict:
    policy = {
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    }
    if context:
        policy["context"] = context
    return policy


def _token(event: dict) -> str | None:
    headers = labcommon.lower_headers(event)
    if "authorization" not in headers and isinstance(event.get("authorizationToken"), str):
        headers["authorization"] = event["authorizationToken"]  # TOKEN-type event
    return labcommon.bearer_token(headers)


def lambda_handler(event: dict, context: Any) -> dict:
    event = event if isinstance(event, dict) else {}
    session = labcommon.get_session(_token(event))
    if session is None:
        # This exact message is API Gateway's documented way to answer 401.
        raise Exception("Unauthorized")
    user_id = session["userId"]
    resource = api_wide_arn(event.get("methodArn"))
    if resource is None:
        return _policy(user_id, "Deny", "*")
    return _policy(user_id, "Allow", resource, {"userId": user_id})
