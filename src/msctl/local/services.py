"""Service runner: the lab's ECS services as local processes, as their task definitions say.

For each ECS service in the emulator: the task definition's environment, the database host
pointing at the local PostgreSQL (DB_HOST wins over the task definition's DB_INSTANCE_ID: the
emulator's RDS endpoint is a placeholder), AWS settings that reach the emulator (the service reads its
DB login from the emulator's Secrets Manager, as the task role would from AWS), and the
command of the service's image (its Dockerfile CMD), run from the service's source. The
image the task definition pins must have been built from that source (its tag is the source
hash), so what runs is what was provisioned. A task counts as started once it is ready
(/ready: its database answers), not merely alive (/health, what the ALB asks).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .environment import safe_environment

APP_CONTAINER_SKIP = {"xray-daemon"}
_PER_TASK = ("GUNICORN_BIND", "PORT", "PYTHONUNBUFFERED")  # what _start sets
HEALTH_TIMEOUT = 60.0
READY_PATH = "/ready"  # the services' readiness: 200 once their database answers
# Health checks go straight to loopback, never through a configured HTTP proxy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServiceError(Exception):
    """A service can't be started as provisioned (one-line message)."""


@dataclass
class RunningTask:
    service: str
    port: int
    process: subprocess.Popen
    target_group_arn: str | None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dockerfile_cmd(source: Path) -> list[str]:
    """The CMD (exec or shell form) of the service's Dockerfile."""
    dockerfile = source / "Dockerfile"
    if not dockerfile.exists():
        raise ServiceError(f"{dockerfile} not found: can't tell how to start the service")
    cmd: list[str] | None = None
    for line in dockerfile.read_text().splitlines():
        stripped = line.strip()
        if stripped.upper().startswith("CMD "):
            rest = stripped[4:].strip()
            cmd = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
    if not cmd:
        raise ServiceError(f"{dockerfile} has no CMD")
    return cmd


def local_command(cmd: list[str]) -> list[str]:
    """Run the image's command with this environment's interpreter and tools."""
    head = cmd[0]
    if head in ("python", "python3"):
        return [sys.executable, *cmd[1:]]
    beside = Path(sys.executable).parent / head
    found = str(beside) if beside.exists() else shutil.which(head)
    if found is None:
        raise ServiceError(
            f"{head} is not installed here (pip install -e . installs the lab's "
            "service dependencies)"
        )
    return [found, *cmd[1:]]


class ServiceRunner:
    def __init__(self, clients, config, db_host: str, db_port: int, log_dir: Path):
        self.clients = clients
        self.config = config
        self.db_host = db_host
        self.db_port = db_port
        self.log_dir = log_dir
        self.tasks: list[RunningTask] = []

    def start_all(self) -> list[RunningTask]:
        from ..build.ecr_image import source_hash

        ecs = self.clients.ecs
        cluster = self.config.ecs.cluster
        for key, svc in self.config.ecs.services.items():
            found = ecs.describe_services(cluster=cluster, services=[svc.service])["services"]
            service = next((s for s in found if s.get("status") == "ACTIVE"), None)
            if service is None:
                raise ServiceError(f"ECS service {svc.service} is not provisioned; run msctl up")
            task_def = ecs.describe_task_definition(taskDefinition=service["taskDefinition"])[
                "taskDefinition"
            ]
            container = next(
                c for c in task_def["containerDefinitions"] if c["name"] not in APP_CONTAINER_SKIP
            )
            source = self.config.path(svc.source)
            self._check_image(container["image"], source_hash(source), svc.service)
            env = self._environment(container, svc.service)
            command = local_command(dockerfile_cmd(source))
            tg = next((lb["targetGroupArn"] for lb in service.get("loadBalancers", [])), None)
            for index in range(service.get("desiredCount", 1)):
                self.tasks.append(self._start(key, index, source, command, env, tg))
        for task in self.tasks:
            self._wait_ready(task)
        return self.tasks

    def _check_image(self, image: str, digest_hash: str, service: str) -> None:
        if "@sha256:" not in image:
            return  # a prebuilt image named in the config: nothing to compare with
        uri, digest = image.split("@", 1)
        repository = uri.split("/", 1)[1]
        images = self.clients.ecr.describe_images(
            repositoryName=repository, imageIds=[{"imageDigest": digest}]
        )["imageDetails"]
        tags = {t for i in images for t in i.get("imageTags", [])}
        if f"src-{digest_hash}" not in tags:
            raise ServiceError(
                f"the image {service} runs was built from other source than "
                f"what is on disk now (tags {sorted(tags)}); run msctl up"
            )

    def _environment(self, container: dict, service: str) -> dict[str, str]:
        own = {
            # The RDS endpoint is a placeholder in the emulator: the local PostgreSQL stands
            # in (DB_HOST may be the directory of its unix socket).
            "DB_HOST": self.db_host,
            "DB_PORT": str(self.db_port),
            # boto3 in the service talks to the emulator only, never with the user's AWS setup.
            "AWS_ENDPOINT_URL": self.clients.secretsmanager.meta.endpoint_url,
            "AWS_REGION": self.clients.region,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        given = {e.get("name"): e.get("value") for e in container.get("environment", [])}
        chosen = safe_environment(given, f"service {service}", {*own, *_PER_TASK})
        return {**chosen, **own}

    def _start(
        self, key: str, index: int, source: Path, command: list[str], env: dict, tg: str | None
    ) -> RunningTask:
        port = free_port()
        log = open(self.log_dir / f"{key}-{index}.log", "ab")  # noqa: SIM115 (owned by the child)
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            **env,
            "GUNICORN_BIND": f"127.0.0.1:{port}",
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
        process = subprocess.Popen(
            command,
            cwd=source,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return RunningTask(key, port, process, tg)

    def _wait_ready(self, task: RunningTask) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        path = READY_PATH
        while time.monotonic() < deadline:
            if task.process.poll() is not None:
                raise ServiceError(
                    f"{task.service} exited with {task.process.returncode}; see "
                    f"{self.log_dir / task.service}-*.log"
                )
            try:
                with _OPENER.open(f"{task.url}{path}", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise ServiceError(
            f"{task.service} did not become ready on {task.url}{path} within {HEALTH_TIMEOUT:.0f}s"
        )

    def stop_all(self) -> None:
        for task in self.tasks:
            if task.process.poll() is None:
                task.process.terminate()
        for task in self.tasks:
            try:
                task.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                task.process.kill()
                task.process.wait()
        self.tasks.clear()
