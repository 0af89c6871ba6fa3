"""API Gateway (REST) emulation for the local data plane, driven by what was provisioned.

moto stores the API's resources, methods, integrations and authorizers but can't invoke a
deployed stage. This module reads them from the emulator and answers requests with API
Gateway's semantics: resource matching with path parameters and {proxy+}, Lambda REQUEST and
TOKEN authorizers (401/403, context passed on), AWS_PROXY events, HTTP_PROXY forwarding with
request parameter mappings, and MOCK integrations. A route that wasn't provisioned gets API
Gateway's own 403 answer, never a fallback.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

LAMBDA_ARN = re.compile(r"functions/(arn:[^/]+)/invocations")
MISSING_TOKEN = {"message": "Missing Authentication Token"}
TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml")


class FunctionFailed(Exception):
    """The function runner couldn't produce a result (the handler raised, timed out, crashed)."""


@dataclass
class Request:
    method: str
    path: str  # after the stage: "/api/auth/login"
    headers: list[tuple[str, str]]
    query: list[tuple[str, str]]
    body: bytes
    source_ip: str = "127.0.0.1"

    def header(self, name: str) -> str | None:
        name = name.lower()
        values = [v for k, v in self.headers if k.lower() == name]
        return values[-1] if values else None


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def json(cls, status: int, doc: Any, headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(
            status,
            [("Content-Type", "application/json"), *(headers or [])],
            json.dumps(doc).encode(),
        )


@dataclass(frozen=True)
class Match:
    resource: dict
    method: dict
    path_parameters: dict[str, str]


Invoke = Callable[[str, dict], Awaitable[Any]]
Forward = Callable[[str, str, list[tuple[str, str]], bytes], Awaitable[Response]]


class RestApi:
    def __init__(
        self,
        api_id: str,
        stage: str,
        resources: list[dict],
        authorizers: list[dict],
        region: str,
        account: str,
        stage_variables: dict | None = None,
    ):
        self.api_id = api_id
        self.stage = stage
        self.resources = resources
        self.authorizers = {a["id"]: a for a in authorizers}
        self.region = region
        self.account = account
        self.stage_variables = stage_variables or None
        self._tree = _build_tree(resources)

    @classmethod
    def load(cls, client, api_id: str, stage: str, account: str) -> RestApi:
        """Read the API from the emulator. Raises client errors for a missing API or stage."""
        stage_doc = client.get_stage(restApiId=api_id, stageName=stage)
        resources = []
        for page in client.get_paginator("get_resources").paginate(
            restApiId=api_id, embed=["methods"]
        ):
            resources.extend(page["items"])
        authorizers = client.get_authorizers(restApiId=api_id).get("items", [])
        return cls(
            api_id,
            stage,
            resources,
            authorizers,
            client.meta.region_name,
            account,
            stage_doc.get("variables"),
        )

    # ------------------------------------------------------------ matching

    def match(self, method: str, path: str) -> Match | None:
        segments = [s for s in path.split("/") if s]
        found = _walk(self._tree, segments, {})
        if found is None:
            return None
        resource, params = found
        methods = resource.get("resourceMethods") or {}
        definition = methods.get(method) or methods.get("ANY")
        if definition is None:
            return None
        return Match(resource, definition, params)

    # ------------------------------------------------------------ handling

    async def handle(self, request: Request, invoke: Invoke, forward: Forward) -> Response:
        request_id = str(uuid.uuid4())
        match = self.match(request.method, request.path)
        if match is None:
            return Response.json(
                403, MISSING_TOKEN, [("x-amzn-ErrorType", "MissingAuthenticationTokenException")]
            )
        context = self._request_context(request, match, request_id)
        authorizer_context: dict | None = None
        if match.method.get("authorizationType") == "CUSTOM":
            outcome = await self._authorize(request, match, context, invoke)
            if isinstance(outcome, Response):
                return outcome
            authorizer_context = outcome
            context["authorizer"] = authorizer_context
        integration = match.method.get("methodIntegration") or {}
        kind = integration.get("type")
        if kind == "AWS_PROXY":
            return await self._lambda_proxy(request, match, context, integration, invoke)
        if kind == "HTTP_PROXY":
            return await self._http_proxy(request, match, integration, authorizer_context, forward)
        if kind == "MOCK":
            return self._mock(match, integration)
        return Response.json(500, {"message": f"integration type {kind} is not supported locally"})

    def _request_context(self, request: Request, match: Match, request_id: str) -> dict:
        now = datetime.now(UTC)
        return {
            "resourceId": match.resource["id"],
            "resourcePath": match.resource["path"],
            "httpMethod": request.method,
            "extendedRequestId": request_id,
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "path": f"/{self.stage}{request.path}",
            "accountId": self.account,
            "protocol": "HTTP/1.1",
            "stage": self.stage,
            "domainPrefix": self.api_id,
            "domainName": f"{self.api_id}.execute-api.{self.region}.amazonaws.com",
            "requestId": request_id,
            "apiId": self.api_id,
            "identity": {"sourceIp": request.source_ip, "userAgent": request.header("User-Agent")},
        }

    def method_arn(self, request: Request, match: Match) -> str:
        return (
            f"arn:aws:execute-api:{self.region}:{self.account}:{self.api_id}/{self.stage}/"
            f"{request.method}{match.resource['path']}"
        )

    async def _authorize(
        self, request: Request, match: Match, context: dict, invoke: Invoke
    ) -> dict | Response:
        authorizer = self.authorizers.get(match.method.get("authorizerId"))
        if authorizer is None:
            return Response.json(500, {"message": None})
        sources = [
            s.strip() for s in (authorizer.get("identitySource") or "").split(",") if s.strip()
        ]
        for source in sources:
            if (
                source.startswith("method.request.header.")
                and request.header(source.rsplit(".", 1)[1]) is None
            ):
                return _unauthorized()
        arn = _function_arn(authorizer.get("authorizerUri", ""))
        method_arn = self.method_arn(request, match)
        if authorizer.get("type") == "TOKEN":
            header = sources[0].rsplit(".", 1)[1] if sources else "Authorization"
            event = {
                "type": "TOKEN",
                "authorizationToken": request.header(header),
                "methodArn": method_arn,
            }
        else:
            event = {
                "type": "REQUEST",
                "methodArn": method_arn,
                **_proxy_fields(request, match),
                "stageVariables": self.stage_variables,
                "requestContext": context,
            }
        try:
            result = await invoke(arn, event)
        except FunctionFailed as exc:
            if str(exc) == "Unauthorized":
                return _unauthorized()
            return Response.json(500, {"message": None})
        if not isinstance(result, dict) or not _allows(result.get("policyDocument"), method_arn):
            return Response.json(
                403,
                {"Message": "User is not authorized to access this resource with an explicit deny"},
            )
        extra = {
            k: v
            for k, v in (result.get("context") or {}).items()
            if isinstance(v, str | int | float | bool)
        }
        return {"principalId": result.get("principalId"), **extra}

    async def _lambda_proxy(
        self, request: Request, match: Match, context: dict, integration: dict, invoke: Invoke
    ) -> Response:
        event = {
            **_proxy_fields(request, match),
            "stageVariables": self.stage_variables,
            "requestContext": context,
        }
        try:
            result = await invoke(_function_arn(integration.get("uri", "")), event)
        except FunctionFailed:
            return Response.json(502, {"message": "Internal server error"})
        return _proxy_response(result)

    async def _http_proxy(
        self,
        request: Request,
        match: Match,
        integration: dict,
        authorizer: dict | None,
        forward: Forward,
    ) -> Response:
        params = integration.get("requestParameters") or {}
        url = integration.get("uri", "")
        for name, source in params.items():
            if name.startswith("integration.request.path."):
                value = _parameter(source, request, match, authorizer) or ""
                url = url.replace("{" + name.rsplit(".", 1)[1] + "}", value)
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_HEADERS]
        for name, source in params.items():
            if name.startswith("integration.request.header."):
                header = name.rsplit(".", 1)[1]
                headers = [(k, v) for k, v in headers if k.lower() != header.lower()]
                value = _parameter(source, request, match, authorizer)
                if value:
                    headers.append((header, value))
        if request.query:
            url += ("&" if "?" in url else "?") + urlencode(request.query)
        method = integration.get("httpMethod") or request.method
        return await forward(
            request.method if method == "ANY" else method, url, headers, request.body
        )

    def _mock(self, match: Match, integration: dict) -> Response:
        template = (integration.get("requestTemplates") or {}).get("application/json", "")
        try:
            status = str(json.loads(template).get("statusCode", 200)) if template else "200"
        except ValueError:
            status = "200"
        answers = integration.get("integrationResponses") or {}
        answer = answers.get(status) or answers.get("200") or {}
        headers = []
        for name, value in (answer.get("responseParameters") or {}).items():
            if name.startswith("method.response.header.") and value.startswith("'"):
                headers.append((name.rsplit(".", 1)[1], value.strip("'")))
        body = (answer.get("responseTemplates") or {}).get("application/json", "") or ""
        return Response(int(status), headers, body.encode())


HOP_HEADERS = {
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "proxy-authorization",
    "te",
    "trailer",
}


def _unauthorized() -> Response:
    return Response.json(
        401, {"message": "Unauthorized"}, [("x-amzn-ErrorType", "UnauthorizedException")]
    )


def _function_arn(uri: str) -> str:
    found = LAMBDA_ARN.search(uri)
    return found.group(1) if found else uri


def _proxy_fields(request: Request, match: Match) -> dict:
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for k, v in request.headers:
        headers[k] = v
        multi_headers.setdefault(k, []).append(v)
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for k, v in request.query:
        query[k] = v
        multi_query.setdefault(k, []).append(v)
    content_type = request.header("Content-Type") or ""
    is_text = not request.body or content_type.startswith(TEXT_TYPES) or "charset" in content_type
    if is_text:
        try:
            body, encoded = (request.body.decode() if request.body else None), False
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(request.body).decode(), True
    else:
        body, encoded = base64.b64encode(request.body).decode(), True
    return {
        "resource": match.resource["path"],
        "path": request.path,
        "httpMethod": request.method,
        "headers": headers or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": match.path_parameters or None,
        "body": body,
        "isBase64Encoded": encoded,
    }


def _proxy_response(result: Any) -> Response:
    """Lambda proxy output -> HTTP; a malformed answer is API Gateway's 502."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int):
        return Response.json(502, {"message": "Internal server error"})
    headers = [(k, str(v)) for k, v in (result.get("headers") or {}).items()]
    for k, values in (result.get("multiValueHeaders") or {}).items():
        headers.extend((k, str(v)) for v in values)
    body = result.get("body") or ""
    if not isinstance(body, str):
        return Response.json(502, {"message": "Internal server error"})
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    return Response(result["statusCode"], headers, raw)


def _parameter(source: str, request: Request, match: Match, authorizer: dict | None) -> str | None:
    """The value of a request-parameter mapping source."""
    if source.startswith("'") and source.endswith("'"):
        return source[1:-1]
    if source.startswith("method.request.path."):
        return match.path_parameters.get(source.rsplit(".", 1)[1])
    if source.startswith("method.request.header."):
        return request.header(source.rsplit(".", 1)[1])
    if source.startswith("method.request.querystring."):
        name = source.rsplit(".", 1)[1]
        values = [v for k, v in request.query if k == name]
        return values[-1] if values else None
    if source.startswith("context.authorizer."):
        value = (authorizer or {}).get(source.rsplit(".", 1)[1])
        return None if value is None else str(value)
    return None


def _allows(policy: Any, method_arn: str) -> bool:
    """An IAM policy from an authorizer: some Allow matches the method ARN, no Deny does."""
    if not isinstance(policy, dict):
        return False
    statements = policy.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    allowed = False
    for statement in statements:
        resources = statement.get("Resource") or []
        resources = [resources] if isinstance(resources, str) else resources
        actions = statement.get("Action") or []
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("execute-api:Invoke", "execute-api:*", "*") for a in actions):
            continue
        if any(_arn_matches(r, method_arn) for r in resources):
            if statement.get("Effect") == "Deny":
                return False
            allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


def _arn_matches(pattern: str, arn: str) -> bool:
    regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(regex, arn) is not None


# ---------------------------------------------------------------- resource tree


def _build_tree(resources: list[dict]) -> dict:
    tree: dict = {"resource": None, "children": {}}
    for resource in resources:
        node = tree
        for part in [p for p in resource["path"].split("/") if p]:
            node = node["children"].setdefault(part, {"resource": None, "children": {}})
        node["resource"] = resource
    return tree


def _walk(node: dict, segments: list[str], params: dict) -> tuple[dict, dict] | None:
    """API Gateway's precedence at each level: literal, then {param}, then {proxy+}."""
    if not segments:
        return (node["resource"], params) if node["resource"] is not None else None
    head, rest = segments[0], segments[1:]
    children = node["children"]
    if head in children:
        found = _walk(children[head], rest, params)
        if found:
            return found
    for key, child in children.items():
        if key.startswith("{") and key.endswith("}") and not key.endswith("+}"):
            found = _walk(child, rest, {**params, key[1:-1]: head})
            if found:
                return found
    for key, child in children.items():
        if key.endswith("+}") and child["resource"] is not None:
            return child["resource"], {**params, key[1:-2]: "/".join(segments)}
    return None
