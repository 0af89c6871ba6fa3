"""Context: everything a run shares: config, target, one boto3 Session and its clients, state."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import boto3

from .aws.clients import Clients
from .aws.errors import describe
from .aws.tags import lab_tags
from .config import LabConfig
from .engine.model import Event
from .state import StateStore

LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class Target:
    name: str  # "local" or "aws"
    region: str
    endpoint: str | None  # None: AWS's own endpoints
    emulator_id: str | None = None

    @property
    def is_local(self) -> bool:
        return self.name == "local"


class Context:
    def __init__(
        self,
        config: LabConfig,
        target: Target,
        state: StateStore,
        *,
        session: boto3.Session | None = None,
        listener: Callable[[Event], None] = lambda _e: None,
        poll_interval: float = 1.0,
    ):
        self.config = config
        self.target = target
        self.state = state
        self.session = session or make_session(target)
        self.clients = Clients(self.session, target.endpoint if target.is_local else None)
        self.listener = listener
        self.poll_interval = poll_interval
        self._outputs: dict[str, dict] = {}
        self._lock = threading.Lock()
        # Set on Ctrl-C: waits and retries stop at their next poll (engine/runner.py).
        self.cancelled = threading.Event()

    @staticmethod
    def describe_error(exc: BaseException) -> tuple[str, str]:
        """An error the engine doesn't know, as (one line, what to do next)."""
        return describe(exc)

    @property
    def lab(self) -> str:
        return self.config.lab

    def tags(self, step: str, name: str) -> dict[str, str]:
        return lab_tags(self.config.lab, step, name)

    def emit(self, event: Event) -> None:
        self.listener(event)

    def set_outputs(self, step: str, outputs: dict) -> None:
        with self._lock:
            self._outputs[step] = outputs

    def outputs_of(self, step: str) -> dict:
        """Outputs of a step from this run (plan or apply), else from the saved state."""
        with self._lock:
            if step in self._outputs:
                return self._outputs[step]
        return self.state.outputs(step)


def make_session(target: Target) -> boto3.Session:
    if target.is_local:
        return boto3.Session(region_name=target.region, **LOCAL_CREDENTIALS)
    return boto3.Session(region_name=target.region)


def aws_target(config: LabConfig) -> Target:
    """Real AWS (or any AWS-compatible endpoint) through the standard credential chain."""
    region = os.environ.get("AWS_REGION") or config.region
    return Target("aws", region, os.environ.get("AWS_ENDPOINT_URL"))
