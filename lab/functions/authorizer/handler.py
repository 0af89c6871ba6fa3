"""API Gateway REQUEST authorizer: `Authorization: Bearer <session token>` -> IAM policy.

The context carries the user's id and role (read from the users table on every call, so a
deleted account or a changed role takes effect at once); API Gateway hands it to the Lambda
handlers as requestContext.authorizer and to the container services as headers.
"""

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
    caller = labcommon.session_caller(_token(event))
    if caller is None:
        # This exact message is API Gateway's documented way to answer 401.
        raise Exception("Unauthorized")
    resource = api_wide_arn(event.get("methodArn"))
    if resource is None:
        return _policy(caller.user_id, "Deny", "*")
    context = {"userId": caller.user_id, "role": caller.role}
    return _policy(caller.user_id, "Allow", resource, context)
