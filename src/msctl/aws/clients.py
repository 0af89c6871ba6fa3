"""One boto3 Session per run; clients built once (in the main thread) and shared."""

from __future__ import annotations

import threading

import boto3
from botocore.config import Config

# botocore's standard retry mode handles throttling with jittered backoff; nothing else
# retries throttling, so waits never multiply.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=5,
    read_timeout=60,
    max_pool_connections=32,
)


class Clients:
    """`clients.ec2`, `clients.dynamodb`, ... Clients are thread-safe; the Session is not,
    so client creation is serialized and `prepare` builds them up front."""

    def __init__(self, session: boto3.Session, endpoint_url: str | None = None):
        self._session = session
        self._endpoint_url = endpoint_url
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def region(self) -> str:
        return self._session.region_name

    def prepare(self, services: set[str]) -> None:
        for service in sorted(services):
            self.get(service)

    def get(self, service: str, region: str | None = None):
        key = f"{service}@{region or ''}"
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._session.client(
                    service,
                    region_name=region or self._session.region_name,
                    endpoint_url=self._endpoint_url,
                    config=CLIENT_CONFIG,
                )
                self._clients[key] = client
            return client

    def __getattr__(self, service: str):
        if service.startswith("_"):
            raise AttributeError(service)
        return self.get(service)
