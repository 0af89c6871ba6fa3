"""Makespan of `up` and `down` under AWS's timings, against the critical path.

    python benchmarks/makespan.py [--scale 1.0] [--poll SECONDS] [--domain example.com] [--no-write]

Runs the whole lab (every step, through the engine's runner, 8 at a time like `msctl up`)
on in-process moto under the strict layer's timed states (tests/support/timed.py): each
slow resource reports its transitional state for its AWS minutes times `--scale` seconds.
msctl's time is scaled like AWS's: its `poll_interval` (the Context's; by default one AWS
second at this scale, scale/60: the unit its poll schedule is written in, or its fixed
interval) and its retries' sleeps (its own and botocore's, by scale/60), so a poll and a
retry stay the same small fraction of each wait as on AWS.

In-process moto rather than the local emulator's server: the layer's rules read moto's state
through an unhooked in-process session, and the makespan measured here is made of AWS's
(modelled) waits and of how msctl orders and overlaps them, which the transport doesn't
change; in-process, nothing else (the server's HTTP, the local data plane `up` starts after
the steps) is timed with it. The clients and their hooks are the same as on the emulator.

Reported for `up` and `down`: wall time, the critical path (the longest chain of waits that
the lab's real data dependencies force, computed from the model below with the same
durations the layer uses) and their ratio; for `up` also the single slowest resource (RDS
creation); and a timeline of the steps and of each slow resource. Appended to RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Makespan: `up` and `down` under AWS's timings (benchmarks/makespan.py)"
OK = {"complete", "nochange", "unsupported"}
NEEDED = {"nat-gateway", "db-instance", "load-balancer", "ecs-service", "lambda-function"}
NEEDED |= {"distribution", "certificate"}
MOTO_BACKENDS = (
    *("acm", "apigateway", "applicationautoscaling", "cloudfront", "cloudwatch", "dynamodb"),
    *("ec2", "ecr", "ecs", "elbv2", "iam", "awslambda", "logs", "rds"),
    *("resourcegroupstaggingapi", "route53", "s3", "secretsmanager", "sns", "sts", "xray"),
)

# The lab's real data dependencies between resources, not msctl's step order: each moment
# is ((the kind whose AWS minutes it takes, CREATE or DELETE), or None for API calls that
# answer at once; what must have happened first). A distribution's disable is a deploy.
CREATE, DELETE = 0, 1
UP = {
    "network": (None, []),  # VPC, subnets, gateway, route tables, security groups
    "NAT gateway available": (("nat-gateway", CREATE), ["network"]),
    "DB instance available": (
        ("db-instance", CREATE),
        ["network"],
    ),  # subnets + security group only
    "load balancer DNS name": (None, ["network"]),  # answered by the create call
    "load balancer active": (("load-balancer", CREATE), ["network"]),
    "roles, tables, bucket, images": (None, []),
    "functions Active": (("lambda-function", CREATE), ["roles, tables, bucket, images"]),
    # Tasks pull their images through the NAT gateway; they register with the target groups
    # (listeners can be made on a provisioning load balancer). They find the database
    # themselves: the lab works once both are there.
    "services steady": (
        ("ecs-service", CREATE),
        ["NAT gateway available", "load balancer DNS name", "roles, tables, bucket, images"],
    ),
    # API Gateway needs the functions' ARNs and the load balancer's DNS name, not their states.
    "API deployed": (None, ["load balancer DNS name", "roles, tables, bucket, images"]),
    "validation records in sync": (("route53-change", CREATE), []),
    "certificate issued": (("certificate", CREATE), ["validation records in sync"]),
    "distribution created": (None, ["API deployed", "certificate issued"]),
    "distribution deployed": (("distribution", CREATE), ["distribution created"]),
    "aliases in sync": (("route53-change", CREATE), ["distribution created"]),  # its domain name
    "lab works end to end": (
        None,
        [
            "DB instance available",
            "services steady",
            "load balancer active",
            "functions Active",
            "distribution deployed",
            "aliases in sync",
        ],
    ),
}
DOWN = {
    "distribution disabled": (("distribution", CREATE), []),  # the disable deploys first
    "distribution, OAC, certificate deleted": (None, ["distribution disabled"]),
    "aliases and validation records removed": (None, []),
    "zone deleted": (None, ["aliases and validation records removed"]),
    "API, functions, tables, roles deleted": (None, []),
    "services drained": (("ecs-service", DELETE), []),  # scaled to 0 and deleted: tasks stop
    "cluster, task definitions deleted": (None, ["services drained"]),
    "load balancer deleted": (None, []),
    "load balancer interfaces released": (("load-balancer", DELETE), ["load balancer deleted"]),
    "target groups deleted": (None, ["load balancer deleted", "services drained"]),
    "DB instance deleted": (("db-instance", DELETE), []),
    "DB subnet group deleted": (None, ["DB instance deleted"]),
    "NAT gateway deleted": (("nat-gateway", DELETE), []),
    "Elastic IP released": (None, ["NAT gateway deleted"]),
    "security groups deleted": (
        None,
        ["DB instance deleted", "services drained", "load balancer interfaces released"],
    ),
    "subnets deleted": (
        None,
        [
            "DB subnet group deleted",
            "services drained",
            "load balancer interfaces released",
            "NAT gateway deleted",
        ],
    ),
    "gateway detached": (None, ["Elastic IP released", "load balancer interfaces released"]),
    "VPC deleted": (None, ["subnets deleted", "security groups deleted", "gateway detached"]),
}
DOMAIN_ONLY = {
    "validation records in sync",
    "certificate issued",
    "aliases in sync",
    "aliases and validation records removed",
    "zone deleted",
}


def critical_path(model: dict, minutes, domain: bool) -> tuple[float, list]:
    """The longest chain (AWS minutes, [(moment, minutes)]) through `model`."""
    nodes = {k: v for k, v in model.items() if domain or k not in DOMAIN_ONLY}
    memo: dict[str, tuple[float, list]] = {}

    def longest(name: str) -> tuple[float, list]:
        if name not in memo:
            takes, needs = nodes[name]
            own = minutes[takes[0]][takes[1]] if takes else 0.0
            before = max((longest(n) for n in needs if n in nodes), default=(0.0, []))
            memo[name] = (before[0] + own, [*before[1], (name, own)])
        return memo[name]

    return max((longest(n) for n in nodes), key=lambda found: found[0])


def prepare_moto() -> None:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "false",
        "MOTO_ECS_SERVICE_RUNNING": "2",
    }.items():
        os.environ[key] = value
    for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(key, None)
    # Steps run in threads: import moto's backends up front (tests/steps/conftest.py).
    for service in MOTO_BACKENDS:
        importlib.import_module(f"moto.{service}.models")


# One read per service before the clock starts: moto builds a region's backend (EC2's with
# its AMIs and instance types) on first use, a cost AWS doesn't have.
WARM_UP = {
    **{"acm": "list_certificates", "cloudfront": "list_distributions", "s3": "list_buckets"},
    **{"route53": "list_hosted_zones", "sns": "list_topics", "ec2": "describe_vpcs"},
    **{"rds": "describe_db_instances", "elbv2": "describe_load_balancers"},
    **{"ecs": "list_clusters", "lambda": "list_functions", "iam": "list_roles"},
    **{"dynamodb": "list_tables", "ecr": "describe_repositories", "apigateway": "get_rest_apis"},
    **{"logs": "describe_log_groups", "cloudwatch": "describe_alarms"},
    **{"secretsmanager": "list_secrets", "resourcegroupstaggingapi": "get_resources"},
}


def warm_up(region: str) -> None:
    import boto3

    for service, call in WARM_UP.items():
        with contextlib.suppress(Exception):  # a call moto lacks has warmed it too
            getattr(boto3.client(service, region_name=region), call)()


def measure(args) -> dict:
    import moto.settings
    from botocore.retries.standard import ExponentialBackoff
    from moto import mock_aws

    from msctl import leftovers
    from msctl.aws import retry
    from msctl.config import load_config
    from msctl.context import Context, Target
    from msctl.engine import runner
    from msctl.state import StateStore
    from msctl.steps import all_steps
    from tests.support.strict import StrictAws
    from tests.support.timed import Timings

    factor = args.scale / 60  # an AWS second
    real_sleep = retry.sleep
    retry.sleep = lambda seconds: real_sleep(seconds * factor)
    backoff = ExponentialBackoff.delay_amount
    ExponentialBackoff.delay_amount = lambda self, context: backoff(self, context) * factor
    moto.settings.ACM_VALIDATION_WAIT = 0  # the layer decides when it is issued

    overrides = [f"route53.domain={args.domain}"] if args.domain else []
    config = load_config(ROOT / "config" / "lab.yaml", overrides)
    events: list[tuple[float, str, str]] = []
    timings = Timings.aws(scale=args.scale)
    with mock_aws(), tempfile.TemporaryDirectory() as state_dir:
        ctx = Context(
            config,
            Target("local", config.region, None),
            StateStore(Path(state_dir), config.lab),
            listener=lambda e: events.append((time.monotonic(), e.kind, e.step)),
            poll_interval=args.poll,
        )
        warm_up(config.region)
        strict = StrictAws(timings=timings).install(ctx.session)
        steps = all_steps()
        phases = {}
        for name, action in (("up", "apply"), ("down", "destroy")):
            events.clear()
            seen_rules = dict(strict.rules)
            start = time.monotonic()
            result = runner.run(ctx, steps, action, parallel=8)
            left = leftovers.check(ctx) if action == "destroy" else None
            wall = time.monotonic() - start
            bad = {n: f"{r.status}: {r.reason}" for n, r in result.results.items()}
            bad = {n: s for n, s in bad.items() if s.split(":")[0] not in OK}
            if bad or (left is not None and left.remaining):
                raise SystemExit(f"{name} failed: {bad or left.remaining}")
            lives = strict.timed.timeline(since=start)
            moment = "ready" if action == "apply" else "gone"
            phases[name] = {
                # What the run said was done before AWS had it done: a lab that doesn't work.
                "early": [
                    f"{x['kind']} {_short(x['id'])} ({moment} at {x[moment] or 0:.2f})"
                    for x in lives
                    if x["kind"] in NEEDED
                    and (x[moment] is None or x[moment] > wall)
                    and (action == "apply" or x["deleted"] is not None)
                ],
                "rules": dict(Counter(strict.rules) - Counter(seen_rules)),
                "wall": wall,
                "steps": _steps(events, start),
                "lives": lives,
            }
    domain = bool(args.domain)
    for name, model in (("up", UP), ("down", DOWN)):
        minutes, chain = critical_path(model, timings.minutes, domain)
        phases[name].update(critical=minutes * args.scale, chain=chain)
        # When the chain's first slow wait could start: what the API calls before it took.
        kind = next(takes[0] for m, _v in chain if (takes := model[m][0]))
        calls = [
            moment
            for life in phases[name]["lives"]
            if life["kind"] == kind
            for moment in [life["created"], life["deleted"], *(u[0] for u in life["updates"])]
            if moment is not None and moment >= 0
        ]
        phases[name]["first"] = min(calls, default=0.0)
    phases["up"]["slowest"] = timings.minutes["db-instance"][0] * args.scale
    return phases


def _steps(events, start) -> dict[str, tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for at, kind, step in events:
        if kind in ("start", "finish"):
            spans.setdefault(step, [at, at])[1 if kind == "finish" else 0] = at
    return {s: (a - start, b - start) for s, (a, b) in sorted(spans.items(), key=lambda x: x[1])}


def _short(ident: str) -> str:
    return ident.rsplit("/", 1)[-1].rsplit(":", 1)[-1]


def _slow(life: dict) -> str | None:
    """What a resource went through in this phase: create -> ready, update -> done (a
    distribution's disable), delete -> gone; None if nothing that took time."""
    spans = []
    if life["created"] is not None and life["created"] >= 0:
        ready = life["ready"]
        spans.append(f"{life['created']:.2f} → {'?' if ready is None else f'{ready:.2f}'}")
    spans += [f"update {a:.2f} → {b:.2f}" for a, b in life["updates"] if a >= 0 and b is not None]
    deleted, gone = life["deleted"], life["gone"]
    if deleted is not None and deleted >= 0 and gone > deleted:
        spans.append(f"delete {deleted:.2f} → {gone:.2f}")
    return f"{life['kind']} {_short(life['id'])}: {', '.join(spans)}" if spans else None


def render(phases: dict, args) -> str:
    cpus = os.cpu_count()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lab = f"with route53.domain={args.domain}" if args.domain else "default config (no domain)"
    lines = [
        f"### Run {when}{f' ({args.label})' if args.label else ''}",
        "",
        f"Machine: {cpus} CPUs (load average {os.getloadavg()[0]:.1f} at the end), "
        f"{platform.system()} {platform.machine()}, Python {platform.python_version()}. "
        f"Scale: {args.scale} s per AWS minute; poll interval {args.poll:.3g} s. Lab: {lab}.",
        "",
        "| phase | wall s | critical path s (AWS min) | wall / critical | "
        "slowest resource s | wall / slowest | its first wait began at s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, p in phases.items():
        slowest = p.get("slowest")
        tail = f"{slowest:.2f} | {p['wall'] / slowest:.2f}x" if slowest else "- | -"
        lines.append(
            f"| {name} | {p['wall']:.2f} | {p['critical']:.2f} ({p['critical'] / args.scale:.1f})"
            f" | {p['wall'] / p['critical']:.2f}x | {tail} | {p['first']:.2f} |"
        )
    for name, p in phases.items():
        chain = " → ".join(f"{m} ({v:g})" if v else m for m, v in p["chain"])
        lines += ["", f"Critical path of `{name}` (AWS minutes): {chain}."]
        rules = ", ".join(f"{k} ×{n}" for k, n in p["rules"].items()) or "none"
        lines += ["", f"AWS rules `{name}` ran into (and waited out): {rules}."]
        if p["early"]:
            lines += ["", f"**`{name}` ended before AWS was done with:** {', '.join(p['early'])}."]
        lines += [""]
        lines += [f"`{name}` timeline (seconds from its start):", ""]
        lines += ["| step | start | end | slow resources |", "|---|---|---|---|"]
        by_step: dict[str, list[str]] = {}
        for life in p["lives"]:
            text = _slow(life)
            if text:
                by_step.setdefault(life["step"] or "?", []).append(text)
        for step, (a, b) in p["steps"].items():
            slow = "; ".join(by_step.pop(step, []))
            lines.append(f"| {step} | {a:.2f} | {b:.2f} | {slow} |")
        for step, slow in by_step.items():
            lines.append(f"| ({'no step tag' if step == '?' else step}) | | | {'; '.join(slow)} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="seconds per AWS minute")
    parser.add_argument("--poll", type=float, help="poll_interval, s (default: scale/60)")
    parser.add_argument("--domain", default=None, help="route53.domain (adds ACM, Route 53)")
    parser.add_argument("--label", default="", help="a note for the run's heading")
    parser.add_argument("--results", type=Path, default=RESULTS, help="the file to append to")
    parser.add_argument("--no-write", action="store_true", help="don't append to RESULTS.md")
    args = parser.parse_args()
    args.poll = args.scale / 60 if args.poll is None else args.poll
    prepare_moto()
    report = render(measure(args), args)
    print(report)
    if not args.no_write:
        text = args.results.read_text()
        if SECTION not in text:
            text = text.rstrip("\n") + "\n\n" + SECTION + "\n\n" + INTRO
        args.results.write_text(text.rstrip("\n") + "\n\n" + report)


INTRO = """\
Command: `python benchmarks/makespan.py` (see its docstring). The whole lab's `up` and
`down` through the engine's runner (8 steps at a time) on in-process moto under the strict
layer's timed states: every slow resource reports its transitional state for its AWS minutes
(tests/support/timed.py: RDS 7 to create and 2.5 to delete, NAT gateway 2 and 1, ALB 3,
CloudFront 3.5 per deploy, ECS rollout 2.5 and drain 1, ...) times the scale. The critical
path is computed from the benchmark's model of the lab's real data dependencies. "Its first
wait began at": when the critical path's first slow resource was asked for (for `up`, the
CreateDBInstance call, after the VPC and security group steps): API calls no overlap can
remove, a larger share of the wall time at a smaller scale. Targets (issue #14): `up` within
1.10x of its slowest resource (RDS creation), `down` within 1.15x of its critical path.
"""


if __name__ == "__main__":
    main()
