"""Application Load Balancer emulation: listener rules -> target groups -> local targets."""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field


@dataclass
class Rule:
    priority: int
    path_patterns: list[str]
    action: dict

    def matches(self, path: str) -> bool:
        return not self.path_patterns or any(_glob(p).match(path) for p in self.path_patterns)


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
            for rule in client.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
                patterns = [
                    v
                    for c in rule.get("Conditions", [])
                    if c.get("Field") == "path-pattern"
                    for v in (c.get("PathPatternConfig", {}).get("Values") or c.get("Values", []))
                ]
                priority = 1_000_000 if rule.get("IsDefault") else int(rule["Priority"])
                rules.append(Rule(priority, patterns, rule["Actions"][0]))
        rules.sort(key=lambda r: r.priority)
        return cls(lb["LoadBalancerArn"], lb["DNSName"], rules)

    def register(self, target_group_arn: str, base_url: str) -> None:
        self.targets.setdefault(target_group_arn, []).append(base_url)
        self._cursors.pop(target_group_arn, None)

    def route(self, path: str) -> tuple[str, str | dict]:
        """("forward", base URL) or ("fixed", {status, content_type, body}) or ("unavailable", tg)."""
        rule = next((r for r in self.rules if r.matches(path)), None)
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


def _glob(pattern: str) -> re.Pattern:
    """ALB path patterns: case-sensitive, * any run of characters, ? one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(f"^{regex}$")
