"""The local edge: an HTTP server that routes like the provisioned CloudFront distribution.

Everything is read from the emulator: the distribution's behaviours, origins and origin
paths; the REST API behind the API origin; the ALB behind the API's HTTP integrations; the
bucket (and its policy) behind the S3 origin. Requests then flow edge -> API Gateway
emulation -> Lambda function runner or ALB emulation -> local service process.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from botocore.exceptions import ClientError

from .alb import LoadBalancer
from .apigw import FunctionFailed, Request, Response, RestApi

log = logging.getLogger("msctl.edge")
API_DOMAIN = re.compile(r"^([a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com$")
S3_DOMAIN = re.compile(r"^(.+)\.s3(?:[.-][a-z0-9-]+)?\.amazonaws\.com$")
EDGE_HEADERS = [("Via", "1.1 msctl-local-edge (CloudFront)"), ("X-Cache", "Miss from cloudfront")]
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "upgrade",
    "content-encoding",
}


@dataclass(frozen=True)
class Behavior:
    pattern: str
    origin_id: str
    methods: frozenset[str]

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.pattern)


class Edge:
    def __init__(self, clients, distribution_id: str, invoke_function, account: str):
        """`clients`: boto3 clients for the emulator (cloudfront, apigateway, elbv2, s3);
        `invoke_function(arn, event)`: the function runner (blocking)."""
        self.clients = clients
        self.account = account
        self.distribution_id = distribution_id
        self._invoke_function = invoke_function
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="invoke")
        self._apis: dict[tuple[str, str], RestApi] = {}
        self._lbs: dict[str, LoadBalancer] = {}
        self.session: aiohttp.ClientSession | None = None
        self.reload()

    # ------------------------------------------------------------ provisioning

    def reload(self) -> None:
        dist = self.clients.cloudfront.get_distribution(Id=self.distribution_id)["Distribution"]
        self.arn = dist["ARN"]
        config = dist["DistributionConfig"]
        self.default_root = config.get("DefaultRootObject") or ""
        self.origins = {o["Id"]: o for o in config["Origins"]["Items"]}
        behaviors = [
            Behavior(b["PathPattern"], b["TargetOriginId"], frozenset(b["AllowedMethods"]["Items"]))
            for b in (config.get("CacheBehaviors") or {}).get("Items", [])
        ]
        default = config["DefaultCacheBehavior"]
        behaviors.append(
            Behavior("*", default["TargetOriginId"], frozenset(default["AllowedMethods"]["Items"]))
        )
        self.behaviors = behaviors
        self._apis.clear()

    def api(self, api_id: str, stage: str) -> RestApi:
        key = (api_id, stage)
        if key not in self._apis:
            self._apis[key] = RestApi.load(self.clients.apigateway, api_id, stage, self.account)
        return self._apis[key]

    def load_balancer(self, dns_name: str) -> LoadBalancer | None:
        if dns_name not in self._lbs:
            lb = LoadBalancer.load(self.clients.elbv2, dns_name)
            if lb is None:
                return None
            self._lbs[dns_name] = lb
        return self._lbs[dns_name]

    def register_target(self, dns_name: str, target_group_arn: str, base_url: str) -> None:
        lb = self.load_balancer(dns_name)
        if lb is None:
            raise LookupError(f"no load balancer {dns_name} in the emulator")
        lb.register(target_group_arn, base_url)

    # ------------------------------------------------------------ serving

    def app(self) -> web.Application:
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(total=30),
            auto_decompress=False,
        )

    async def _stop(self, _app) -> None:
        if self.session:
            await self.session.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        behavior = next(b for b in self.behaviors if b.matches(path))
        if request.method not in behavior.methods:
            return _web(
                Response.json(403, {"message": "method not allowed by this cache behavior"})
            )
        origin = self.origins[behavior.origin_id]
        domain = origin["DomainName"]
        # CloudFront serves the default root object for the root URL only.
        viewer_path = f"/{self.default_root}" if path == "/" and self.default_root else path
        full_path = (origin.get("OriginPath") or "") + viewer_path
        body = await request.read()
        try:
            if API_DOMAIN.match(domain):
                response = await self._api_origin(
                    request, API_DOMAIN.match(domain).group(1), full_path, body
                )
            elif S3_DOMAIN.match(domain):
                response = await self._s3_origin(
                    request, S3_DOMAIN.match(domain).group(1), full_path
                )
            else:
                response = Response.json(
                    502, {"message": f"origin {domain} is not reachable locally"}
                )
        except Exception:  # an edge must answer; the details go to the data plane's log
            log.exception("edge failed on %s %s", request.method, path)
            response = Response.json(502, {"message": "Bad gateway"})
        return _web(response)

    async def _api_origin(
        self, request: web.Request, api_id: str, full_path: str, body: bytes
    ) -> Response:
        stage, _, rest = full_path.lstrip("/").partition("/")
        try:
            api = self.api(api_id, stage)
        except ClientError:
            return Response.json(403, {"message": "Forbidden"})
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "host"]
        api_request = Request(
            request.method,
            "/" + rest,
            headers,
            list(request.query.items()),
            body,
            request.remote or "127.0.0.1",
        )
        return await api.handle(api_request, self._invoke, self._forward)

    async def _invoke(self, arn: str, event: dict):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call_function, arn, event)

    def _call_function(self, arn: str, event: dict):
        try:
            return self._invoke_function(arn, event)
        except Exception as exc:
            message = getattr(exc, "message", None) or str(exc)
            raise FunctionFailed(message) from exc

    async def _forward(
        self, method: str, url: str, headers: list[tuple[str, str]], body: bytes
    ) -> Response:
        parts = urlsplit(url)
        lb = self.load_balancer(parts.hostname or "")
        if lb is None:
            return Response.json(502, {"message": f"{parts.hostname} is not reachable locally"})
        kind, target = lb.route(parts.path, headers)
        if kind == "fixed":
            return Response(
                target["status"],
                [("Content-Type", target["content_type"])],
                target["body"].encode(),
            )
        if kind == "unavailable":
            return Response(
                503, [("Content-Type", "text/html")], b"503 Service Temporarily Unavailable"
            )
        query = f"?{parts.query}" if parts.query else ""
        async with self.session.request(
            method,
            f"{target}{parts.path}{query}",
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS]
            return Response(upstream.status, out, payload)

    async def _s3_origin(self, request: web.Request, bucket: str, full_path: str) -> Response:
        key = full_path.lstrip("/")
        if request.method not in ("GET", "HEAD"):
            return Response.json(403, {"message": "method not allowed"})
        if not self._oac_allows(bucket, key):
            return _access_denied()
        loop = asyncio.get_running_loop()
        try:
            obj = await loop.run_in_executor(
                self._pool, lambda: self.clients.s3.get_object(Bucket=bucket, Key=key)
            )
        except ClientError:
            # Without s3:ListBucket, S3 answers a missing key with 403, and CloudFront passes it on.
            return _access_denied()
        data = obj["Body"].read()
        headers = [
            ("Content-Type", obj.get("ContentType") or "binary/octet-stream"),
            ("ETag", obj.get("ETag", "")),
        ]
        return Response(200, headers, b"" if request.method == "HEAD" else data)

    def _oac_allows(self, bucket: str, key: str) -> bool:
        """The bucket policy must let this distribution (CloudFront OAC) read the object."""
        try:
            policy = json.loads(self.clients.s3.get_bucket_policy(Bucket=bucket)["Policy"])
        except ClientError:
            return False
        resource = f"arn:aws:s3:::{bucket}/{key}"
        allowed = False
        for statement in policy.get("Statement", []):
            principal = statement.get("Principal") or {}
            service = principal.get("Service") if isinstance(principal, dict) else principal
            if service not in ("cloudfront.amazonaws.com", "*"):
                continue
            actions = statement.get("Action")
            actions = [actions] if isinstance(actions, str) else actions or []
            if not any(a in ("s3:GetObject", "s3:*", "*") for a in actions):
                continue
            resources = statement.get("Resource")
            resources = [resources] if isinstance(resources, str) else resources or []
            if not any(fnmatch.fnmatchcase(resource, r) for r in resources):
                continue
            source = (statement.get("Condition") or {}).get("StringEquals", {}).get("AWS:SourceArn")
            if source is not None and source != self.arn:
                continue
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
        return allowed


def _access_denied() -> Response:
    body = b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>'
    return Response(403, [("Content-Type", "application/xml")], body)


def _web(response: Response) -> web.Response:
    out = web.Response(status=response.status, body=response.body)
    for key, value in response.headers:
        if key.lower() in HOP_HEADERS:
            continue
        if key.lower() == "content-type":
            out.headers["Content-Type"] = value
        else:
            out.headers.add(key, value)
    for key, value in EDGE_HEADERS:
        out.headers[key] = value
    return out
