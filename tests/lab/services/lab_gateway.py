"""The lab behind its API Gateway, in-process: the route table msctl deploys
(steps/apigw_routes.py: `route_table`, `desired_method`, `put_method`) written to moto's
API Gateway and served by the local API Gateway emulation the local data plane uses
(authorizer, proxy events, header mappings); behind it the Lambda handlers (moto DynamoDB
and S3) and, through the local ALB emulation with the alb step's rules (the origin secret
wanted), the products and orders services (Flask test clients on a real PostgreSQL).
The admin is made as the admin step makes it. `serve` puts it on a loopback port.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from aiohttp import web
from flask.testing import FlaskClient
from lab_helpers import PASSWORD, USERS_TABLE, FakeContext, put_session
from multidict import CIMultiDict
from origin_secret import ORIGIN_HEADER, ORIGIN_SECRET

from msctl.config import load_config
from msctl.local.alb import LoadBalancer, Rule
from msctl.local.apigw import FunctionFailed, Request, Response, RestApi
from msctl.steps import admin as admin_step
from msctl.steps import alb as alb_step
from msctl.steps.apigw_routes import (
    Targets,
    cors_values,
    depth_key,
    desired_method,
    lambda_uri,
    put_method,
    route_table,
)

REPO = Path(__file__).resolve().parents[3]
CONFIG = load_config(REPO / "config" / "lab.yaml")
REGION, ACCOUNT, ALB = "us-east-1", "123456789012", "alb.local"
ADMIN_EMAIL = "admin@microservices.example.com"


@dataclass
class Who:
    user_id: str
    email: str
    password: str = PASSWORD


def build_api() -> RestApi:
    """The route table as the apigw step writes it, read back as the local data plane does."""
    client = boto3.client("apigateway", region_name=REGION)
    api_id = client.create_rest_api(name="microservices-api")["id"]
    functions = {
        key: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{fn.name}"
        for key, fn in CONFIG.lambda_.functions.items()
    }
    authorizer = client.create_authorizer(
        restApiId=api_id,
        name="session-authorizer",
        type="REQUEST",
        authorizerUri=lambda_uri(REGION, functions["authorizer"]),
        identitySource="method.request.header.Authorization",
        authorizerResultTtlInSeconds=0,
    )["id"]
    targets = Targets(REGION, functions, ALB, ORIGIN_SECRET, authorizer, cors_values(CONFIG))
    routes = route_table(CONFIG)
    ids = {"/": client.get_resources(restApiId=api_id)["items"][0]["id"]}
    for route in sorted(routes, key=lambda r: depth_key(r.path)):
        parent, _, part = route.path.rpartition("/")
        if route.path not in ids:
            ids[route.path] = client.create_resource(
                restApiId=api_id, parentId=ids[parent or "/"], pathPart=part
            )["id"]
    for route in routes:
        want = desired_method(route, targets)
        put_method(client, api_id, ids[route.path], route.method, want, exists=False)
    client.create_deployment(restApiId=api_id, stageName="prod")
    return RestApi.load(client, api_id, "prod", ACCOUNT)


def build_alb() -> LoadBalancer:
    """The listener as the alb step makes it: a rule per service that also wants the origin
    secret, and the 403 default. Its targets are the services' names."""
    header = {"HttpHeaderName": ORIGIN_HEADER, "Values": [ORIGIN_SECRET]}
    rules = [
        Rule.from_api(
            {
                "Priority": str(10 * (i + 1)),
                "Conditions": [
                    {"Field": "path-pattern", "PathPatternConfig": {"Values": [f"/{svc}*"]}},
                    {"Field": "http-header", "HttpHeaderConfig": header},
                ],
                "Actions": [{"Type": "forward", "TargetGroupArn": f"tg-{svc}"}],
            }
        )
        for i, svc in enumerate(("products", "orders"))
    ]
    default = {"IsDefault": True, "Conditions": [], "Actions": [alb_step.DEFAULT_ACTION]}
    lb = LoadBalancer("arn:alb", ALB, [*rules, Rule.from_api(default)])
    for svc in ("products", "orders"):
        lb.register(f"tg-{svc}", svc)
    return lb


class World:
    """The gateway with the functions and services behind it, and the people who call it."""

    def __init__(self, handlers: dict, products_app: Any, orders_app: Any):
        self.handlers = {fn.name: handlers[key] for key, fn in CONFIG.lambda_.functions.items()}
        apps = {"products": products_app, "orders": orders_app}
        # Behind the ALB: nothing but what API Gateway sends (its origin header mapping).
        self.services = {name: FlaskClient(app) for name, app in apps.items()}
        # Straight to a service with the origin secret: to make things for the tests.
        self.direct = {name: app.test_client() for name, app in apps.items()}
        self.alb = build_alb()
        self.api = build_api()
        self.other = self.new_user()
        self.admin = self.make_admin()

    # --- the gateway
    async def invoke(self, arn: str, event: dict) -> Any:
        handler = self.handlers[arn.rsplit(":", 1)[1]]
        try:  # through JSON, as Lambda passes them
            result = handler.lambda_handler(json.loads(json.dumps(event)), FakeContext())
        except Exception as exc:
            raise FunctionFailed(str(exc)) from exc
        return json.loads(json.dumps(result))

    async def forward(self, method: str, url: str, headers: list, body: bytes) -> Response:
        """The ALB emulation's answer, as the local edge forwards: a fixed one or the
        service's."""
        parts = urlsplit(url)
        assert parts.netloc == ALB
        kind, target = self.alb.route(parts.path, headers)
        if kind == "fixed":
            return Response(target["status"], [], target["body"].encode())
        client = self.services[target]
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        answer = client.open(path, method=method, headers=headers, data=body)
        return Response(answer.status_code, list(answer.headers.items()), answer.data)

    async def handle(self, request: Request) -> Response:
        return await self.api.handle(request, self.invoke, self.forward)

    def call(self, method: str, path: str, headers: dict, body: Any = None) -> Response:
        data = b"" if body is None else json.dumps(body).encode()
        all_headers = [("Content-Type", "application/json"), *headers.items()]
        return asyncio.run(self.handle(Request(method, path, all_headers, [], data)))

    # --- people and things
    def registration(self) -> dict:
        email = f"user-{secrets.token_hex(6)}@example.com"
        return {"email": email, "name": "Test User", "password": PASSWORD}

    def new_user(self) -> Who:
        body = self.registration()
        assert self.call("POST", "/api/auth/register", {}, body).status == 202
        claim = users_table().get_item(Key={"userId": "email#" + body["email"]})["Item"]
        return Who(claim["ownerId"], body["email"])

    def make_admin(self) -> Who:
        password = secrets.token_urlsafe(24)
        stored = admin_step.hash_password(password, iterations=1000)
        user_id = admin_step.put_admin(boto3.client("dynamodb"), USERS_TABLE, ADMIN_EMAIL, stored)
        return Who(user_id, ADMIN_EMAIL, password)

    def token(self, who: Who) -> str:
        body = {"email": who.email, "password": who.password}
        answer = self.call("POST", "/api/auth/login", {}, body)
        assert answer.status == 200, answer.body
        return json.loads(answer.body)["token"]

    def product(self) -> int:
        headers = {"X-Authorized-User-Id": self.admin.user_id, "X-Authorized-Role": "admin"}
        body = {"name": "Widget", "price": "2.50", "stock": 10}
        return self.direct["products"].post("/products", json=body, headers=headers).json["id"]

    def order(self, owner: Who) -> int:
        body = {"productId": self.product(), "quantity": 1}
        headers = {"X-Authorized-User-Id": owner.user_id}
        return self.direct["orders"].post("/orders", json=body, headers=headers).json["id"]

    def headers(self, column: str, owner: Who) -> dict[str, str]:
        """The headers of a caller: anonymous, the owner, another user, the admin, a forged
        session (with forged identity headers) or an expired one."""
        if column == "anonymous":
            return {}
        if column == "forged":
            return {
                "Authorization": f"Bearer {secrets.token_urlsafe(32)}",
                "X-Authorized-User-Id": owner.user_id,
                "X-Authorized-Role": "admin",
            }
        if column == "expired":
            token = secrets.token_urlsafe(32)
            put_session(token, owner.user_id, expires_in=-10)
            return {"Authorization": f"Bearer {token}"}
        who = {"owner": owner, "other": self.other, "admin": self.admin}[column]
        return {"Authorization": f"Bearer {self.token(who)}"}


def users_table():
    return boto3.resource("dynamodb").Table(USERS_TABLE)


SITE = "<!doctype html><title>lab</title>"
DROPPED = {"content-length", "transfer-encoding", "connection"}


@asynccontextmanager
async def serve(world: World) -> AsyncIterator[str]:
    """The world on a loopback port, as the local edge serves it: the site at /, the API
    under /api. Yields the base URL."""

    async def answer(request: web.Request) -> web.Response:
        if not request.path.startswith("/api/"):
            return web.Response(text=SITE, content_type="text/html")
        headers = list(request.headers.items())
        query = list(request.query.items())
        got = await world.handle(
            Request(request.method, request.path, headers, query, await request.read())
        )
        kept = CIMultiDict((k, v) for k, v in got.headers if k.lower() not in DROPPED)
        return web.Response(status=got.status, headers=kept, body=got.body)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
