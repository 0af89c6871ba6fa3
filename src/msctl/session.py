"""Opening a lab for a command: target resolution, emulator, credentials, state and lock."""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.console import Console

from .aws.errors import describe
from .config import LabConfig
from .context import Context, Target, aws_target, make_session
from .engine import graph, runner
from .engine.model import Pending, Status
from .engine.step import NotSupported, Step, StepError, StepRun
from .local import emulator
from .state import StateError, StateStore
from .steps import all_steps


class SessionError(Exception):
    """The environment can't host this command (no credentials, wrong target for the state)."""


@dataclass
class Session:
    config: LabConfig
    target: Target
    state: StateStore
    ctx: Context
    warnings: list[str] = field(default_factory=list)

    @classmethod
    @contextmanager
    def open(
        cls,
        config: LabConfig,
        target_name: str,
        state_dir: Path,
        *,
        command: str,
        console: Console,
        lock: bool = True,
        record: bool = True,
    ) -> Iterator[Session]:
        target = resolve_target(config, target_name, state_dir, console)
        state = StateStore(state_dir, config.lab)
        guard = state.locked(command) if lock else _nothing()
        with guard:
            state.load()
            warnings = check_state_target(state, target)
            for warning in warnings:
                console.print(f"[yellow]! {warning}[/]")
            if record:
                state.set_meta(
                    target=target.name,
                    region=target.region,
                    endpoint=target.endpoint,
                    emulator_id=target.emulator_id,
                )
            ctx = Context(config, target, state)
            yield cls(config, target, state, ctx, warnings)

    def prepare_clients(self, steps: Mapping[str, Step], selected: list[str]) -> None:
        """Build every client the run needs up front, in this (the main) thread."""
        services = {svc for name in selected for svc in steps[name].services}
        self.ctx.clients.prepare(services)

    @staticmethod
    def forget(config: LabConfig, state_dir: Path) -> bool:
        """Remove the state of a lab whose emulator is gone (nothing of it exists anymore)."""
        state = StateStore(state_dir, config.lab)
        if not state.exists():
            return False
        with state.locked("down"):
            state.delete()
        return True

    @staticmethod
    def status(config: LabConfig, target_name: str, state_dir: Path) -> dict:
        """Every step verified against the target, with its recorded resources and outputs."""
        state = StateStore(state_dir, config.lab)
        state.load()
        steps = all_steps()
        doc: dict = {"lab": config.lab, "warnings": [], "steps": {}, "endpoints": {}}
        if target_name == "local":
            info = emulator.status(state_dir)
            target = Target(
                "local",
                config.region,
                info.endpoint if info else None,
                info.instance_id if info else None,
            )
            doc["emulator"] = {
                "running": info is not None,
                "endpoint": info.endpoint if info else None,
                "pid": info.pid if info else None,
            }
        else:
            target, info = aws_target(config), None
        doc["target"] = {"name": target.name, "region": target.region, "endpoint": target.endpoint}
        doc["warnings"] = check_state_target(state, target)
        if target.is_local and info is None:
            doc["warnings"].append(
                "the local emulator is not running, so nothing of the lab "
                "exists; `msctl up` starts it and builds the lab"
            )
            result = None
        else:
            ctx = Context(config, target, state)
            ctx.clients.prepare({svc for step in steps.values() for svc in step.services})
            result = runner.run(ctx, steps, "verify", parallel=8)
        for name in steps:
            res = result.results[name] if result else None
            recorded, _reason = state.status(name)
            shown = res.status if res else Status.SKIPPED
            if res and recorded is None and _absent(res.checks, steps[name].kept_after_down):
                shown = Status.ABSENT
            doc["steps"][name] = {
                "status": str(shown),
                "reason": (res.reason if res else "emulator not running"),
                "recorded_status": recorded,
                "checks": [
                    {"name": c.name, "ok": c.ok, "detail": c.detail}
                    for c in (res.checks if res else [])
                ],
                "error": res.error if res else None,
                "resources": state.resources(name),
                "outputs": state.outputs(name),
            }
        doc["endpoints"] = endpoints(state)
        if target.is_local and info is not None:
            from .local import dataplane

            served = dataplane.status(state_dir)
            if served is not None and served.emulator_id == info.instance_id:
                doc["endpoints"] = {"site (local)": served.url + "/", **doc["endpoints"]}
        shown = [Status(step["status"]) for step in doc["steps"].values()]
        doc["built"] = state.exists() and Status.ABSENT not in shown
        doc["ok"] = (
            result is not None
            and not doc["warnings"]
            and all(
                s in (Status.COMPLETE, Status.NOCHANGE, Status.UNSUPPORTED, Status.ABSENT)
                for s in shown
            )
        )
        return doc

    @staticmethod
    def rebuild_state(
        config: LabConfig, target_name: str, state_dir: Path, console: Console
    ) -> dict:
        """Move the state file aside (never deleted) and rebuild it from the lab's tags.

        Each step runs a dry reconcile (what `verify` does: it finds resources by tags or
        by their unique names) in dependency order; the resources it finds are recorded as
        `apply` would record them, and its outputs too when none of them is still unknown
        (a missing resource leaves Pending values: those outputs aren't written).
        """
        state = StateStore(state_dir, config.lab)
        summary: dict = {"backup": None, "target": target_name, "steps": {}, "note": ""}
        with state.locked("status --rebuild-state"):
            summary["backup"] = _move_aside(state.path)
            state.load()  # a missing file is an empty state
            if target_name == "local":
                info = emulator.status(state_dir)
                if info is None:
                    summary["note"] = (
                        "the local emulator is not running, so nothing of the lab exists to "
                        "rebuild the state from; `msctl up` starts it and builds the lab"
                    )
                    return summary
                target = Target("local", config.region, info.endpoint, info.instance_id)
            else:
                target = resolve_target(config, target_name, state_dir, console)
            state.set_meta(
                target=target.name,
                region=target.region,
                endpoint=target.endpoint,
                emulator_id=target.emulator_id,
            )
            ctx = Context(config, target, state)
            steps = all_steps()
            ctx.clients.prepare({svc for step in steps.values() for svc in step.services})
            requires = {name: step.requires for name, step in steps.items()}
            unreadable: set[str] = set()
            for name in graph.order(requires):
                summary["steps"][name] = _rebuild_step(ctx, steps[name], unreadable)
        return summary


class _Recorder(StepRun):
    """A dry run that also keeps what each `ensure` found, as `apply` records it."""

    def __init__(self, ctx: Context, step: str):
        super().__init__(ctx, step, dry_run=True)
        self.resources: dict[str, tuple[str, str | None]] = {}

    def ensure(self, kind: str, name: str, *, find, id_key: str, arn_key=None, **kwargs):
        def spy():
            found = find()
            if found is not None:
                self.resources[f"{kind}:{name}"] = (found[id_key], found.get(arn_key or ""))
            return found

        return super().ensure(kind, name, find=spy, id_key=id_key, arn_key=arn_key, **kwargs)


def _rebuild_step(ctx: Context, step: Step, unreadable: set[str]) -> dict:
    """Record one step's found resources (and its outputs, when all are known)."""
    entry: dict = {"resources": 0, "outputs": False, "missing": 0, "error": None}
    blocked = [dep for dep in step.requires if dep in unreadable]
    if blocked:
        unreadable.add(step.name)
        entry["error"] = f"not read: it needs step {blocked[0]}, which could not be read"
        return entry
    if not step.enabled(ctx):
        entry["error"] = "disabled by config"
        return entry
    run = _Recorder(ctx, step.name)
    try:
        outputs = step.reconcile(run) or {}
    except StepError as exc:
        unreadable.add(step.name)
        entry["error"] = str(exc)
        return entry
    except NotSupported as exc:
        unreadable.add(step.name)
        entry["error"] = f"not supported on this target: {exc}"
        return entry
    except Exception as exc:  # an AWS error: this step only
        unreadable.add(step.name)
        entry["error"] = describe(exc)[0]
        return entry
    ctx.set_outputs(step.name, outputs)  # the next steps' dry reconciles read them
    for key, (ident, arn) in run.resources.items():
        ctx.state.record_resource(step.name, key, ident, arn)
    entry["resources"] = len(run.resources)
    entry["missing"] = sum(1 for c in run.changes if c.action == "create")
    if not run.resources:
        return entry
    if _has_pending(outputs):
        ctx.state.set_status(
            step.name,
            str(Status.FAILED),
            f"rebuilt from the lab's tags; {entry['missing']} resource(s) missing: run `msctl up`",
        )
        return entry
    ctx.state.set_outputs(step.name, outputs)
    ctx.state.set_status(step.name, str(Status.COMPLETE), "rebuilt from the lab's tags")
    entry["outputs"] = True
    return entry


def _has_pending(value) -> bool:
    if isinstance(value, Pending):
        return True
    if isinstance(value, dict):
        return any(_has_pending(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_pending(v) for v in value)
    return False


def _move_aside(path: Path) -> str | None:
    """Rename the state file to `<name>.bak-<UTC timestamp>`; never delete it."""
    if not path.exists():
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.bak-{stamp}")
    n = 1
    while backup.exists():
        n += 1
        backup = path.with_name(f"{path.name}.bak-{stamp}-{n}")
    try:
        os.replace(path, backup)
    except OSError as exc:
        raise StateError(f"cannot move the state file {path} aside: {exc.strerror}") from None
    return str(backup)


ENDPOINTS = (
    ("site", "cloudfront", "domain_name", "https://{}/"),
    ("custom domain", "route53", "fqdn", "https://{}/"),
    ("api", "apigw", "invoke_url", "{}"),
    ("load balancer", "alb", "dns_name", "http://{}/"),
    ("database", "rds", "endpoint_address", "{}"),
)


def endpoints(state: StateStore) -> dict[str, str]:
    """The lab's addresses a user wants to open, from the recorded outputs."""
    found = {}
    for label, step, key, template in ENDPOINTS:
        value = state.outputs(step).get(key)
        if value:
            found[label] = template.format(value)
    return found


def _absent(checks, kept: tuple[str, ...]) -> bool:
    """Nothing of the step exists: every check says missing, but for what it keeps on purpose."""
    own = [c for c in checks if not (c.ok and c.name.startswith(kept))] if kept else checks
    return bool(own) and all(not c.ok and c.detail.startswith("missing") for c in own)


@contextmanager
def _nothing():
    yield


def resolve_target(config: LabConfig, name: str, state_dir: Path, console: Console) -> Target:
    if name == "local":
        try:
            info, started = emulator.start(state_dir)
        except emulator.EmulatorError as exc:
            raise SessionError(str(exc)) from None
        if started:
            console.print(
                f"started the local emulator at {info.endpoint} (pid {info.pid}); "
                "`msctl local stop` ends it"
            )
        return Target("local", config.region, info.endpoint, info.instance_id)
    target = aws_target(config)
    zones = {s.az for s in (*config.vpc.public_subnets, *config.vpc.private_subnets)}
    wrong = sorted(z for z in zones if not z.startswith(target.region))
    if wrong:
        raise SessionError(
            f"the subnets' availability zones ({', '.join(wrong)}) are not in region "
            f"{target.region}; set the zones with --set or use AWS_REGION={config.region}"
        )
    try:
        make_session(target).client("sts", endpoint_url=target.endpoint).get_caller_identity()
    except NoCredentialsError:
        raise SessionError(
            "no AWS credentials found: set AWS_PROFILE or run `aws configure` "
            "(or use the default local target)"
        ) from None
    except (ClientError, BotoCoreError) as exc:
        raise SessionError(f"AWS credentials don't work: {exc}") from None
    return target


def check_state_target(state: StateStore, target: Target) -> list[str]:
    """The state file must describe the lab on this target; say so when it can't."""
    meta = state.meta()
    if not meta:
        return []
    if meta.get("target") != target.name:
        raise SessionError(
            f"the state in {state.path} is for target {meta.get('target')!r}, not "
            f"{target.name!r}; use --target {meta.get('target')} or another --state-dir"
        )
    if target.is_local and meta.get("emulator_id") and meta["emulator_id"] != target.emulator_id:
        return [
            "the emulator this lab was built on is gone (stopped or restarted), and the lab "
            "with it; `msctl up` rebuilds it"
        ]
    if not target.is_local and meta.get("endpoint") != target.endpoint:
        return [
            f"the lab was built on endpoint {meta.get('endpoint') or 'AWS'}, now using "
            f"{target.endpoint or 'AWS'}"
        ]
    return []
