"""`msctl test-api`: the seed's checks and more against the lab's public URL, and a load test.

The scenario walks the lab as a user would, through the edge (CloudFront or the local edge):
the site, register, login, session checks, users, products, orders and notifications, and a
CORS preflight. Each check records pass/fail, its latency and what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

FORBIDDEN_IN_BODIES = ("passwordHash", "pbkdf2")


@dataclass
class CheckResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str = ""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self):
        try:
            return json.loads(self.text)
        except ValueError:
            return None


class Scenario:
    """The checks, in order; later checks use what earlier ones created (ids, tokens)."""

    def __init__(self, base_url: str, session: aiohttp.ClientSession):
        self.base = base_url.rstrip("/")
        self.session = session
        self.results: list[CheckResult] = []
        tag = secrets.token_hex(4)
        self.password = f"pw-{secrets.token_urlsafe(12)}"
        self.users = {
            "alice": {"email": f"alice-{tag}@example.com", "name": "Alice Test"},
            "bob": {"email": f"bob-{tag}@example.com", "name": "Bob Test"},
        }
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}
        self.product_id: int | None = None
        self.bodies: list[str] = []

    async def request(
        self,
        method: str,
        path: str,
        *,
        body=None,
        token: str | None = None,
        headers: dict | None = None,
    ) -> tuple[Answer, float]:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body) if not isinstance(body, str) else body
            all_headers.setdefault("Content-Type", "application/json")
        started = time.perf_counter()
        async with self.session.request(
            method, self.base + path, data=data, headers=all_headers, allow_redirects=False
        ) as resp:
            text = await resp.text(errors="replace")
            answer = Answer(resp.status, {k.lower(): v for k, v in resp.headers.items()}, text)
        self.bodies.append(text)
        return answer, (time.perf_counter() - started) * 1000

    async def check(
        self,
        name: str,
        method: str,
        path: str,
        expect: int,
        verify: Callable[[Answer], str | None] | None = None,
        **kwargs,
    ) -> Answer | None:
        try:
            answer, ms = await self.request(method, path, **kwargs)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.results.append(CheckResult(name, False, 0.0, f"request failed: {exc}"))
            return None
        problem = None
        if answer.status != expect:
            problem = f"expected {expect}, got {answer.status}: {answer.text[:200]}"
        elif verify is not None:
            problem = verify(answer)
        self.results.append(CheckResult(name, problem is None, ms, problem or ""))
        return answer

    async def run(self) -> list[CheckResult]:
        alice = self.users["alice"]
        await self.check(
            "GET / returns the site",
            "GET",
            "/",
            200,
            lambda a: (
                None
                if "text/html" in a.headers.get("content-type", "")
                else f"content type {a.headers.get('content-type')}"
            ),
        )
        for who in ("alice", "bob"):
            user = self.users[who]
            answer = await self.check(
                f"register {who} (201)",
                "POST",
                "/api/auth/register",
                201,
                body={**user, "password": self.password},
            )
            if answer is not None and isinstance(answer.json(), dict):
                self.ids[who] = answer.json().get("userId", "")
        await self.check(
            "duplicate register (409)",
            "POST",
            "/api/auth/register",
            409,
            body={**alice, "password": self.password},
        )
        await self.check(
            "login with a wrong password (401)",
            "POST",
            "/api/auth/login",
            401,
            body={"email": alice["email"], "password": self.password + "x"},
        )
        for who in ("alice", "bob"):
            answer = await self.check(
                f"login {who} (200, token)",
                "POST",
                "/api/auth/login",
                200,
                lambda a: (
                    None if isinstance(a.json(), dict) and a.json().get("token") else "no token"
                ),
                body={"email": self.users[who]["email"], "password": self.password},
            )
            if answer is not None and isinstance(answer.json(), dict):
                self.tokens[who] = answer.json().get("token", "")
                self.ids.setdefault(who, answer.json().get("user", {}).get("userId", ""))
        token = self.tokens.get("alice")
        await self.check(
            "verify session (200)",
            "GET",
            "/api/auth/verify",
            200,
            lambda a: (
                None
                if a.json() and a.json().get("userId") == self.ids.get("alice")
                else "wrong user"
            ),
            token=token,
        )
        await self.check("verify without a session (401)", "GET", "/api/auth/verify", 401)
        await self.check("users list (200)", "GET", "/api/users?limit=10", 200, token=token)
        await self.check("users list without a session (401)", "GET", "/api/users", 401)
        await self.check(
            "own user record (200)",
            "GET",
            f"/api/users/{self.ids.get('alice')}",
            200,
            lambda a: (
                None if a.json() and a.json().get("email") == alice["email"] else "wrong record"
            ),
            token=token,
        )
        await self.check(
            "update another user's record (403)",
            "PUT",
            f"/api/users/{self.ids.get('bob')}",
            403,
            body={"name": "Mallory"},
            token=token,
        )
        await self.check(
            "update own name (200)",
            "PUT",
            f"/api/users/{self.ids.get('alice')}",
            200,
            body={"name": "Alice Renamed"},
            token=token,
        )
        await self.check(
            "products list (200)",
            "GET",
            "/api/products",
            200,
            lambda a: None if isinstance(a.json(), list) else "not a list",
        )
        await self.check(
            "create product without a session (401)",
            "POST",
            "/api/products",
            401,
            body={"name": "x", "price": "1.00", "stock": 1},
        )
        created = await self.check(
            "create product (201)",
            "POST",
            "/api/products",
            201,
            token=token,
            body={
                "name": f"test-api widget {secrets.token_hex(3)}",
                "description": "from msctl",
                "price": "12.50",
                "stock": 3,
            },
        )
        if created is not None and isinstance(created.json(), dict):
            self.product_id = created.json().get("id")
        await self.check(
            "get product (200)",
            "GET",
            f"/api/products/{self.product_id}",
            200,
            lambda a: None if a.json() and a.json().get("stock") == 3 else "wrong stock",
        )
        await self.check(
            "order 2 of 3 (201)",
            "POST",
            "/api/orders",
            201,
            token=token,
            body={"productId": self.product_id, "quantity": 2},
        )
        await self.check(
            "stock decremented to 1",
            "GET",
            f"/api/products/{self.product_id}",
            200,
            lambda a: (
                None
                if a.json() and a.json().get("stock") == 1
                else f"stock is {a.json() and a.json().get('stock')}"
            ),
        )
        await self.check(
            "over-order (409)",
            "POST",
            "/api/orders",
            409,
            token=token,
            body={"productId": self.product_id, "quantity": 5},
        )
        await self.check(
            "own orders (200)",
            "GET",
            "/api/orders",
            200,
            token=token,
            verify=lambda a: None if isinstance(a.json(), list | dict) else "bad body",
        )
        await self.check(
            "post a notification (201)",
            "POST",
            "/api/notifications",
            201,
            body={"message": "hello from msctl test-api"},
            token=token,
        )
        await self.check(
            "list own notifications (200)",
            "GET",
            "/api/notifications",
            200,
            lambda a: None if "hello from msctl test-api" in a.text else "not listed",
            token=token,
        )
        await self.check(
            "CORS preflight (200)",
            "OPTIONS",
            "/api/products",
            200,
            lambda a: (
                None
                if "access-control-allow-origin" in a.headers
                else "no Access-Control-Allow-Origin"
            ),
            headers={"Origin": "https://example.com", "Access-Control-Request-Method": "POST"},
        )
        await self.check("logout (200)", "POST", "/api/auth/logout", 200, token=token)
        await self.check(
            "session gone after logout (401)", "GET", "/api/auth/verify", 401, token=token
        )
        leaked = [
            b for b in self.bodies if any(s in b for s in FORBIDDEN_IN_BODIES) or self.password in b
        ]
        self.results.append(
            CheckResult(
                "no password hash or password in any response",
                not leaked,
                0.0,
                f"{len(leaked)} response(s) leak it" if leaked else "",
            )
        )
        return self.results


async def run_scenario(base_url: str, timeout: float = 30.0) -> list[CheckResult]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return await Scenario(base_url, session).run()


# ---------------------------------------------------------------- load mode


@dataclass
class LoadReport:
    url: str
    requests: int
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + sum(n for s, n in self.statuses.items() if s >= 400)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    def summary(self) -> dict:
        return {
            "url": self.url,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {
                name: round(self.percentile(p), 2)
                for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
            },
            "status_codes": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "failed": self.failed,
        }


async def run_load(
    url: str,
    requests: int,
    concurrency: int,
    on_progress: Callable[[int], None] = lambda _n: None,
    timeout: float = 30.0,
) -> LoadReport:
    """`ab -n requests -c concurrency url`: a fixed number of GETs from `concurrency` workers."""
    report = LoadReport(url, requests, concurrency, 0.0)
    remaining = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        report.statuses[resp.status] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    report.errors[type(exc).__name__] += 1
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
                on_progress(1)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report.seconds = time.perf_counter() - began
    return report
