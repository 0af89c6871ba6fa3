"""apigw: the REST API in front of the Lambda functions and the ALB (seed 5.1-5.4).

Path mapping. CloudFront forwards the viewer's path unchanged (`/api/auth/register`) and
prepends its origin path `/<stage>`, so API Gateway sees stage `prod` and the resource path
`/api/auth/register`: every route lives under `/api` (the handlers route on `resource` with
or without that prefix). The route table (`apigw_routes.route_table`) is reconciled exactly:
missing resources and methods are created, a method that differs from it is replaced, and
methods and resources that aren't in it are deleted.

- `/api/auth/*` -> the auth function, open (it checks its own session token).
- `/api/users*`, `/api/notifications` -> their functions, behind the REQUEST authorizer
  (TTL 0, so a logout takes effect at once); the handlers trust
  `requestContext.authorizer.userId` and `.role`.
- `/api/products` and `/api/products/{proxy+}` -> HTTP_PROXY to the ALB, as explicit methods:
  GET open, POST/PUT/DELETE behind the authorizer. `/api/orders*` -> ALB, ANY, all guarded.
  The container services read the caller from `X-Authorized-User-Id` and
  `X-Authorized-Role`: on guarded methods API Gateway sets them from the authorizer's context
  (overwriting any client value); on open ones they are mapped to the constant `''` so a
  client-sent value is never passed through. Every ALB integration also sends the lab's
  origin secret in `X-Lab-Origin` (a static mapping of the value in the alb step's secret,
  read at apply): the ALB and the services refuse a request without it (alb_origin).
- OPTIONS on every resource: a MOCK answering the CORS headers of `cors.*`. A MOCK response
  is static, so it can name one origin only: `*` when cors.allowed_origins is ["*"], else
  the first origin listed (serve the site from one origin, or answer CORS in the backends).

Deployments. A deployment is made only when the API definition changed: the sha256 of the
definition as read back (resources, methods, integrations, authorizers) is kept in the
deployment's description (`msctl:<sha256>`), and the stage's current deployment is compared
with it. CreateDeployment is called at most once per apply. AWS allows 1 per 5 s per account
(CreateRestApi 1 per 3 s, DeleteRestApi 1 per 30 s): labs built side by side take turns
(`taking_turns`, past what botocore's own retries outlast).

Access logs go to `apigw.access_log_group` through the region's account-level logging role
(apigw_account). The functions' invoke permissions are in apigw_permissions.
"""

from __future__ import annotations

import json

from ..engine.model import Pending, is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.base import Part, absent, only_one
from ..resources.compute import LOG_GROUP, ROLE
from ..resources.edge import REST_API, taking_turns
from . import alb_origin
from .apigw_account import (
    ACCOUNT_SETTING,
    ensure_logging_role,
    log_role_name,
    release_logging_role,
)
from .apigw_permissions import ensure_permissions, remove_permissions
from .apigw_routes import (
    Route,
    Targets,
    cors_values,
    depth_key,
    desired_method,
    differences,
    fingerprint,
    lambda_uri,
    normalize_method,
    partition,
    put_method,
    read_api,
    read_authorizers,
    route_table,
)
from .base import LabStep
from .log_groups import ensure_log_group
from .run import Fix, StepRun, derived
from .s3 import account_id

ENDPOINT_TYPE = "REGIONAL"
IDENTITY_SOURCE = "method.request.header.Authorization"
AUTHORIZER_TTL = 0  # no caching: a logout takes effect at once
DEFAULT_AUTHORIZER_TTL = 300
FINGERPRINT_PREFIX = "msctl:"
AUTHORIZER = Part("authorizer", "id")  # parts of the API: deleted with it
STAGE = Part("stage", "stageName")
# $context variables of REST API access logs; one JSON object per request.
ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "resourcePath": "$context.resourcePath",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "integrationLatency": "$context.integrationLatency",
        "authorizerError": "$context.authorizer.error",
    },
    separators=(",", ":"),
)


class ApigwStep(LabStep):
    name = "apigw"
    requires = ("lambda", "alb")
    reads_only = ("alb",)  # the ALB's DNS name in the HTTP_PROXY integrations
    services = ("apigateway", "lambda", "logs", "sts", "iam", "secretsmanager")
    description = "REST API, authorizer, routes to Lambda and the ALB, CORS, stage prod"
    # down deletes the API, then the logging role (once the account setting no longer names
    # it), then the access log group.
    kinds = (LOG_GROUP, ROLE, REST_API)

    def names(self, config):
        # REST API names aren't unique: only the lab's tag identifies its API.
        return [(LOG_GROUP, config.apigw.access_log_group), (ROLE, log_role_name(config.lab))]

    def teardown(self, run: StepRun) -> None:
        remove_permissions(run)  # parts of the lambda step's functions
        account = account_id(run)
        # `down --labs` brings labs down side by side: one at a time hands on the setting.
        with ACCOUNT_SETTING:
            release_logging_role(run, account)
            super().teardown(run)
            if not run.dry_run:
                release_logging_role(run, account)

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.apigw
        apigw = run.clients.apigateway
        region = run.clients.region
        account = account_id(run)
        functions = {k: f["arn"] for k, f in run.outputs_of("lambda")["functions"].items()}
        alb = run.outputs_of("alb")
        alb_dns = alb["dns_name"]
        origin = alb_origin.read(run, alb["origin_secret_arn"])

        ensure_log_group(run, cfg.access_log_group, run.config.cloudwatch.log_retention_days)
        ensure_logging_role(run, account)
        api_id = run.ensure(
            REST_API,
            cfg.name,
            create=lambda: taking_turns(
                run,
                "CreateRestApi",
                lambda: apigw.create_rest_api(
                    name=cfg.name,
                    description=cfg.description,
                    endpointConfiguration={"types": [ENDPOINT_TYPE]},
                    tags=run.tags(cfg.name),
                ),
            ),
            fixes=lambda api: _api_fixes(apigw, api, cfg),
        )
        live = {} if is_pending(api_id) else read_api(apigw, api_id)
        before = len(run.changes)

        authorizer_id = self._authorizer(run, api_id, functions.get("authorizer"))
        targets = Targets(
            region, functions, alb_dns, origin, authorizer_id, cors_values(run.config)
        )
        self._routes(run, api_id, live, targets)
        changed = len(run.changes) > before

        execution_arn = derived(
            api_id,
            f"arn:{partition(region)}:execute-api:{region}:{account}:{{}}",
            f"execution ARN of {cfg.name}",
        )
        ensure_permissions(run, api_id, execution_arn, functions, authorizer_id)

        fingerprints: list[str] = []

        def current_fingerprint() -> str:
            if not fingerprints:
                resources = read_api(apigw, api_id) if changed else live
                fingerprints.append(fingerprint(resources, read_authorizers(apigw, api_id)))
            return fingerprints[0]

        log_arn = (
            f"arn:{partition(region)}:logs:{region}:{account}:log-group:{cfg.access_log_group}"
        )
        run.ensure(
            STAGE,
            cfg.stage,
            after=[api_id],
            find=lambda: _stage(apigw, api_id, cfg.stage),
            create=lambda: _create_stage(run, api_id, current_fingerprint()),
            fixes=lambda stage: _stage_fixes(
                run, api_id, stage, log_arn, current_fingerprint, changed and run.dry_run
            ),
        )
        domain = f"{{}}.execute-api.{region}.amazonaws.com"
        return {
            "rest_api_id": api_id,
            "stage": cfg.stage,
            "invoke_url": derived(
                api_id, f"https://{domain}/{cfg.stage}", f"invoke URL of {cfg.name}"
            ),
            "execution_arn": execution_arn,
            "authorizer_id": authorizer_id,
            "api_domain": derived(api_id, domain, f"domain of {cfg.name}"),
        }

    def _authorizer(self, run: StepRun, api_id: str, function_arn: str | None) -> str:
        apigw = run.clients.apigateway
        name = f"{run.ctx.lab}-session-authorizer"
        if function_arn is None:
            raise StepError(
                "the lambda step has no authorizer function",
                hint="add lambda.functions.authorizer to the config",
            )
        desired = {
            "authorizerUri": lambda_uri(run.clients.region, function_arn),
            "identitySource": IDENTITY_SOURCE,
            "authorizerResultTtlInSeconds": AUTHORIZER_TTL,
        }

        def find() -> Resource | None:
            items = [a for a in read_authorizers(apigw, api_id) if a.get("name") == name]
            return only_one(items, f"authorizers named {name}")

        def fixes(found: Resource) -> list[Fix]:
            if found.get("type") != "REQUEST":
                return [
                    Fix(
                        f"type {found.get('type')} -> REQUEST",
                        lambda: _refuse(f"authorizer {name} has type {found.get('type')}"),
                        action="replace",
                    )
                ]
            # An authorizer created without a TTL reports none: API Gateway's default applies.
            current = {"authorizerResultTtlInSeconds": DEFAULT_AUTHORIZER_TTL, **found}
            ops = [
                {"op": "replace", "path": f"/{key}", "value": str(value)}
                for key, value in desired.items()
                if current.get(key) != value
            ]
            if not ops:
                return []
            return [
                Fix(
                    ", ".join(op["path"][1:] for op in ops),
                    lambda: apigw.update_authorizer(
                        restApiId=api_id, authorizerId=found["id"], patchOperations=ops
                    ),
                )
            ]

        return run.ensure(
            AUTHORIZER,
            name,
            after=[api_id, function_arn],
            find=find,
            create=lambda: apigw.create_authorizer(
                restApiId=api_id, name=name, type="REQUEST", **desired
            ),
            fixes=fixes,
        )

    def _routes(self, run: StepRun, api_id: str, live: dict[str, dict], t: Targets) -> None:
        """Resources and methods are settings (parts of the API): its tag finds them all,
        and the state file isn't rewritten for each one."""
        apigw = run.clients.apigateway
        routes = route_table(run.config)
        ids: dict[str, str] = {"/": live["/"]["id"] if "/" in live else Pending("root resource")}
        for path in sorted({r.path for r in routes}, key=depth_key):
            parent = path.rpartition("/")[0] or "/"
            found = live.get(path)
            ids[path] = found["id"] if found else Pending(f"resource {path}")
            run.setting(
                "resource",
                path,
                ok=found is not None,
                detail=found["id"] if found else "create",
                action="create",
                apply=lambda p=path, parent=parent: ids.__setitem__(
                    p,
                    apigw.create_resource(
                        restApiId=api_id, parentId=ids[parent], pathPart=p.rpartition("/")[2]
                    )["id"],
                ),
            )

        def pending(route: Route) -> bool:
            """What the method points at doesn't exist yet (plan): it is part of a create."""
            return (
                is_pending(api_id)
                or (route.guarded and is_pending(t.authorizer_id))
                or (route.integration == "AWS_PROXY" and is_pending(t.functions[route.target]))
                or (route.integration == "HTTP_PROXY" and is_pending(t.alb_dns, t.origin))
            )

        by_path: dict[str, dict[str, Route]] = {}
        for route in routes:
            by_path.setdefault(route.path, {})[route.method] = route
        for path, methods in by_path.items():
            current = (live.get(path) or {}).get("methods", {})
            for verb, route in methods.items():
                want = None if pending(route) else desired_method(route, t)
                have = normalize_method(current.get(verb))
                run.setting(
                    "method",
                    f"{verb} {path}",
                    ok=have is not None and have == want,
                    detail=route.detail
                    if have is None or want is None
                    else differences(have, want),
                    action="create" if have is None else "update",
                    apply=lambda p=path, v=verb, r=route, exists=have is not None: put_method(
                        apigw, api_id, ids[p], v, desired_method(r, t), exists
                    ),
                )
            for verb in sorted(set(current) - set(methods)):
                run.setting(
                    "method",
                    f"{verb} {path}",
                    ok=False,
                    detail="not in the route table",
                    action="delete",
                    apply=lambda p=path, v=verb: apigw.delete_method(
                        restApiId=api_id, resourceId=ids[p], httpMethod=v
                    ),
                )
        # Resources not in the table, deepest first (a parent's delete takes its children
        # on AWS; the local emulator needs the children gone first).
        for path in sorted(set(live) - set(by_path) - {"/"}, key=depth_key, reverse=True):
            run.setting(
                "resource",
                path,
                ok=False,
                detail="not in the route table",
                action="delete",
                apply=lambda p=path: absent(  # NotFound: it went with its parent
                    lambda: apigw.delete_resource(restApiId=api_id, resourceId=live[p]["id"])
                ),
            )


# ---------------------------------------------------------------- the API


def _refuse(what: str):
    raise StepError(
        f"{what} and can't be changed in place",
        hint="run `msctl down --only apigw` and `msctl up` to rebuild the API",
    )


def _api_fixes(apigw, api: Resource, cfg) -> list[Fix]:
    def patch(path: str, value: str):
        return lambda: apigw.update_rest_api(
            restApiId=api["id"], patchOperations=[{"op": "replace", "path": path, "value": value}]
        )

    fixes = []
    if (api.get("description") or "") != cfg.description:
        fixes.append(
            Fix(f"description -> {cfg.description!r}", patch("/description", cfg.description))
        )
    types = (api.get("endpointConfiguration") or {}).get("types") or []
    if types != [ENDPOINT_TYPE]:
        current = types[0] if types else "EDGE"
        fixes.append(
            Fix(
                f"endpoint {current} -> {ENDPOINT_TYPE}",
                patch(f"/endpointConfiguration/types/{current}", ENDPOINT_TYPE),
            )
        )
    return fixes


# ---------------------------------------------------------------- stage and deployment


def _stage(apigw, api_id: str, stage: str) -> Resource | None:
    found = absent(lambda: apigw.get_stage(restApiId=api_id, stageName=stage))
    return found and {k: v for k, v in found.items() if k != "ResponseMetadata"}


def _deployment_description(apigw, api_id: str, deployment_id: str | None) -> str:
    if not deployment_id:
        return ""
    found = absent(lambda: apigw.get_deployment(restApiId=api_id, deploymentId=deployment_id))
    return (found or {}).get("description", "")


def _create_stage(run: StepRun, api_id: str, digest: str) -> Resource:
    apigw = run.clients.apigateway
    cfg = run.config.apigw
    deployment = taking_turns(
        run,
        "CreateDeployment",
        lambda: apigw.create_deployment(
            restApiId=api_id, description=f"{FINGERPRINT_PREFIX}{digest}"
        ),
    )
    apigw.create_stage(
        restApiId=api_id,
        stageName=cfg.stage,
        deploymentId=deployment["id"],
        tracingEnabled=True,
        tags=run.tags(cfg.stage),
    )
    return _stage(apigw, api_id, cfg.stage)


def _stage_fixes(
    run: StepRun, api_id: str, stage: Resource, log_arn: str, digest, definition_changed: bool
) -> list[Fix]:
    apigw = run.clients.apigateway
    cfg = run.config.apigw

    def update(*ops: tuple[str, str]):
        return lambda: apigw.update_stage(
            restApiId=api_id,
            stageName=cfg.stage,
            patchOperations=[{"op": "replace", "path": p, "value": v} for p, v in ops],
        )

    fixes = []
    current = _deployment_description(apigw, api_id, stage.get("deploymentId"))
    # Under plan a route change can't be read back yet: it will need a deployment.
    if definition_changed or current != f"{FINGERPRINT_PREFIX}{digest()}":

        def deploy():
            deployment = taking_turns(
                run,
                "CreateDeployment",
                lambda: apigw.create_deployment(
                    restApiId=api_id, description=f"{FINGERPRINT_PREFIX}{digest()}"
                ),
            )
            update(("/deploymentId", deployment["id"]))()

        fixes.append(Fix("deploy the changed API definition", deploy))
    if stage.get("tracingEnabled") is not True:
        fixes.append(Fix("X-Ray tracing on", update(("/tracingEnabled", "true"))))
    logs = stage.get("accessLogSettings") or {}
    if logs.get("destinationArn") != log_arn or logs.get("format") != ACCESS_LOG_FORMAT:
        fixes.append(
            Fix(
                f"access logs -> {cfg.access_log_group}",
                update(
                    ("/accessLogSettings/destinationArn", log_arn),
                    ("/accessLogSettings/format", ACCESS_LOG_FORMAT),
                ),
            )
        )
    settings = (stage.get("methodSettings") or {}).get("*/*") or {}
    rate, burst = float(cfg.throttle.rate_limit), int(cfg.throttle.burst_limit)
    if settings.get("throttlingRateLimit") != rate or settings.get("throttlingBurstLimit") != burst:
        fixes.append(
            Fix(
                f"throttling {rate:g} req/s, burst {burst}",
                update(
                    ("/*/*/throttling/rateLimit", str(rate)),
                    ("/*/*/throttling/burstLimit", str(burst)),
                ),
            )
        )
    return fixes
