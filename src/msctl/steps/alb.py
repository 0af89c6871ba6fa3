"""alb: the internet-facing ALB, one IP target group per service, path rules (seed 4.5).

Listener 80 (and 443 when alb.certificate_arn is set) forwards each service's path pattern
to its target group, but only requests that carry the lab's origin secret in X-Lab-Origin
(alb_origin: API Gateway sends it); everything else gets a 403 JSON answer, whatever its
path. Rules are reconciled exactly (missing ones created, wrong ones modified, extra ones
deleted). The step makes the origin secret, and `down` deletes it after the load balancer.

The step doesn't wait for the load balancer to leave `provisioning` (2-3 minutes on AWS):
its DNS name is known at create, and target groups, listeners and rules can be added to it
at any time (AWS's ALB guide: "you can add listeners to your load balancer at any time").
Only traffic needs it active: the ecs step waits for that (`active_wait`) together with the
services' rollout, whose healthy targets need it too, so `up` still ends with it serving.
"""

from __future__ import annotations

import json

from ..aws.tags import as_list
from ..aws.waiters import Wait
from ..config.names import origin_secret_name
from ..engine.model import Check, Pending, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.base import Part
from ..resources.compute import LOAD_BALANCER, TARGET_GROUP
from ..resources.data import SECRET
from . import alb_origin
from .base import LabStep
from .run import Fix, StepRun

HTTP_PORT = 80
HTTPS_PORT = 443
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
RULE_PRIORITY_STEP = 10
ACTIVE_TIMEOUT = 600
ACTIVE_EXPECTED = 180  # seconds, typically, on AWS (2-3 min)
LISTENER = Part("listener", "ListenerArn", "ListenerArn")  # deleted with its load balancer
DEFAULT_ACTION = {  # no rule matched: the path is unknown or the origin secret is missing
    "Type": "fixed-response",
    "FixedResponseConfig": {
        "StatusCode": "403",
        "ContentType": "application/json",
        "MessageBody": json.dumps({"error": "Forbidden"}, separators=(",", ":")),
    },
}


class AlbStep(LabStep):
    name = "alb"
    requires = ("vpc", "sg")
    services = ("elbv2", "secretsmanager")
    description = "application load balancer, target groups, listeners and path rules"
    # down: the load balancer (and its listeners), the target groups, then the origin secret
    kinds = (SECRET, TARGET_GROUP, LOAD_BALANCER)

    def names(self, config):
        groups = [(TARGET_GROUP, tg.name) for tg in config.alb.target_groups.values()]
        secret = (SECRET, origin_secret_name(config.lab))
        return [(LOAD_BALANCER, config.alb.name), *groups, secret]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.alb
        elb = run.clients.elbv2
        net = run.outputs_of("vpc")
        vpc_id = net["vpc_id"]
        subnet_ids = list(net["public_subnet_ids"])
        sg_id = run.outputs_of("sg")["group_ids"][cfg.security_group]
        secret_name = origin_secret_name(run.config.lab)
        secret_arn = run.ensure(
            SECRET, secret_name, create=lambda: alb_origin.create_secret(run, secret_name)
        )
        origin = alb_origin.read(run, secret_arn)

        def create_lb():
            return elb.create_load_balancer(
                Name=cfg.name,
                Subnets=subnet_ids,
                SecurityGroups=[sg_id],
                Scheme="internet-facing",
                Type="application",
                IpAddressType="ipv4",
                Tags=as_list(run.tags(cfg.name)),
            )["LoadBalancers"][0]

        lb_arn = run.ensure(
            LOAD_BALANCER,
            cfg.name,
            after=[vpc_id, *subnet_ids, sg_id],
            create=create_lb,
            fixes=lambda lb: _lb_fixes(elb, lb, subnet_ids, sg_id),
        )
        tg_arns: dict[str, str] = {}
        for service, tg in cfg.target_groups.items():
            port = run.config.ecs.services[service].port
            tg_arns[service] = run.ensure(
                TARGET_GROUP,
                tg.name,
                after=[vpc_id],
                create=lambda n=tg.name, p=port: elb.create_target_group(
                    Name=n,
                    Protocol="HTTP",
                    Port=p,
                    VpcId=vpc_id,
                    TargetType="ip",
                    HealthCheckEnabled=True,
                    HealthCheckProtocol="HTTP",
                    HealthCheckPath=cfg.health_check_path,
                    Matcher={"HttpCode": "200"},
                    Tags=as_list(run.tags(n)),
                )["TargetGroups"][0],
                fixes=lambda found, p=port: _tg_fixes(elb, found, cfg, vpc_id, p),
            )

        # What the rules send where, in config order: priorities 10, 20, ...
        routes = [
            ((i + 1) * RULE_PRIORITY_STEP, tg.path_pattern, tg.name, tg_arns[service])
            for i, (service, tg) in enumerate(cfg.target_groups.items())
        ]
        listeners = {} if is_pending(lb_arn) else _listeners_by_port(elb, lb_arn)
        http_arn = self._listener(run, lb_arn, listeners, HTTP_PORT, None, routes, origin)
        https_arn: str | None = None
        if cfg.certificate_arn:
            https_arn = self._listener(
                run, lb_arn, listeners, HTTPS_PORT, cfg.certificate_arn, routes, origin
            )
        elif HTTPS_PORT in listeners:
            run.setting(
                "listener",
                f"{cfg.name}:{HTTPS_PORT}",
                ok=False,
                detail="no alb.certificate_arn in the config: delete",
                action="delete",
                apply=lambda: elb.delete_listener(ListenerArn=listeners[HTTPS_PORT]["ListenerArn"]),
            )
        lb = run.got(LOAD_BALANCER, cfg.name) or {}
        return {
            "arn": lb_arn,
            "dns_name": lb.get("DNSName") or Pending(f"DNS name of {cfg.name}"),
            "listener_arn": http_arn,
            "https_listener_arn": https_arn,
            "target_group_arns": tg_arns,
            "origin_secret_arn": secret_arn,
        }

    def verify(self, run: StepRun) -> list[Check]:
        """The default checks, and the load balancer's state (provisioning is on its way)."""
        checks = super().verify(run)
        lb = run.got(LOAD_BALANCER, run.config.alb.name)
        if lb is not None:
            code = (lb.get("State") or {}).get("Code", "unknown")
            name = f"load-balancer {run.config.alb.name} state"
            checks.append(Check(name, code in ("active", "provisioning"), code))
        return checks

    def _listener(
        self,
        run: StepRun,
        lb_arn: str,
        listeners: dict[int, Resource],
        port: int,
        certificate_arn: str | None,
        routes: list[tuple[int, str, str, str]],
        origin: str,
    ) -> str:
        """A listener on `port` (HTTPS when a certificate is given) with the 403 default
        and exactly the configured path rules, each also requiring the origin header."""
        elb = run.clients.elbv2
        label = f"{run.config.alb.name}:{port}"
        https = certificate_arn is not None
        settings: dict = {
            "Protocol": "HTTPS" if https else "HTTP",
            "DefaultActions": [DEFAULT_ACTION],
        }
        if https:
            settings["SslPolicy"] = SSL_POLICY
            settings["Certificates"] = [{"CertificateArn": certificate_arn}]
        listener_arn = run.ensure(
            LISTENER,
            label,
            after=[lb_arn],
            find=lambda: listeners.get(port),
            create=lambda: elb.create_listener(
                LoadBalancerArn=lb_arn, Port=port, Tags=as_list(run.tags(label)), **settings
            )["Listeners"][0],
            fixes=lambda found: _listener_fixes(elb, found, settings),
        )
        current = (
            {}
            if is_pending(listener_arn)
            else {
                int(r["Priority"]): r
                for r in elb.describe_rules(ListenerArn=listener_arn)["Rules"]
                if not r.get("IsDefault")
            }
        )
        for priority, pattern, tg_name, tg_arn in routes:
            rule = current.pop(priority, None)
            name = f"{label} priority {priority}"
            conditions = _conditions(pattern, origin)
            actions = [{"Type": "forward", "TargetGroupArn": tg_arn}]
            detail = f"{pattern} with {alb_origin.HEADER} -> {tg_name}"  # never the value
            if rule is None:
                run.setting(
                    "listener-rule",
                    name,
                    ok=False,
                    detail=detail,
                    action="create",
                    after=[listener_arn, tg_arn],
                    apply=lambda p=priority, c=conditions, a=actions, n=name: elb.create_rule(
                        ListenerArn=listener_arn,
                        Priority=p,
                        Conditions=c,
                        Actions=a,
                        Tags=as_list(run.tags(n)),
                    ),
                )
                continue
            same = _rule_conditions(rule) == _condition_key(conditions)
            ok = same and _rule_targets(rule) == [tg_arn]
            run.setting(
                "listener-rule",
                name,
                ok=ok,
                detail=detail,
                after=[listener_arn, tg_arn],
                apply=lambda r=rule, c=conditions, a=actions: elb.modify_rule(
                    RuleArn=r["RuleArn"], Conditions=c, Actions=a
                ),
            )
        for priority, rule in sorted(current.items()):
            run.setting(
                "listener-rule",
                f"{label} priority {priority}",
                ok=False,
                detail=f"{', '.join(_rule_patterns(rule)) or 'rule'} not in config: delete",
                action="delete",
                apply=lambda r=rule: elb.delete_rule(RuleArn=r["RuleArn"]),
            )
        return listener_arn


# ---------------------------------------------------------------- lookups


def _listeners_by_port(elb, lb_arn: str) -> dict[int, Resource]:
    listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
    return {int(listener["Port"]): listener for listener in listeners}


def active_wait(run: StepRun, arn: str) -> Wait:
    """The wait until the load balancer is active (a failed one is an error)."""
    return Wait(
        f"load balancer {run.config.alb.name} to be active",
        lambda: _lb_state(run.clients.elbv2, arn),
        ACTIVE_TIMEOUT,
        ACTIVE_EXPECTED,
    )


def _lb_state(elb, arn: str) -> tuple[bool, str]:
    lbs = elb.describe_load_balancers(LoadBalancerArns=[arn])["LoadBalancers"]
    state = lbs[0].get("State", {}) if lbs else {}
    code = state.get("Code", "not visible yet")
    if code == "failed":
        raise StepError(
            f"load balancer {arn} failed: {state.get('Reason', '')}",
            hint="run `msctl down --only alb` and `msctl up` again",
        )
    return code == "active", code


# ---------------------------------------------------------------- fixes


def _replace_fix(detail: str, what: str) -> Fix:
    def refuse():
        raise StepError(
            f"{what} can't be changed in place ({detail})",
            hint="run `msctl down --only alb` and `msctl up` to rebuild it, or restore the config",
        )

    return Fix(detail, refuse, action="replace")


def _lb_fixes(elb, lb: Resource, subnet_ids: list[str], sg_id: str) -> list[Fix]:
    arn = lb["LoadBalancerArn"]
    what = f"load balancer {lb['LoadBalancerName']}"
    fixes = []
    if lb.get("Scheme") != "internet-facing":
        fixes.append(_replace_fix(f"scheme {lb.get('Scheme')} -> internet-facing", what))
    if lb.get("Type", "application") != "application":
        fixes.append(_replace_fix(f"type {lb.get('Type')} -> application", what))
    if lb.get("IpAddressType", "ipv4") != "ipv4":
        fixes.append(
            Fix(
                f"IP address type {lb.get('IpAddressType')} -> ipv4",
                lambda: elb.set_ip_address_type(LoadBalancerArn=arn, IpAddressType="ipv4"),
            )
        )
    current_subnets = {az["SubnetId"] for az in lb.get("AvailabilityZones", [])}
    if current_subnets != set(subnet_ids):
        fixes.append(
            Fix(
                f"subnets -> {', '.join(subnet_ids)}",
                lambda: elb.set_subnets(LoadBalancerArn=arn, Subnets=subnet_ids),
            )
        )
    if set(lb.get("SecurityGroups", [])) != {sg_id}:
        fixes.append(
            Fix(
                f"security groups -> {sg_id}",
                lambda: elb.set_security_groups(LoadBalancerArn=arn, SecurityGroups=[sg_id]),
            )
        )
    return fixes


def _tg_fixes(elb, tg: Resource, cfg, vpc_id: str, port: int) -> list[Fix]:
    arn = tg["TargetGroupArn"]
    what = f"target group {tg['TargetGroupName']}"
    fixes = []
    shape = (tg.get("Protocol"), tg.get("Port"), tg.get("VpcId"), tg.get("TargetType"))
    if shape != ("HTTP", port, vpc_id, "ip"):
        fixes.append(
            _replace_fix(
                "{} {} in {} type {} -> HTTP {} in {} type ip".format(*shape, port, vpc_id), what
            )
        )
    matcher = (tg.get("Matcher") or {}).get("HttpCode")
    if tg.get("HealthCheckPath") != cfg.health_check_path or matcher != "200":
        fixes.append(
            Fix(
                f"health check {tg.get('HealthCheckPath')} ({matcher}) -> "
                f"{cfg.health_check_path} (200)",
                lambda: elb.modify_target_group(
                    TargetGroupArn=arn,
                    HealthCheckEnabled=True,
                    HealthCheckProtocol="HTTP",
                    HealthCheckPath=cfg.health_check_path,
                    Matcher={"HttpCode": "200"},
                ),
            )
        )
    key = "deregistration_delay.timeout_seconds"
    wanted = str(cfg.deregistration_delay_seconds)
    attributes = elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    current = next((a["Value"] for a in attributes if a["Key"] == key), None)
    if current != wanted:
        fixes.append(
            Fix(
                f"deregistration delay {current} -> {wanted} s",
                lambda: elb.modify_target_group_attributes(
                    TargetGroupArn=arn, Attributes=[{"Key": key, "Value": wanted}]
                ),
            )
        )
    return fixes


def _listener_fixes(elb, listener: Resource, settings: dict) -> list[Fix]:
    differs = []
    if listener.get("Protocol") != settings["Protocol"]:
        differs.append(f"protocol {listener.get('Protocol')} -> {settings['Protocol']}")
    if [_action_key(a) for a in listener.get("DefaultActions", [])] != [
        _action_key(a) for a in settings["DefaultActions"]
    ]:
        differs.append("default action -> 403 fixed response")
    if "SslPolicy" in settings and listener.get("SslPolicy") != settings["SslPolicy"]:
        differs.append(f"SSL policy {listener.get('SslPolicy')} -> {settings['SslPolicy']}")
    if "Certificates" in settings:
        current = [c.get("CertificateArn") for c in listener.get("Certificates", [])][:1]
        if current != [settings["Certificates"][0]["CertificateArn"]]:
            differs.append("certificate -> config's certificate_arn")
    if not differs:
        return []
    return [
        Fix(
            "; ".join(differs),
            lambda: elb.modify_listener(ListenerArn=listener["ListenerArn"], **settings),
        )
    ]


def _action_key(action: Resource) -> tuple:
    config = action.get("FixedResponseConfig") or {}
    return (
        action.get("Type"),
        config.get("StatusCode"),
        config.get("ContentType"),
        config.get("MessageBody"),
        tuple(_action_targets(action)),
    )


def _action_targets(action: Resource) -> list[str]:
    if action.get("TargetGroupArn"):
        return [action["TargetGroupArn"]]
    groups = (action.get("ForwardConfig") or {}).get("TargetGroups") or []
    return [g["TargetGroupArn"] for g in groups]


def _rule_targets(rule: Resource) -> list[str]:
    actions = rule.get("Actions", [])
    if len(actions) != 1 or actions[0].get("Type") != "forward":
        return []
    return _action_targets(actions[0])


def _conditions(pattern: str, origin: str) -> list[dict]:
    return [
        {"Field": "path-pattern", "PathPatternConfig": {"Values": [pattern]}},
        {
            "Field": "http-header",
            "HttpHeaderConfig": {"HttpHeaderName": alb_origin.HEADER, "Values": [origin]},
        },
    ]


def _condition_key(conditions: list[dict]) -> list[tuple]:
    """A rule's conditions as comparable values: (field, header name, values), sorted."""
    key = []
    for condition in conditions:
        header = condition.get("HttpHeaderConfig") or {}
        config = condition.get("PathPatternConfig") or header
        values = config.get("Values") or condition.get("Values") or []
        name = (header.get("HttpHeaderName") or "").lower()  # case-insensitive to the ALB
        key.append((condition.get("Field"), name, tuple(sorted(values))))
    return sorted(key)


def _rule_conditions(rule: Resource) -> list[tuple]:
    return _condition_key(rule.get("Conditions", []))


def _rule_patterns(rule: Resource) -> list[str]:
    return [
        v for field, _, values in _rule_conditions(rule) if field == "path-pattern" for v in values
    ]
