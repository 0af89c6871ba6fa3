"""The lab's origin secret: what proves a request to the ALB came through API Gateway.

The ALB is internet-facing and the services trust the identity headers API Gateway sets, so
a request straight to the ALB could forge them. API Gateway sends a random value in
`X-Lab-Origin` on every request to the ALB (a static header mapping of each HTTP_PROXY
integration), the listener rules forward only requests that carry it (anything else gets
the listener's 403), and the services compare its SHA-256, which the task definition gives
them (ORIGIN_SECRET_SHA256), in constant time.

The value is made once by the alb step and kept in the Secrets Manager secret
`<lab>/alb-origin`; the steps read it when they apply, so it exists only there, in the
listener rules and in the API's integrations: never in the state file or the outputs (they
carry the secret's ARN). Deleting the secret and running `up` again makes a new one and
moves the rules, the API and the task definitions to it.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from ..aws.tags import as_list
from ..engine.model import Pending, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.base import absent
from .run import StepRun

HEADER = "X-Lab-Origin"
# Hex: the ALB compares header values case-insensitively, and hex loses nothing to that.
VALUE = re.compile(r"[0-9a-f]{64}")


def create_secret(run: StepRun, name: str) -> Resource:
    sm = run.clients.secretsmanager
    return run.retry(
        lambda: sm.create_secret(
            Name=name,
            Description=f"msctl lab {run.ctx.lab}: the header value API Gateway sends the ALB",
            SecretString=secrets.token_hex(32),
            Tags=as_list(run.tags(name)),
        ),
        codes=("InvalidRequestException",),
        match=lambda exc: "scheduled for deletion" in str(exc),
        reason=f"the secret {name} was deleted moments ago",
    )


def read(run: StepRun, arn: str) -> str:
    """The secret's value (Pending while the secret is)."""
    if is_pending(arn):
        return Pending("the lab's origin secret")
    sm = run.clients.secretsmanager
    found = absent(lambda: sm.get_secret_value(SecretId=arn))
    if found is None:
        raise StepError(
            f"the origin secret {arn} is gone",
            hint="run `msctl up`: the alb step makes a new one, and the others follow it",
        )
    value = found["SecretString"]
    if not VALUE.fullmatch(value):
        raise StepError(
            f"the origin secret {arn} doesn't hold a value msctl made (64 hex digits)",
            hint="delete that secret and run `msctl up`: it makes a new one and moves the "
            "ALB, API Gateway and the services to it",
        )
    return value


def sha256(value: str) -> str:
    """What the services are given: the hash of a 256-bit random value reveals nothing."""
    return value if is_pending(value) else hashlib.sha256(value.encode()).hexdigest()
