"""The REST API's route model: which (path, method) goes where, a method as msctl wants it
and as API Gateway reports it (both in one normalized form, so they compare with ==), and
the definition's fingerprint. The routes themselves are described in steps/apigw.py.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..resources.base import absent
from .alb_origin import HEADER as ORIGIN_HEADER

API_PREFIX = "/api"  # what cloudfront.api_path_pattern (/api/*) forwards, unchanged
LAMBDA_PATH = "lambda:path/2015-03-31/functions"
# The caller as the container services see it: header -> the authorizer context key API
# Gateway sets it from on guarded methods. On open methods it is the static value NO_CALLER,
# so API Gateway sends an empty header instead of whatever the client sent.
IDENTITY_HEADERS = {"X-Authorized-User-Id": "userId", "X-Authorized-Role": "role"}
# Every request to the ALB carries the lab's origin secret (alb_origin) as a static value:
# the ALB forwards nothing without it, so the identity headers can't be forged there.
HEADER_PARAM = "integration.request.header.{}"
NO_CALLER = "''"
PROXY_PARAM = "method.request.path.proxy"
PROXY_TARGET = "integration.request.path.proxy"
CORS_PARAM = "method.response.header.Access-Control-Allow-{}"
MOCK_TEMPLATE = {"application/json": '{"statusCode": 200}'}
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
    ("/users/{id}", "DELETE", "users", True),
    ("/notifications", "GET", "notifications", True),
    ("/notifications", "POST", "notifications", True),
    ("/notifications", "DELETE", "notifications", True),
)
FIELDS = {  # the managed fields of a method, as the differences name them
    "authorizationType": "authorization",
    "authorizerId": "authorizer",
    "requestParameters": "method parameters",
    "integration": "integration",
    "responses": "method responses",
    "integrationResponses": "integration responses",
}


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

    @property
    def detail(self) -> str:
        if self.integration == "MOCK":
            return "CORS preflight (MOCK)"
        auth = "authorizer" if self.guarded else "open"
        return f"{self.integration} -> {self.target} ({auth})"


@dataclass
class Targets:
    """What the routes point at: function ARNs, the ALB and the origin secret it wants, the
    authorizer, CORS values."""

    region: str
    functions: dict[str, str]  # key -> function ARN
    alb_dns: str
    origin: str  # the value of X-Lab-Origin
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
    paths = sorted({p for r in routes for p in _ancestors(r.path)}, key=depth_key)
    routes += [Route(path, "OPTIONS", "MOCK") for path in paths]
    return routes


def _ancestors(path: str) -> list[str]:
    """/api/users/{id} -> [/api, /api/users, /api/users/{id}]"""
    parts = path.strip("/").split("/")
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def depth_key(path: str) -> tuple[int, str]:
    return (path.count("/"), path)


def cors_values(config) -> dict[str, str]:
    origins = config.cors.allowed_origins
    return {
        "Headers": ",".join(config.cors.allowed_headers),
        "Methods": ",".join(config.cors.allowed_methods),
        # A MOCK response is static: one origin only (see steps/apigw.py).
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
        params = {
            HEADER_PARAM.format(header): f"context.authorizer.{key}" if route.guarded else NO_CALLER
            for header, key in IDENTITY_HEADERS.items()
        }
        params[HEADER_PARAM.format(ORIGIN_HEADER)] = f"'{t.origin}'"
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


def differences(live: dict, want: dict) -> str:
    return ", ".join(text for k, text in FIELDS.items() if live.get(k) != want.get(k)) + " differ"


# ---------------------------------------------------------------- reading the API


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
                    method = (
                        absent(
                            lambda v=verb, i=item["id"]: apigw.get_method(
                                restApiId=api_id, resourceId=i, httpMethod=v
                            )
                        )
                        or method
                    )
                methods[verb] = {k: v for k, v in method.items() if k != "ResponseMetadata"}
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


# ---------------------------------------------------------------- writing a method


def put_method(apigw, api_id: str, resource_id: str, verb: str, want: dict, exists: bool):
    """The method with its integration and responses, replacing it when it exists (the
    stage keeps serving its deployment until the next one)."""
    ids = {"restApiId": api_id, "resourceId": resource_id, "httpMethod": verb}
    if exists:
        apigw.delete_method(**ids)
    method = {"authorizationType": want["authorizationType"]}
    if want["authorizerId"]:
        method["authorizerId"] = want["authorizerId"]
    apigw.put_method(**ids, **method, requestParameters=want["requestParameters"])
    integ = want["integration"]
    integration: dict = {"type": integ["type"]}
    if integ["type"] == "MOCK":
        integration["passthroughBehavior"] = "WHEN_NO_MATCH"
    else:
        integration.update(integrationHttpMethod=integ["httpMethod"], uri=integ["uri"])
    for key in ("requestParameters", "requestTemplates"):
        if integ[key]:
            integration[key] = integ[key]
    apigw.put_integration(**ids, **integration)
    for code, params in want["responses"].items():
        apigw.put_method_response(**ids, statusCode=code, responseParameters=params)
    for code, params in want["integrationResponses"].items():
        apigw.put_integration_response(**ids, statusCode=code, responseParameters=params)
