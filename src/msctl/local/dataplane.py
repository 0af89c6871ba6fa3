"""The local data plane: makes the lab on the local target answer real HTTP requests.

`start` runs `python -m msctl.local.dataplane` in the background (like the emulator, it
outlives the command). That process reads what msctl provisioned from the emulator, starts a
local PostgreSQL with the RDS-managed user, the Lambda function runner and the ECS
services, and serves the edge on a loopback port: the lab's public URL on this target.

The emulator is unauthenticated: any local user can read the RDS secret from it and change
what the functions and services run with. So the PostgreSQL serves no TCP port, only a unix
socket in a 0700 directory, and the runners pass on only safe variables (environment.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import emulator

RECORD = "dataplane.json"
PORT = "dataplane.port"  # the port it last served on: the next start takes it again
LOG = "dataplane.log"
START_TIMEOUT = 180.0
_SHARED_PARENT = Path("/var/tmp/msctl-postgres")  # as root, when the state dir can't be used
REQUIRED_STEPS = ("cloudfront", "apigw", "lambda", "alb", "ecs", "rds")


class DataPlaneError(Exception):
    """One-line, user-facing."""


@dataclass(frozen=True)
class DataPlaneInfo:
    pid: int
    port: int
    url: str
    emulator_id: str
    started_at: str
    serves: str  # what it was started for (config and overrides): `ensure` compares it


# ---------------------------------------------------------------- control (the msctl side)


def read_info(state_dir: Path) -> DataPlaneInfo | None:
    try:
        return DataPlaneInfo(**json.loads((Path(state_dir) / RECORD).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def status(state_dir: Path) -> DataPlaneInfo | None:
    info = read_info(state_dir)
    if info is None or not _is_ours(info.pid):
        return None
    return info


def ensure(
    state_dir: Path,
    config_path: Path,
    overrides: list[str],
    *,
    changed: bool,
    port: int | None = None,
) -> tuple[DataPlaneInfo, bool]:
    """The data plane serving what is provisioned now: the one running when nothing it serves
    changed (the same emulator, config and port, and `changed` false), else a new one on the
    same port. Returns it and whether it was (re)started."""
    info = status(state_dir)
    running = emulator.status(state_dir)
    if (
        info is not None
        and not changed
        and running is not None
        and info.emulator_id == running.instance_id
        and info.serves == serves(config_path, overrides)
        and port in (None, info.port)
    ):
        return info, False
    return start(state_dir, config_path, overrides, port=port), True


def serves(config_path: Path, overrides: list[str]) -> str:
    return json.dumps([str(Path(config_path).resolve()), sorted(overrides)])


def saved_port(state_dir: Path) -> int | None:
    try:
        return int((Path(state_dir) / PORT).read_text())
    except (OSError, ValueError):
        return None


def start(
    state_dir: Path,
    config_path: Path,
    overrides: list[str],
    *,
    port: int | None = None,
    timeout: float = START_TIMEOUT,
) -> DataPlaneInfo:
    """(Re)start the data plane so it serves what is provisioned now: on `port` (taken or
    not, it is what the user asked for), else on the port it had (if it is free), else on a
    free one."""
    state_dir = Path(state_dir)
    stop(state_dir)
    log_path = state_dir / LOG
    offset = log_path.stat().st_size if log_path.exists() else 0
    command = [
        sys.executable,
        "-m",
        "msctl.local.dataplane",
        "--state-dir",
        str(state_dir),
        "--config",
        str(Path(config_path).resolve()),
    ]
    for item in overrides:
        command += ["--set", item]
    if port is not None:
        command += ["--port", str(port)]
    elif saved_port(state_dir) is not None:
        command += ["--port", str(saved_port(state_dir)), "--port-if-free"]
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    emulator.adopt_child(process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = read_info(state_dir)
        if info is not None and info.pid == process.pid:
            (state_dir / PORT).write_text(str(info.port))
            return info
        if process.poll() is not None:
            raise DataPlaneError(
                f"the local data plane failed to start: {_last_error(log_path, offset)}"
            )
        time.sleep(0.2)
    emulator.terminate_group(process.pid, 10)
    raise DataPlaneError(
        f"the local data plane did not start within {timeout:.0f}s; see {log_path}"
    )


def stop(state_dir: Path, timeout: float = 20.0) -> bool:
    if not Path(state_dir).is_dir():
        return False
    info = read_info(state_dir)
    (Path(state_dir) / RECORD).unlink(missing_ok=True)
    if info is None or not _is_ours(info.pid):
        return False
    emulator.terminate_group(info.pid, timeout)
    return True


def remove_data(state_dir: Path) -> None:
    """After `down`: the local database goes with the lab."""
    shutil.rmtree(postgres_dir(Path(state_dir)), ignore_errors=True)


def _is_ours(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"msctl.local.dataplane" in args


def _last_error(log_path: Path, offset: int) -> str:
    try:
        with open(log_path, "rb") as fh:
            fh.seek(offset)
            lines = [ln for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    errors = [ln for ln in lines if ln.startswith("error: ")]
    return errors[-1][len("error: ") :] if errors else " | ".join(lines[-3:]) or "(no output)"


def postgres_dir(state_dir: Path) -> Path:
    """Under the state dir; as root, PostgreSQL runs as the `postgres` user, which must be
    able to reach it, so fall back to a per-lab directory under /var/tmp when it can't."""
    preferred = state_dir.resolve() / "postgres"
    if os.geteuid() != 0 or _reachable_by_postgres(preferred.parent):
        return preferred
    import hashlib

    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return _SHARED_PARENT / digest


def _own_directory(path: Path) -> None:
    """Create the cluster's parent. Under /var/tmp it must be root's and writable by no one
    else: a local user who made it first could swap the cluster under PostgreSQL."""
    path.mkdir(mode=0o711, parents=True, exist_ok=True)
    st = path.lstat()
    mine = stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022
    if path == _SHARED_PARENT and not mine:
        raise DataPlaneError(f"{path} is not root's own directory: remove it and run msctl up")


def _reachable_by_postgres(path: Path) -> bool:
    from .postgres import SYSTEM_USER, _can_traverse

    try:
        user = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return True  # LocalPostgres will say what is missing
    try:
        return all(_can_traverse(p, user) for p in [path, *path.parents])
    except OSError:  # a state dir that doesn't exist (yet)
        return False


# ---------------------------------------------------------------- the data plane process


def serve(
    state_dir: Path, config_path: Path, overrides: list[str], port: int | None, if_free: bool
) -> None:
    import boto3
    from aiohttp import web

    from ..aws.clients import Clients
    from ..config import load_config
    from ..state import StateStore
    from .edge import Edge
    from .functions import FunctionRunner, lab_code_source
    from .postgres import LocalPostgres
    from .services import ServiceRunner, free_port

    config = load_config(config_path, overrides)
    info = emulator.status(state_dir)
    if info is None:
        raise DataPlaneError("the local emulator is not running; run msctl up")
    state = StateStore(state_dir, config.lab)
    outputs = {step: state.outputs(step) for step in REQUIRED_STEPS}
    missing = [step for step, out in outputs.items() if not out]
    if missing:
        raise DataPlaneError(f"the lab is not fully built (no outputs for {', '.join(missing)})")
    session = boto3.Session(
        region_name=config.region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    clients = Clients(session, info.endpoint)
    account = clients.sts.get_caller_identity()["Account"]
    secret = json.loads(
        clients.secretsmanager.get_secret_value(SecretId=outputs["rds"]["secret_arn"])[
            "SecretString"
        ]
    )

    pg_dir = postgres_dir(Path(state_dir))
    _own_directory(pg_dir.parent)
    # Socket-only: the secret's password is known to anyone who can reach the emulator.
    pg = LocalPostgres(pg_dir, free_port(), superuser=secret["username"], tcp=False)
    functions = FunctionRunner(
        info.endpoint,
        config.region,
        Path(state_dir) / "functions",
        code_source=lab_code_source(config),
    )
    with contextlib.ExitStack() as running:  # stopped in reverse order
        running.callback(pg.stop)
        pg.init()
        pg.start()
        db_name = outputs["rds"].get("db_name") or config.rds.db_name
        if db_name != "postgres":
            pg.create_database(db_name)
        running.callback(functions.close)
        for function in outputs["lambda"]["functions"].values():
            functions.warm(function["arn"])  # cold starts before traffic, not during it
        edge = Edge(clients, outputs["cloudfront"]["distribution_id"], functions.invoke, account)
        services = ServiceRunner(clients, config, str(pg.socket_dir), pg.port, Path(state_dir))
        running.callback(services.stop_all)
        for task in services.start_all():
            if task.target_group_arn:
                edge.register_target(outputs["alb"]["dns_name"], task.target_group_arn, task.url)
        record = (info.instance_id, serves(config_path, overrides))
        asyncio.run(_serve_edge(edge, Path(state_dir), record, port, if_free, web))


async def _serve_edge(
    edge, state_dir: Path, record: tuple[str, str], port: int | None, if_free: bool, web
) -> None:
    from .services import free_port

    runner = web.AppRunner(edge.app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port or free_port()).start()
    except OSError as exc:
        if not if_free:
            raise DataPlaneError(f"cannot serve the lab on port {port}: {exc.strerror}") from None
        logging.getLogger("msctl.dataplane").warning("port %s is taken: another one", port)
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    port = runner.addresses[0][1]
    emulator_id, what = record
    record = DataPlaneInfo(
        os.getpid(),
        port,
        f"http://127.0.0.1:{port}",
        emulator_id,
        datetime.now(UTC).isoformat(timespec="seconds"),
        what,
    )
    emulator.write_record(state_dir / RECORD, record)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    logging.getLogger("msctl.dataplane").info("serving the lab at %s", record.url)
    await stopping.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="msctl.local.dataplane")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--port", type=int)
    parser.add_argument("--port-if-free", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        serve(args.state_dir, args.config, args.overrides, args.port, args.port_if_free)
    except Exception as exc:  # the parent quotes this line
        logging.getLogger("msctl.dataplane").exception("data plane failed")
        print(f"error: {exc}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
