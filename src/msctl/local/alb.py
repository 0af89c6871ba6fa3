"""Application Load Balancer emulation: listener rules -> target groups -> local targets.

A rule matches as on AWS when all its conditions do: path patterns (case-sensitive) and HTTP
header conditions (the lab's origin secret: name and values case-insensitive, `*` and `?`
wildcards). A rule with a condition of another type never matches: the emulation would
rather refuse than forward what AWS wouldn't.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

Headers = Sequence[tuple[str, str]]


@dataclass
class Rule:
    priority: int
    path_patterns: list[str]
    action: dict
    headers: dict[str, list[str]] = field(default_factory=dict)  # lower-case name -> values
    unsupported: bool = False  # a condition the emulation doesn't evaluate

    @classmethod
    def from_api(cls, rule: dict) -> Rule:
        """A rule as DescribeRules reports it."""
        patterns: list[str] = []
        headers: dict[str, list[str]] = {}
        unsupported = False
        for condition in rule.get("Conditions", []):
            field_name = condition.get("Field")
            if field_name == "path-pattern":
                config = condition.get("PathPatternConfig") or {}
                patterns += config.get("Values") or condition.get("Values", [])
            elif field_name == "http-header":
                config = condition.get("HttpHeaderConfig") or {}
                name = config.get("HttpHeaderName", "").lower()
                headers.setdefault(name, []).extend(config.get("Values", []))
            else:
                unsupported = True
        priority = 1_000_000 if rule.get("IsDefault") else int(rule["Priority"])
        return cls(priority, patterns, rule["Actions"][0], headers, unsupported)

    def matches(self, path: str, headers: Headers = ()) -> bool:
        if self.unsupported:
            return False
        if self.path_patterns and not any(_glob(p).match(path) for p in self.path_patterns):
            return False
        for name, patterns in self.headers.items():
            values = [v for k, v in headers if k.lower() == name]
            if not any(_glob(p, re.IGNORECASE).match(v) for p in patterns for v in values):
                return False
        return True


@dataclass
class LoadBalancer:
    arn: str
    dns_name: str
    rules: list[Rule]  # by priority, default last
    targets: dict[str, list[str]] = field(default_factory=dict)  # target group arn -> base URLs
    _cursors: dict[str, itertools.cycle] = field(default_factory=dict)

    @classmethod
    def load(cls, client, dns_name: str, port: int = 80) -> LoadBalancer | None:
        """Read the listener on `port` and its rules from the emulator."""
        lbs = [
            lb
            for lb in client.describe_load_balancers()["LoadBalancers"]
            if lb["DNSName"].lower() == dns_name.lower()
        ]
        if not lbs:
            return None
        lb = lbs[0]
        listeners = client.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        listener = next((li for li in listeners if li["Port"] == port), None)
        rules: list[Rule] = []
        if listener is not None:
            described = client.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]
            rules = [Rule.from_api(rule) for rule in described]
        rules.sort(key=lambda r: r.priority)
        return cls(lb["LoadBalancerArn"], lb["DNSName"], rules)

    def register(self, target_group_arn: str, base_url: str) -> None:
        self.targets.setdefault(target_group_arn, []).append(base_url)
        self._cursors.pop(target_group_arn, None)

    def route(self, path: str, headers: Headers = ()) -> tuple[str, str | dict]:
        """("forward", base URL) or ("fixed", {status, content_type, body}) or ("unavailable", tg)."""
        rule = next((r for r in self.rules if r.matches(path, headers)), None)
        if rule is None:
            return "fixed", {"status": 503, "content_type": "text/plain", "body": ""}
        action = rule.action
        if action["Type"] == "fixed-response":
            config = action.get("FixedResponseConfig", {})
            return "fixed", {
                "status": int(config.get("StatusCode", 503)),
                "content_type": config.get("ContentType", "text/plain"),
                "body": config.get("MessageBody", ""),
            }
        if action["Type"] == "forward":
            tg = (
                action.get("TargetGroupArn")
                or action["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"]
            )
            urls = self.targets.get(tg)
            if not urls:
                return "unavailable", tg
            cursor = self._cursors.setdefault(tg, itertools.cycle(urls))
            return "forward", next(cursor)
        return "fixed", {
            "status": 500,
            "content_type": "application/json",
            "body": json.dumps({"error": f"action {action['Type']} not emulated"}),
        }


def _glob(pattern: str, flags: int = 0) -> re.Pattern:
    """ALB patterns: * any run of characters, ? one character (paths are case-sensitive)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{regex}$", flags | re.DOTALL)
