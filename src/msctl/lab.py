"""The library API: a lab on a target, with `plan`, `up`, `status`, `down` and
`rebuild_state`. The CLI is a thin layer over it; this module never prints: what a user
should see arrives through `on_event` (the engine's progress) and `on_notice` (one line
each: a started emulator, a state that describes another target...).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from . import leftovers, preflight, pricing
from .config import LabConfig
from .context import Context, Target, aws_target, make_session
from .engine import runner
from .engine.model import Event, Status
from .engine.runner import RunResult
from .local import emulator
from .state import StateStore, open_store
from .steps import all_steps


class SessionError(Exception):
    """The environment can't host this command (no credentials, wrong target for the state)."""


@dataclass
class Down:
    walk: RunResult | None  # None: nothing to walk (the local emulator isn't running)
    leftovers: leftovers.Leftovers | None  # the final check
    note: str = ""

    @property
    def ok(self) -> bool:
        walked = self.walk is None or self.walk.ok
        return walked and (self.leftovers is None or self.leftovers.ok)


class Lab:
    def __init__(
        self,
        config: LabConfig,
        target: str = "local",
        state_dir: Path = Path(".msctl"),
        *,
        on_event: Callable[[Event], None] = lambda _e: None,
        on_notice: Callable[[str], None] = lambda _m: None,
        config_path: Path | None = None,
        overrides: tuple[str, ...] = (),
        state: str | None = None,
    ):
        self.config = config
        self.target_name = target
        self.state_dir = state_dir
        # Where the state lives: --state, else the config's `state:`, else the state dir
        # (which also holds the local emulator and data plane, whatever the backend).
        self.state_location: str | Path = state or config.state.location or state_dir
        # Quota limits to check against instead of Service Quotas' (preflight.QUOTAS keys).
        self.quota_limits: dict[str, float] | None = None
        self.prices: pricing.Prices | None = None
        self.on_event = on_event
        self.on_notice = on_notice
        self.config_path = config_path
        self.overrides = list(overrides)
        self.steps = all_steps()

    @property
    def local(self) -> bool:
        return self.target_name == "local"

    # ------------------------------------------------------------ commands

    def plan(self, only: list[str] | None = None, destroy: bool = False) -> RunResult:
        action = "plan-destroy" if destroy else "plan"
        with self.session("plan", lock=False, record=False) as ctx:
            return self._run(ctx, action, only, parallel=8)

    def up(
        self,
        only: list[str] | None = None,
        parallel: int = 8,
        confirm: Callable[[LabConfig], None] = lambda _c: None,
        port: int | None = None,
        *,
        serve: bool = True,
        check_quotas: bool = True,
    ) -> tuple[RunResult, str | None]:
        """Build (or finish) the lab, once the quota preflight finds room for it; on the local
        target a full `up` also serves it (unless `serve` is false), on the same URL as
        before (restarted only when what it serves changed). Returns the run and the local
        URL (None when not served)."""
        with self.session("up") as ctx:
            if check_quotas:
                self._check_quotas(ctx, preflight.needs(ctx, self._selected(only)))
            if not self.local:
                self.prices = pricing.for_context(ctx, [self.config.rds.instance_class])
                confirm(self.config)
            result = self._run(ctx, "apply", only, parallel)
        url = None
        if result.ok and self.local and only is None and serve:
            from .local import dataplane

            changed = any(r.changes for r in result.results.values())
            if changed or dataplane.status(self.state_dir) is None or port is not None:
                self.on_notice("starting local services...")
            served, _started = dataplane.ensure(
                self.state_dir, self.config_path, self.overrides, changed=changed, port=port
            )
            url = served.url
        return result, url

    def quota_needs(self, only: list[str] | None = None) -> list[preflight.Need]:
        """What `up` would create that counts against a quota (for several labs at once)."""
        with self.session("up", lock=False, record=False) as ctx:
            return preflight.needs(ctx, self._selected(only))

    def current_prices(self) -> pricing.Prices:
        """The prices `up` confirms with (the Price List API's, else the built-in table)."""
        with self.session("up", lock=False, record=False) as ctx:
            return pricing.for_context(ctx, [self.config.rds.instance_class])

    def check_quotas(self, needs: list[preflight.Need]) -> None:
        """Raise preflight.QuotaExceeded unless the account has room for `needs`."""
        with self.session("up", lock=False, record=False) as ctx:
            self._check_quotas(ctx, needs)

    def _check_quotas(self, ctx: Context, needs: list[preflight.Need]) -> None:
        limits = self.quota_limits
        preflight.check(ctx, needs, local=self.local, limits=limits, note=self.on_notice)

    def _selected(self, only: list[str] | None) -> list[str]:
        return runner.select(self.steps, only, "apply")

    def labs(self) -> dict:
        """Every lab in the account and region (`msctl labs`), with its cost."""
        from . import labs

        if self.local and emulator.status(self.state_dir) is None:
            note = "the local emulator is not running: no lab exists on the local target"
            return {**labs.empty(self.config.region, self.target_name), "note": note}
        target = self._target()
        location = str(self.state_location)
        backend = location if location.startswith("s3://") else None
        return labs.listing(self._context(target, None), backend)  # every lab's: no state

    def public_url(self) -> str:
        """Where the lab answers: the local data plane's URL, or the distribution's."""
        if self.local:
            from .local import dataplane

            served = dataplane.status(self.state_dir)
            if served is None:
                raise SessionError(
                    "the lab is not being served locally: run `msctl up` first (or pass --url)"
                )
            return served.url
        domain = self._store().outputs("cloudfront").get("domain_name")
        if not domain:
            raise SessionError(
                "no CloudFront distribution recorded for this lab: run "
                "`msctl up --target aws` first (or pass --url)"
            )
        return f"https://{domain}"

    def admin_login(self) -> tuple[str, str] | None:
        """The lab admin's (email, password) from the admin step's secret (None: no admin)."""
        from .apitest import admin_login

        with self.session("test-api", lock=False, record=False) as ctx:
            arn = ctx.state.outputs("admin").get("secret_arn")
            return admin_login(ctx.clients.secretsmanager, arn) if arn else None

    def data_at_risk(self, only: list[str] | None = None) -> list[str]:
        """What `down` would delete that holds data: the tables with their item counts, the
        database, the bucket's user objects (empty when nothing of it exists)."""
        if self.local and emulator.status(self.state_dir) is None:
            return []
        chosen = set(runner.select(self.steps, only, "destroy"))
        with self.session("down", lock=False, record=False) as ctx:
            return leftovers.at_risk(ctx, chosen)

    def down(self, only: list[str] | None = None, parallel: int = 8) -> Down:
        """Walk the steps in reverse dependency order, each deleting what is tagged for the
        lab and the step; then look again for anything of the lab that remains."""
        if self.local:
            from .local import dataplane

            if emulator.status(self.state_dir) is None:
                state = self._store()
                removed = False
                if state.exists():
                    with state.locked("down"):
                        state.delete()
                    removed = True
                dataplane.remove_data(self.state_dir)
                return Down(
                    None,
                    None,
                    "the local emulator is not running, so nothing of the lab exists on the "
                    "local target" + ("; removed the stale state file" if removed else ""),
                )
        with self.session("down") as ctx:
            ours = self._serves_this_lab()
            if self.local and ours:
                from .local import dataplane

                dataplane.stop(self.state_dir)  # only once the lock is ours
            walk = self._run(ctx, "destroy", only, parallel)
            selected = None if only is None else runner.select(self.steps, only, "destroy")
            found = leftovers.check(ctx, selected)
            done = Down(walk, found)
            if done.ok and only is None:
                ctx.state.delete()
                if self.local and ours:
                    from .local import dataplane

                    dataplane.remove_data(self.state_dir)
            return done

    def status(self) -> dict:
        """Every step verified against the target, with its recorded resources and outputs,
        where the lab answers, and one summary line. `exists`: anything of the lab exists;
        `ok`: every enabled step is built and as configured."""
        state = self._store()
        state.load()
        doc: dict = {"lab": self.config.lab, "warnings": [], "steps": {}, "cost": None}
        info = None
        if self.local:
            info = emulator.status(self.state_dir)
            target = Target(
                "local",
                self.config.region,
                info.endpoint if info else None,
                info.instance_id if info else None,
            )
            doc["emulator"] = {
                "running": info is not None,
                "endpoint": info.endpoint if info else None,
                "pid": info.pid if info else None,
            }
        else:
            target = aws_target(self.config)
        doc["target"] = {"name": target.name, "region": target.region, "endpoint": target.endpoint}
        doc["warnings"] = check_state_target(state, target)
        result = None
        if not (self.local and info is None):
            ctx = self._context(target, state)
            result = runner.run(ctx, self.steps, "verify", parallel=8)
            from .labs import status_cost

            doc["cost"] = status_cost(ctx, self.on_notice)
        for name in self.steps:
            res = result.results[name] if result else None
            recorded, _reason = state.status(name)
            shown = res.status if res else Status.ABSENT
            if res and recorded is None and _absent(res.checks):
                shown = Status.ABSENT
            doc["steps"][name] = {
                "status": str(shown),
                "reason": res.reason if res else "the local emulator is not running",
                "recorded_status": recorded,
                "checks": [
                    {"name": c.name, "ok": c.ok, "detail": c.detail, "shared": c.shared}
                    for c in (res.checks if res else [])
                ],
                "error": res.error if res else None,
                "resources": state.resources(name),
                "outputs": state.outputs(name),
            }
        steps = doc["steps"].values()
        doc["exists"] = result is not None and exists(result.results.values())
        enabled = [s for s in steps if s["reason"] != "disabled by config"]
        fine = (Status.NOCHANGE, Status.UNSUPPORTED)
        bad = [
            n for n, s in doc["steps"].items() if s in enabled and Status(s["status"]) not in fine
        ]
        doc["ok"] = doc["exists"] and not bad and not doc["warnings"]
        doc["built"] = doc["ok"]
        doc["endpoints"], doc["emulated_endpoints"] = self._endpoints(state, info)
        doc["summary"] = self._summary(doc, bad, len(enabled), info)
        return doc

    def _endpoints(self, state: StateStore, info) -> tuple[dict[str, str], dict[str, str]]:
        """Where the lab answers (on the local target: only what opens from here), and the
        AWS names the local emulator made up (they open nowhere)."""
        found = endpoints(state)
        if not self.local:
            return found, {}
        opens: dict[str, str] = {}
        if info is not None:
            from .local import dataplane

            served = dataplane.status(self.state_dir)
            if served is not None and served.emulator_id == info.instance_id:
                opens = {"site": served.url + "/", "api": served.url + "/api/"}
        return opens, found if info is not None else {}

    def _summary(self, doc: dict, bad: list[str], enabled: int, info) -> str:
        lab = self.config.lab
        if not doc["exists"]:
            if self.local and info is None:
                return (
                    f"nothing of lab {lab} exists: the local emulator is not running "
                    "(`msctl up` starts it and builds the lab)"
                )
            if self.local:
                return (
                    f"nothing of lab {lab} exists; the emulator is still running "
                    "(`msctl local stop` ends it)"
                )
            return f"nothing of lab {lab} exists in {doc['target']['region']}"
        if doc["ok"]:
            where = doc["endpoints"].get("site")
            answers = f"; it answers at {where}" if where else ""
            return f"lab {lab}: all {enabled} steps built and as configured{answers}"
        if bad:
            return (
                f"lab {lab}: {len(bad)} of {enabled} steps missing or not as configured "
                f"({', '.join(bad)}); `msctl up` builds what is missing"
            )
        return f"lab {lab}: {doc['warnings'][0]}"

    def rebuild_state(self) -> dict:
        """Move the state file aside (never deleted) and rebuild it from the lab's tags: each
        step's `rebuild` (a verify that records what it finds) in dependency order."""
        state = self._store()
        summary: dict = {"backup": None, "target": self.target_name, "steps": {}, "note": ""}
        with state.locked("status --rebuild-state"):
            summary["backup"] = state.move_aside()
            state.load()  # a missing file is an empty state
            if self.local and emulator.status(self.state_dir) is None:
                summary["note"] = (
                    "the local emulator is not running, so nothing of the lab exists to "
                    "rebuild the state from; `msctl up` starts it and builds the lab"
                )
                return summary
            target = self._target()
            _record_target(state, target)
            result = runner.run(self._context(target, state), self.steps, "rebuild", parallel=1)
        for name, res in result.results.items():
            found = [c for c in res.checks if c.ok]
            summary["steps"][name] = {
                "resources": len(state.resources(name)),
                "missing": len(res.checks) - len(found),
                "outputs": bool(state.outputs(name)),
                "error": None if res.status is Status.COMPLETE else (res.error or res.reason),
            }
        return summary

    # ------------------------------------------------------------ helpers

    @contextmanager
    def session(self, command: str, *, lock: bool = True, record: bool = True) -> Iterator[Context]:
        """The lab's context for one command: target resolved, state loaded (and locked)."""
        target = self._target()
        state = self._store(target)
        with state.locked(command) if lock else nullcontext():
            state.load()
            for warning in check_state_target(state, target):
                self.on_notice(f"! {warning}")
            if record:
                _record_target(state, target)
            yield self._context(target, state)

    def _store(self, target: Target | None = None) -> StateStore:
        """The lab's state in its backend; an S3 backend is read on the target (the local
        emulator holds the bucket there: while it is stopped, so is the state, and the
        state dir's (empty) state stands in)."""
        location = str(self.state_location)
        if not location.startswith("s3://"):
            return open_store(self.state_location, self.config.lab)
        if target is None and self.local:
            info = emulator.status(self.state_dir)
            target = Target("local", self.config.region, info.endpoint if info else None)
        target = target or aws_target(self.config)
        if target.is_local and target.endpoint is None:
            return open_store(self.state_dir, self.config.lab)
        from .state_s3 import client_for

        return open_store(location, self.config.lab, client=client_for(target))

    def _serves_this_lab(self) -> bool:
        """False when the local data plane runs for another lab of this state dir (labs on
        one emulator share it): `down` of this lab leaves it serving."""
        if not self.local:
            return False
        from .config import load_config
        from .local import dataplane

        info = dataplane.status(self.state_dir)
        if info is None:
            return True
        try:
            config_path, overrides = json.loads(info.serves)
            return load_config(Path(config_path), overrides).lab == self.config.lab
        except Exception:  # can't tell: as before, this lab's
            return True

    def _context(self, target: Target, state: StateStore | None) -> Context:
        ctx = Context(self.config, target, state, listener=self.on_event)
        ctx.clients.prepare({svc for step in self.steps.values() for svc in step.services})
        return ctx

    def _run(self, ctx: Context, action, only: list[str] | None, parallel: int) -> RunResult:
        selected = runner.select(self.steps, only, action)
        return runner.run(ctx, self.steps, action, selected=selected, parallel=parallel)

    def _target(self) -> Target:
        if self.local:
            try:
                info, started = emulator.start(self.state_dir)
            except emulator.EmulatorError as exc:
                raise SessionError(str(exc)) from None
            if started:
                self.on_notice(
                    f"started the local emulator at {info.endpoint} (pid {info.pid}); "
                    "`msctl local stop` ends it"
                )
            return Target("local", self.config.region, info.endpoint, info.instance_id)
        return check_aws(self.config)


def check_aws(config: LabConfig) -> Target:
    """The aws target, once its region fits the config and its credentials work."""
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


def _record_target(state: StateStore, target: Target) -> None:
    state.set_meta(
        target=target.name,
        region=target.region,
        endpoint=target.endpoint,
        emulator_id=target.emulator_id,
    )


ENDPOINTS = (
    ("site", "cloudfront", "domain_name", "https://{}/"),
    ("custom_domain", "route53", "fqdn", "https://{}/"),
    ("api", "apigw", "invoke_url", "{}"),
    ("load_balancer", "alb", "dns_name", "http://{}/"),
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


def exists(results) -> bool:
    """Anything of the lab exists: a check of the lab's own that doesn't say missing."""
    return any(
        not c.shared and not c.detail.startswith("missing") for r in results for c in r.checks
    )


def _absent(checks) -> bool:
    """Nothing of the step exists: every check of the lab's own says missing."""
    own = [c for c in checks if not c.shared]
    return bool(own) and all(not c.ok and c.detail.startswith("missing") for c in own)
