"""apigw: the REST API in front of the Lambda functions and the ALB (seed 5.1-5.4).

Path mapping. CloudFront forwards the viewer's path unchanged (`/api/auth/register`) and
prepends its origin path `/<stage>`, so API Gateway sees stage `prod` and the resource path
`/api/auth/register`: every route lives under `/api` (the handlers route on `resource` with
or without that prefix). The route table (`route_table`) is reconciled exactly: missing
resources and methods are created, a method that differs from it is replaced, and methods
and resources that aren't in it are deleted.

- `/api/auth/*` -> the auth function, open (it checks its own session token).
- `/api/users*`, `/api/notifications` -> their functions, behind the REQUEST authorizer
  (TTL 0, so a logout takes effect at once); the handlers trust
  `requestContext.authorizer.userId`.
- `/api/products` and `/api/products/{proxy+}` -> HTTP_PROXY to the ALB, as explicit methods:
  GET open, POST/PUT/DELETE behind the authorizer. `/api/orders*` -> ALB, ANY, all guarded.
  The container services read the caller from `X-Authorized-User-Id`: on guarded methods
  API Gateway sets it from `context.authorizer.userId` (overwriting any client value); on open
  ones it is mapped to the constant `''` so a client-sent value is never passed through.
- OPTIONS on every resource: a MOCK answering the CORS headers of `cors.*`. A MOCK response
  is static, so it can name one origin only: `*` when cors.allowed_origins is ["*"], else
  the first origin listed (serve the site from one origin, or answer CORS in the backends).

Deployments. A deployment is made only when the API definition changed: the sha256 of the
definition as read back (resources, methods, integrations, authorizers) is kept in the
deployment's description (`msctl:<sha256>`), and the stage's current deployment is compared
with it. CreateDeployment is called at most once per apply (AWS allows 1 per 5 s per
account; TooManyRequests is retried by botocore's standard mode, CLIENT_CONFIG).

Access logs. API Gateway writes them with the region's account-level CloudWatch role
(`get_account().cloudwatchRoleArn`); without one, enabling access logs fails. When the
account has none (or it names a role that no longer exists), msctl creates
`<lab>-apigateway-cloudwatch` and sets it. On destroy that role is kept while the account
setting names it: the API can't clear the setting, and deleting the role would silently
stop the access logs of every REST API in this account and region. It costs nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.logs import ensure_log_group, remove_log_group
from ..aws.tags import LAB, as_list
from ..engine.model import Pending, is_pending
from ..engine.step import Fix, Resource, Step, StepError, StepRun, only_one
from .s3 import account_id

API_PREFIX = "/api"  # what cloudfront.api_path_pattern (/api/*) forwards, unchanged
ENDPOINT_TYPE = "REGIONAL"
LAMBDA_PATH = "lambda:path/2015-03-31/functions"
USER_HEADER = "X-Authorized-User-Id"
USER_HEADER_PARAM = f"integration.request.header.{USER_HEADER}"
AUTHORIZER_USER = "context.authorizer.userId"
NO_USER = "''"  # a static value: API Gateway sends an empty header instead of the client's
IDENTITY_SOURCE = "method.request.header.Authorization"
AUTHORIZER_TTL = 0  # no caching: a logout takes effect at once
DEFAULT_AUTHORIZER_TTL = 300
PROXY_PARAM = "method.request.path.proxy"
PROXY_TARGET = "integration.request.path.proxy"
CORS_PARAM = "method.response.header.Access-Control-Allow-{}"
MOCK_TEMPLATE = {"application/json": '{"statusCode": 200}'}
FINGERPRINT_PREFIX = "msctl:"
STATEMENT_PREFIX = "msctl-apigw-"  # Sid prefix of the Lambda permissions this step adds
INVOKE_PRINCIPAL = "apigateway.amazonaws.com"
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
# The product services: which methods are open (False) and which need a session (True).
HTTP_SERVICES: dict[str, dict[str, bool]] = {
    "products": {"GET": False, "POST": True, "PUT": True, "DELETE": True},
    "orders": {"ANY": True},
}
LAMBDA_ROUTES: tuple[tuple[str, str, str, bool], ...] = (
    ("/auth/register", "POST", "auth", False),
    ("/auth/login", "POST", "auth", False),
    ("/auth/verify", "GET", "auth", False),
    ("/auth/logout", "POST", "auth", False),
    ("/users", "GET", "users", True),
    ("/users/{id}", "GET", "users", True),
    ("/users/{id}", "PUT", "users", True),
    ("/notifications", "GET", "notifications", True),
    ("/notifications", "POST", "notifications", True),
)
# The account-level role API Gateway writes logs with: the actions of AWS's managed
# AmazonAPIGatewayPushToCloudWatchLogs. The setting serves every REST API in the region,
# and AWS tests the role when it is set, so it isn't scoped to this lab's log group.
LOG_ROLE_POLICY_NAME = "push-to-cloudwatch-logs"
LOG_ROLE_ACTIONS = [
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogGroups",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
    "logs:GetLogEvents",
    "logs:FilterLogEvents",
]
# UpdateAccount answers these while a new role is not yet usable by API Gateway.
ROLE_NOT_READY = (
    "does not have required permissions",
    "could not successfully write to CloudWatch Logs",
    "is not authorized to assume",
)
ROLE_PROPAGATION_TIMEOUT = 120


@dataclass(frozen=True)
class Route:
    """One method of the API: where it goes and whether it needs a session."""

    path: str
    method: str
    integration: str  # AWS_PROXY | HTTP_PROXY | MOCK
    target: str = ""  # function key (AWS_PROXY) or service (HTTP_PROXY)
    guarded: bool = False

    @property
    def proxy(self) -> bool:
        return self.path.endswith("{proxy+}")


@dataclass
class Targets:
    """What the routes point at: function ARNs, the ALB, the authorizer, CORS values."""

    region: str
    functions: dict[str, str]  # key -> function ARN
    alb_dns: str
    authorizer_id: str
    cors: dict[str, str] = field(default_factory=dict)  # Headers/Methods/Origin -> value


def route_table(config) -> list[Route]:
    """Every (path, method) of the API, OPTIONS included, in a stable order."""
    routes = [
        Route(f"{API_PREFIX}{path}", method, "AWS_PROXY", key, guarded)
        for path, method, key, guarded in LAMBDA_ROUTES
        if key in config.lambda_.functions
    ]
    for service, methods in HTTP_SERVICES.items():
        if service not in config.alb.target_groups:
            continue
        for path in (f"{API_PREFIX}/{service}", f"{API_PREFIX}/{service}/{{proxy+}}"):
            routes += [Route(path, m, "HTTP_PROXY", service, g) for m, g in methods.items()]
    paths = sorted({p for r in routes for p in _ancestors(r.path)}, key=_depth_key)
    routes += [Route(path, "OPTIONS", "MOCK") for path in paths]
    return routes


def _ancestors(path: str) -> list[str]:
    """/api/users/{id} -> [/api, /api/users, /api/users/{id}]"""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _depth_key(path: str) -> tuple[int, str]:
    return (path.count("/"), path)


def cors_values(config) -> dict[str, str]:
    origins = config.cors.allowed_origins
    return {
        "Headers": ",".join(config.cors.allowed_headers),
        "Methods": ",".join(config.cors.allowed_methods),
        # A MOCK response is static: one origin only (see the module docstring).
        "Origin": "*" if origins == ["*"] else origins[0],
    }


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def lambda_uri(region: str, function_arn: str) -> str:
    return f"arn:{partition(region)}:apigateway:{region}:{LAMBDA_PATH}/{function_arn}/invocations"


def desired_method(route: Route, t: Targets) -> dict:
    """A method in the normalized form `normalize_method` gives a live one."""
    method_params: dict = {}
    integration: dict = {
        "type": route.integration,
        "httpMethod": None,
        "uri": None,
        "requestParameters": {},
        "requestTemplates": {},
    }
    responses: dict = {}
    integration_responses: dict = {}
    if route.integration == "AWS_PROXY":
        integration.update(httpMethod="POST", uri=lambda_uri(t.region, t.functions[route.target]))
    elif route.integration == "HTTP_PROXY":
        base = f"http://{t.alb_dns}/{route.target}"
        params = {USER_HEADER_PARAM: AUTHORIZER_USER if route.guarded else NO_USER}
        if route.proxy:
            method_params[PROXY_PARAM] = True
            params[PROXY_TARGET] = PROXY_PARAM
            base += "/{proxy}"
        integration.update(httpMethod=route.method, uri=base, requestParameters=params)
    else:  # MOCK: the CORS preflight
        integration["requestTemplates"] = dict(MOCK_TEMPLATE)
        responses["200"] = {CORS_PARAM.format(h): False for h in t.cors}
        integration_responses["200"] = {
            CORS_PARAM.format(h): f"'{value}'" for h, value in t.cors.items()
        }
    return {
        "authorizationType": "CUSTOM" if route.guarded else "NONE",
        "authorizerId": t.authorizer_id if route.guarded else None,
        "requestParameters": method_params,
        "integration": integration,
        "responses": responses,
        "integrationResponses": integration_responses,
    }


def normalize_method(method: dict | None) -> dict | None:
    """The fields msctl manages of a method as API Gateway reports it."""
    if method is None:
        return None
    integ = method.get("methodIntegration") or {}
    kind = integ.get("type")
    mock = kind == "MOCK"
    auth = method.get("authorizationType")
    return {
        "authorizationType": auth,
        "authorizerId": method.get("authorizerId") if auth == "CUSTOM" else None,
        "requestParameters": method.get("requestParameters") or {},
        "integration": {
            "type": kind,
            "httpMethod": None if mock else integ.get("httpMethod"),
            "uri": None if mock else integ.get("uri"),
            "requestParameters": integ.get("requestParameters") or {},
            "requestTemplates": integ.get("requestTemplates") or {},
        },
        "responses": {
            code: r.get("responseParameters") or {}
            for code, r in (method.get("methodResponses") or {}).items()
        },
        "integrationResponses": {
            code: r.get("responseParameters") or {}
            for code, r in (integ.get("integrationResponses") or {}).items()
        },
    }


def _differences(live: dict, want: dict) -> str:
    names = {
        "authorizationType": "authorization",
        "authorizerId": "authorizer",
        "requestParameters": "method parameters",
        "integration": "integration",
        "responses": "method responses",
        "integrationResponses": "integration responses",
    }
    return ", ".join(names[k] for k in names if live.get(k) != want.get(k)) + " differ"


# ---------------------------------------------------------------- reading the API


def find_api(apigw, lab: str, name: str) -> Resource | None:
    """The lab's REST API by name and msctl:lab tag, from get_rest_apis' own `tags` (moto's
    server answers 404 to GetTags)."""
    found = [
        item
        for page in apigw.get_paginator("get_rest_apis").paginate(
            PaginationConfig={"PageSize": 500}
        )
        for item in page.get("items", [])
        if item.get("name") == name and (item.get("tags") or {}).get(LAB) == lab
    ]
    return only_one(found, f"REST APIs named {name}")


def read_api(apigw, api_id: str) -> dict[str, dict]:
    """Every resource by path: {"id", "parentId", "methods": {verb: method}}, methods with
    their integrations (fetched one by one if the embed left them out)."""
    resources: dict[str, dict] = {}
    pages = apigw.get_paginator("get_resources").paginate(
        restApiId=api_id, embed=["methods"], PaginationConfig={"PageSize": 500}
    )
    for page in pages:
        for item in page.get("items", []):
            methods = {}
            for verb, method in (item.get("resourceMethods") or {}).items():
                if "methodIntegration" not in method or "httpMethod" not in method:
                    try:
                        method = apigw.get_method(
                            restApiId=api_id, resourceId=item["id"], httpMethod=verb
                        )
                    except ClientError as exc:
                        if not is_code(exc, "NotFoundException"):
                            raise
                method = {k: v for k, v in method.items() if k != "ResponseMetadata"}
                methods[verb] = method
            resources[item["path"]] = {
                "id": item["id"],
                "parentId": item.get("parentId"),
                "methods": methods,
            }
    return resources


def read_authorizers(apigw, api_id: str) -> list[dict]:
    pages = apigw.get_paginator("get_authorizers").paginate(
        restApiId=api_id, PaginationConfig={"PageSize": 500}
    )
    return [item for page in pages for item in page.get("items", [])]


def fingerprint(resources: dict[str, dict], authorizers: list[dict]) -> str:
    """sha256 of the API definition as read back: changes iff a deployment would differ."""
    canonical = json.dumps(
        {"resources": resources, "authorizers": sorted(authorizers, key=lambda a: a["id"])},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stage(apigw, api_id: str, stage: str) -> Resource | None:
    try:
        found = apigw.get_stage(restApiId=api_id, stageName=stage)
    except ClientError as exc:
        if is_code(exc, "NotFoundException"):
            return None
        raise
    return {k: v for k, v in found.items() if k != "ResponseMetadata"}


def _deployment_description(apigw, api_id: str, deployment_id: str | None) -> str:
    if not deployment_id:
        return ""
    try:
        return apigw.get_deployment(restApiId=api_id, deploymentId=deployment_id).get(
            "description", ""
        )
    except ClientError as exc:
        if is_code(exc, "NotFoundException"):
            return ""
        raise


def function_policy(lam, name: str) -> list[dict] | None:
    """The statements of a function's resource policy; [] without one; None without the
    function."""
    try:
        policy = lam.get_policy(FunctionName=name)["Policy"]
    except ClientError as exc:
        if is_code(exc, "ResourceNotFoundException"):
            try:
                lam.get_function_configuration(FunctionName=name)
            except ClientError as inner:
                if is_code(inner, "ResourceNotFoundException"):
                    return None
                raise
            return []
        raise
    statements = json.loads(policy).get("Statement", [])
    return statements if isinstance(statements, list) else [statements]


def _source_arn(statement: dict) -> str | None:
    for operator in ("ArnLike", "ArnEquals", "StringEquals", "StringLike"):
        value = (statement.get("Condition") or {}).get(operator, {}).get("AWS:SourceArn")
        if value:
            return value[0] if isinstance(value, list) else value
    return None


def _principal(statement: dict) -> str | None:
    principal = statement.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("Service")
    if isinstance(principal, list):
        principal = principal[0] if len(principal) == 1 else None
    return principal


def _derived(value, fmt: str, what: str):
    """An output built from a value that may be Pending stays Pending."""
    return Pending(what) if is_pending(value) else fmt.format(value)


# ---------------------------------------------------------------- the step


class ApigwStep(Step):
    name = "apigw"
    requires = ("lambda", "alb")
    services = ("apigateway", "lambda", "logs", "sts", "iam")
    description = "REST API, authorizer, routes to Lambda and the ALB, CORS, stage prod"
    # The region's API Gateway logging role stays after down (see _teardown_logging_role).
    kept_after_down = ("iam-role", "apigateway-account")

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.apigw
        apigw = run.clients.apigateway
        lab = run.ctx.lab
        region = run.clients.region
        account = account_id(run)
        functions = {k: f["arn"] for k, f in run.outputs_of("lambda")["functions"].items()}
        alb_dns = run.outputs_of("alb")["dns_name"]

        ensure_log_group(run, cfg.access_log_group, run.config.cloudwatch.log_retention_days)
        _ensure_logging_role(run, account)

        seen: dict = {}

        def find() -> Resource | None:
            seen["api"] = find_api(apigw, lab, cfg.name)
            return seen["api"]

        def create() -> Resource:
            seen["api"] = apigw.create_rest_api(
                name=cfg.name,
                description=cfg.description,
                endpointConfiguration={"types": [ENDPOINT_TYPE]},
                tags=run.tags(cfg.name),
            )
            return seen["api"]

        api_id = run.ensure(
            "rest-api",
            cfg.name,
            id_key="id",
            find=find,
            create=create,
            fixes=lambda api: _api_fixes(apigw, api, cfg),
        )
        live = {} if is_pending(api_id) else read_api(apigw, api_id)
        before = len(run.changes)

        authorizer_id = self._authorizer(run, api_id, functions.get("authorizer"))
        targets = Targets(region, functions, alb_dns, authorizer_id, cors_values(run.config))
        self._routes(run, api_id, live, targets)
        changed = len(run.changes) > before

        execution_arn = _derived(
            api_id,
            f"arn:{partition(region)}:execute-api:{region}:{account}:{{}}",
            f"execution ARN of {cfg.name}",
        )
        self._permissions(run, api_id, execution_arn, functions, authorizer_id)

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
            "stage",
            cfg.stage,
            id_key="stageName",
            after=[api_id],
            find=lambda: _stage(apigw, api_id, cfg.stage),
            create=lambda: _create_stage(run, api_id, current_fingerprint()),
            fixes=lambda stage: _stage_fixes(
                run, api_id, stage, log_arn, current_fingerprint, changed and run.dry_run
            ),
        )
        domain = _derived(
            api_id, f"{{}}.execute-api.{region}.amazonaws.com", f"domain of {cfg.name}"
        )
        return {
            "rest_api_id": api_id,
            "stage": cfg.stage,
            "invoke_url": _derived(
                api_id,
                f"https://{{}}.execute-api.{region}.amazonaws.com/{cfg.stage}",
                f"invoke URL of {cfg.name}",
            ),
            "execution_arn": execution_arn,
            "authorizer_id": authorizer_id,
            "api_domain": domain,
        }

    # ------------------------------------------------------------ authorizer

    def _authorizer(self, run: StepRun, api_id: str, function_arn: str | None) -> str:
        apigw = run.clients.apigateway
        name = f"{run.ctx.lab}-session-authorizer"
        if function_arn is None:
            raise StepError(
                "the lambda step has no authorizer function",
                hint="add lambda.functions.authorizer to the config",
            )
        uri = lambda_uri(run.clients.region, function_arn)
        desired = {
            "authorizerUri": uri,
            "identitySource": IDENTITY_SOURCE,
            "authorizerResultTtlInSeconds": AUTHORIZER_TTL,
        }

        def find() -> Resource | None:
            items = [a for a in read_authorizers(apigw, api_id) if a.get("name") == name]
            return only_one(items, f"authorizers named {name}")

        def create() -> Resource:
            return apigw.create_authorizer(restApiId=api_id, name=name, type="REQUEST", **desired)

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
            "authorizer",
            name,
            id_key="id",
            after=[api_id, function_arn],
            find=find,
            create=create,
            fixes=fixes,
        )

    # ------------------------------------------------------------ resources and methods

    def _routes(self, run: StepRun, api_id: str, live: dict[str, dict], t: Targets) -> None:
        apigw = run.clients.apigateway
        routes = route_table(run.config)
        # Resources are parts of the API (settings, not separately tracked resources): the
        # API's tags find them all, and the state file isn't rewritten for each one.
        ids: dict[str, str] = {"/": live["/"]["id"] if "/" in live else Pending("root resource")}
        for path in sorted({r.path for r in routes}, key=_depth_key):
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
                or (route.integration == "HTTP_PROXY" and is_pending(t.alb_dns))
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
                    detail=_route_detail(route)
                    if have is None or want is None
                    else _differences(have, want),
                    action="create" if have is None else "update",
                    apply=lambda p=path, v=verb, r=route, exists=have is not None: _put_method(
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
        for path in sorted(set(live) - set(by_path) - {"/"}, key=_depth_key, reverse=True):
            run.setting(
                "resource",
                path,
                ok=False,
                detail="not in the route table",
                action="delete",
                apply=lambda p=path: _delete_resource(apigw, api_id, live[p]["id"]),
            )

    # ------------------------------------------------------------ lambda permissions

    def _permissions(
        self,
        run: StepRun,
        api_id: str,
        execution_arn: str,
        functions: dict[str, str],
        authorizer_id: str,
    ) -> None:
        lam = run.clients.get("lambda")
        for key, function in run.config.lambda_.functions.items():
            arn = functions.get(key)
            if key == "authorizer":
                source = f"{execution_arn}/authorizers/{authorizer_id}"
            else:
                source = f"{execution_arn}/*/*/*"
            sid = f"{STATEMENT_PREFIX}{api_id}-{key}"
            if is_pending(api_id, arn) or (key == "authorizer" and is_pending(authorizer_id)):
                run.setting(
                    "lambda-permission",
                    f"{function.name} from {run.config.apigw.name}",
                    ok=False,
                    detail="invoke from this API only",
                    action="create",
                    apply=lambda: None,
                )
                continue
            statements = function_policy(lam, function.name) or []
            ours = next((s for s in statements if s.get("Sid") == sid), None)
            ok = (
                ours is not None
                and _source_arn(ours) == source
                and _principal(ours) == INVOKE_PRINCIPAL
            )
            run.setting(
                "lambda-permission",
                f"{function.name} from {run.config.apigw.name}",
                ok=ok,
                detail=f"invoke from {source}",
                action="create" if ours is None else "update",
                apply=lambda n=function.name, s=sid, src=source, old=ours is not None: (
                    _add_permission(lam, n, s, src, replace=old)
                ),
            )
            # Permissions for an earlier copy of this API (deleted and rebuilt).
            for stale in statements:
                stale_sid = stale.get("Sid", "")
                if stale_sid.startswith(STATEMENT_PREFIX) and stale_sid != sid:
                    run.setting(
                        "lambda-permission",
                        f"{function.name} {stale_sid}",
                        ok=False,
                        detail="for an API that no longer exists",
                        action="delete",
                        apply=lambda n=function.name, s=stale_sid: _remove_permission(lam, n, s),
                    )

    # ------------------------------------------------------------ destroy

    def teardown(self, run: StepRun) -> None:
        cfg = run.config.apigw
        apigw = run.clients.apigateway
        lam = run.clients.get("lambda")
        run.remove(
            "rest-api",
            cfg.name,
            find=lambda: find_api(apigw, run.ctx.lab, cfg.name),
            # DeleteRestApi is limited to 1 per 30 s per account: TooManyRequests is retried
            # by botocore's standard mode (CLIENT_CONFIG), not here.
            delete=lambda api: apigw.delete_rest_api(restApiId=api["id"]),
        )
        for function in run.config.lambda_.functions.values():
            statements = function_policy(lam, function.name) or []
            for statement in statements:
                sid = statement.get("Sid", "")
                if sid.startswith(STATEMENT_PREFIX):
                    run.remove(
                        "lambda-permission",
                        f"{function.name} {sid}",
                        find=lambda s=statement: s,
                        delete=lambda _s, n=function.name, s=sid: _remove_permission(lam, n, s),
                    )
        remove_log_group(run, cfg.access_log_group)
        _teardown_logging_role(run)


# ---------------------------------------------------------------- API changes


def _refuse(what: str):
    raise StepError(
        f"{what} and can't be changed in place",
        hint="run `msctl down --only apigw` and `msctl up` to rebuild the API",
    )


def _api_fixes(apigw, api: Resource, cfg) -> list[Fix]:
    fixes = []
    api_id = api["id"]
    if (api.get("description") or "") != cfg.description:
        fixes.append(
            Fix(
                f"description -> {cfg.description!r}",
                lambda: apigw.update_rest_api(
                    restApiId=api_id,
                    patchOperations=[
                        {"op": "replace", "path": "/description", "value": cfg.description}
                    ],
                ),
            )
        )
    types = (api.get("endpointConfiguration") or {}).get("types") or []
    if types != [ENDPOINT_TYPE]:
        current = types[0] if types else "EDGE"
        fixes.append(
            Fix(
                f"endpoint {current} -> {ENDPOINT_TYPE}",
                lambda: apigw.update_rest_api(
                    restApiId=api_id,
                    patchOperations=[
                        {
                            "op": "replace",
                            "path": f"/endpointConfiguration/types/{current}",
                            "value": ENDPOINT_TYPE,
                        }
                    ],
                ),
            )
        )
    return fixes


def _route_detail(route: Route) -> str:
    auth = "authorizer" if route.guarded else "open"
    if route.integration == "MOCK":
        return "CORS preflight (MOCK)"
    return f"{route.integration} -> {route.target} ({auth})"


def _put_method(apigw, api_id: str, resource_id: str, verb: str, want: dict, exists: bool):
    """The method with its integration and responses, replacing it when it exists (the
    stage keeps serving its deployment until the next one)."""
    if exists:
        apigw.delete_method(restApiId=api_id, resourceId=resource_id, httpMethod=verb)
    method = {
        "restApiId": api_id,
        "resourceId": resource_id,
        "httpMethod": verb,
        "authorizationType": want["authorizationType"],
        "requestParameters": want["requestParameters"],
    }
    if want["authorizerId"]:
        method["authorizerId"] = want["authorizerId"]
    apigw.put_method(**method)
    integ = want["integration"]
    integration = {
        "restApiId": api_id,
        "resourceId": resource_id,
        "httpMethod": verb,
        "type": integ["type"],
    }
    if integ["type"] == "MOCK":
        integration["passthroughBehavior"] = "WHEN_NO_MATCH"
    else:
        integration["integrationHttpMethod"] = integ["httpMethod"]
        integration["uri"] = integ["uri"]
    if integ["requestParameters"]:
        integration["requestParameters"] = integ["requestParameters"]
    if integ["requestTemplates"]:
        integration["requestTemplates"] = integ["requestTemplates"]
    apigw.put_integration(**integration)
    for code, params in want["responses"].items():
        apigw.put_method_response(
            restApiId=api_id,
            resourceId=resource_id,
            httpMethod=verb,
            statusCode=code,
            responseParameters=params,
        )
    for code, params in want["integrationResponses"].items():
        apigw.put_integration_response(
            restApiId=api_id,
            resourceId=resource_id,
            httpMethod=verb,
            statusCode=code,
            responseParameters=params,
        )


def _delete_resource(apigw, api_id: str, resource_id: str) -> None:
    try:
        apigw.delete_resource(restApiId=api_id, resourceId=resource_id)
    except ClientError as exc:
        if not is_code(exc, "NotFoundException"):  # went with its parent
            raise


def _add_permission(lam, name: str, sid: str, source: str, replace: bool) -> None:
    if replace:
        _remove_permission(lam, name, sid)
    lam.add_permission(
        FunctionName=name,
        StatementId=sid,
        Action="lambda:InvokeFunction",
        Principal=INVOKE_PRINCIPAL,
        SourceArn=source,
    )


def _remove_permission(lam, name: str, sid: str) -> None:
    try:
        lam.remove_permission(FunctionName=name, StatementId=sid)
    except ClientError as exc:
        if not is_code(exc, "ResourceNotFoundException"):
            raise


# ---------------------------------------------------------------- stage and deployment


def _create_stage(run: StepRun, api_id: str, digest: str) -> Resource:
    apigw = run.clients.apigateway
    cfg = run.config.apigw
    deployment = apigw.create_deployment(
        restApiId=api_id, description=f"{FINGERPRINT_PREFIX}{digest}"
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
    name = cfg.stage

    def update(*ops: tuple[str, str]):
        return lambda: apigw.update_stage(
            restApiId=api_id,
            stageName=name,
            patchOperations=[{"op": "replace", "path": p, "value": v} for p, v in ops],
        )

    fixes = []
    current = _deployment_description(apigw, api_id, stage.get("deploymentId"))
    if definition_changed or current != f"{FINGERPRINT_PREFIX}{digest()}":

        def deploy():
            deployment = apigw.create_deployment(
                restApiId=api_id, description=f"{FINGERPRINT_PREFIX}{digest()}"
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


# ---------------------------------------------------------------- account-level logging role


def _log_role_name(run: StepRun) -> str:
    return f"{run.ctx.lab}-apigateway-cloudwatch"


def _find_role(iam, name: str) -> Resource | None:
    try:
        return iam.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if is_code(exc, "NoSuchEntity"):
            return None
        raise


def _role_usable(iam, arn: str, account: str) -> bool:
    """Whether the account setting names a role that exists (one of another account can't
    be checked, and isn't ours to replace)."""
    parts = arn.split(":")
    if len(parts) < 6 or parts[4] != account:
        return True
    return _find_role(iam, parts[5].rsplit("/", 1)[-1]) is not None


def _ensure_logging_role(run: StepRun, account: str) -> None:
    apigw = run.clients.apigateway
    iam = run.clients.iam
    name = _log_role_name(run)
    current = apigw.get_account().get("cloudwatchRoleArn") or ""
    ours = _find_role(iam, name)
    if current and (ours is None or current != ours["Arn"]) and _role_usable(iam, current, account):
        run.found.append(("apigateway-account", "cloudwatch role", current))
        return  # the account already logs through a role of its own
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": INVOKE_PRINCIPAL},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": LOG_ROLE_ACTIONS, "Resource": "*"}],
    }

    def create() -> Resource:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description="API Gateway access logs to CloudWatch Logs (account setting)",
            Tags=as_list(run.tags(name)),
        )["Role"]
        iam.put_role_policy(
            RoleName=name, PolicyName=LOG_ROLE_POLICY_NAME, PolicyDocument=json.dumps(policy)
        )
        return role

    def fixes(role: Resource) -> list[Fix]:
        try:
            iam.get_role_policy(RoleName=name, PolicyName=LOG_ROLE_POLICY_NAME)
            return []
        except ClientError as exc:
            if not is_code(exc, "NoSuchEntity"):
                raise
        return [
            Fix(
                f"inline policy {LOG_ROLE_POLICY_NAME}",
                lambda: iam.put_role_policy(
                    RoleName=name,
                    PolicyName=LOG_ROLE_POLICY_NAME,
                    PolicyDocument=json.dumps(policy),
                ),
            )
        ]

    role_arn = run.ensure(
        "iam-role",
        name,
        id_key="Arn",
        arn_key="Arn",
        find=lambda: ours,
        create=create,
        fixes=fixes,
    )
    run.setting(
        "apigateway-account",
        "cloudwatch role",
        ok=current == role_arn,
        detail=f"{current or 'unset'} -> {name}",
        action="create" if is_pending(role_arn) else "update",
        apply=lambda: run.retry(
            lambda: apigw.update_account(
                patchOperations=[{"op": "replace", "path": "/cloudwatchRoleArn", "value": role_arn}]
            ),
            codes=("BadRequestException",),
            match=lambda exc: any(m in str(exc) for m in ROLE_NOT_READY),
            reason="the new role is not yet usable by API Gateway",
            timeout=ROLE_PROPAGATION_TIMEOUT,
        ),
    )


def _teardown_logging_role(run: StepRun) -> None:
    """Delete the logging role unless the account setting still names it (see the module
    docstring): then it stays, and the run says so."""
    iam = run.clients.iam
    name = _log_role_name(run)
    role = _find_role(iam, name)
    if role is None:
        return
    if (run.clients.apigateway.get_account().get("cloudwatchRoleArn") or "") == role["Arn"]:
        run.emit(
            "note",
            f"kept IAM role {name}: it is this region's API Gateway CloudWatch role, which "
            "every REST API in the account logs through (AWS can't unset it)",
        )
        return

    def delete(_role: Resource) -> None:
        for policy in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
            iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for attached in iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", []):
            iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        iam.delete_role(RoleName=name)

    run.remove("iam-role", name, find=lambda: role, delete=delete)
