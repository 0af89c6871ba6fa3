"""The lab's origin secret as the tests give it to the services (ORIGIN_SECRET_SHA256, set
for every test by conftest.py), and a test client that calls a service the way the ALB
forwards API Gateway's requests: with the secret in X-Lab-Origin."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from flask.testing import FlaskClient

ORIGIN_HEADER = "X-Lab-Origin"
ORIGIN_SECRET = secrets.token_hex(32)
ORIGIN_SHA256 = hashlib.sha256(ORIGIN_SECRET.encode()).hexdigest()


class ThroughGateway(FlaskClient):
    """Sends the origin secret with every request (a request may still set its own)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.environ_base["HTTP_X_LAB_ORIGIN"] = ORIGIN_SECRET
