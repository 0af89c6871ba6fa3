"""`msctl test-api`: the seed's checks and more against the lab's public URL, and a load test.

The scenario walks the lab as a user would, through the edge (CloudFront or the local edge):
the site, register, login, session checks, users, products, orders and notifications, and a
CORS preflight, and what a plain user must not do (write products, read other users, see or
cancel other users' orders). Signed in as the lab's admin (`admin_login` reads its secret)
it also creates the product it orders from. Each check records pass/fail, its latency and
what went wrong; at the end it removes what it created (its users, orders, notifications and
product), also after a failed check.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

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
    """The checks, in order; later checks use what earlier ones created (ids, tokens). What
    it creates (users, an order, a product) it removes again at the end, also after a
    failed check, and says so in a last check."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        admin: tuple[str, str] | None = None,
    ):
        self.base = base_url.rstrip("/")
        self.session = session
        self.admin = admin
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
        self.product_created = False
        self.stock = 0
        self.orders: list[int] = []
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
        try:
            await self.walk()
        except Exception as exc:  # an answer it didn't foresee: report it, still clean up
            detail = f"{type(exc).__name__}: {exc}"
            self.results.append(CheckResult("the checks ran to their end", False, 0.0, detail))
        finally:
            await self.remove_what_it_created()
            secrets_sent = [self.password, *(self.admin[1:] if self.admin else ())]
            leaked = [
                b for b in self.bodies if any(s in b for s in (*FORBIDDEN_IN_BODIES, *secrets_sent))
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

    async def walk(self) -> None:
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
        await self.accounts()
        await self.users_checks()
        await self.products_checks()
        if self.product_id is not None:
            await self.orders_checks()
        await self.notifications_and_cors()
        token = self.tokens.get("alice")
        await self.check("logout (200)", "POST", "/api/auth/logout", 200, token=token)
        await self.check(
            "session gone after logout (401)", "GET", "/api/auth/verify", 401, token=token
        )

    async def accounts(self) -> None:
        alice = self.users["alice"]
        registered: dict[str, str] = {}
        for who in ("alice", "bob"):
            answer = await self.check(
                f"register {who} (202)",
                "POST",
                "/api/auth/register",
                202,
                body={**self.users[who], "password": self.password},
            )
            registered[who] = answer.text if answer else ""
        # An existing email gets the very answer a new one gets, and changes nothing.
        await self.check(
            "register a taken email: the same answer as a new one (202)",
            "POST",
            "/api/auth/register",
            202,
            lambda a: None if a.text == registered["alice"] else f"answer differs: {a.text}",
            body={**alice, "name": "Mallory", "password": self.password + "-mallory"},
        )
        await self.check(
            "the taken email's account is unchanged (its new password: 401)",
            "POST",
            "/api/auth/login",
            401,
            body={"email": alice["email"], "password": self.password + "-mallory"},
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
                self.ids[who] = (answer.json().get("user") or {}).get("userId", "")
        if self.admin:
            email, password = self.admin
            answer = await self.check(
                "admin login (200, role admin)",
                "POST",
                "/api/auth/login",
                200,
                lambda a: None if _role(a) == "admin" else f"role is {_role(a)}",
                body={"email": email, "password": password},
            )
            if answer is not None and isinstance(answer.json(), dict):
                self.tokens["admin"] = answer.json().get("token", "")
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
            token=self.tokens.get("alice"),
        )
        await self.check("verify without a session (401)", "GET", "/api/auth/verify", 401)

    async def users_checks(self) -> None:
        token = self.tokens.get("alice")
        alice, bob = self.users["alice"], self.users["bob"]
        await self.check(
            "users list: a plain user sees only themselves (200)",
            "GET",
            "/api/users?limit=10",
            200,
            lambda a: (
                None
                if [u.get("email") for u in (a.json() or {}).get("users", [])] == [alice["email"]]
                else f"listed {a.text[:200]}"
            ),
            token=token,
        )
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
            "another user's record (403)",
            "GET",
            f"/api/users/{self.ids.get('bob')}",
            403,
            lambda a: None if bob["email"] not in a.text else "it names their email",
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
        if self.admin:
            await self.check(
                "admin lists users (200, both test users)",
                "GET",
                "/api/users?limit=100",
                200,
                lambda a: (
                    None
                    if {alice["email"], bob["email"]}
                    <= {u.get("email") for u in (a.json() or {}).get("users", [])}
                    else "a test user is missing (or on a later page)"
                ),
                token=self.tokens.get("admin"),
            )

    async def products_checks(self) -> None:
        token = self.tokens.get("alice")
        listed = await self.check(
            "products list (200)",
            "GET",
            "/api/products",
            200,
            lambda a: None if isinstance(a.json(), list) else "not a list",
        )
        widget = {"name": "x", "price": "1.00", "stock": 1}
        await self.check(
            "create product without a session (401)", "POST", "/api/products", 401, body=widget
        )
        await self.check(
            "create product as a plain user (403)",
            "POST",
            "/api/products",
            403,
            body=widget,
            token=token,
        )
        if not self.admin:  # order from a product that is there (the seed's sample)
            products = listed.json() if listed is not None else None
            stocked = [p for p in products or [] if isinstance(p, dict) and p.get("stock", 0) >= 3]
            if stocked:
                self.product_id, self.stock = stocked[0]["id"], stocked[0]["stock"]
            return
        created = await self.check(
            "admin creates a product (201)",
            "POST",
            "/api/products",
            201,
            token=self.tokens.get("admin"),
            body={
                "name": f"test-api widget {secrets.token_hex(3)}",
                "description": "from msctl",
                "price": "12.50",
                "stock": 3,
            },
        )
        if created is not None and isinstance(created.json(), dict):
            self.product_id, self.stock = created.json().get("id"), 3
            self.product_created = True
        await self.check(
            "change the product as a plain user (403)",
            "PUT",
            f"/api/products/{self.product_id}",
            403,
            body={"stock": 1000},
            token=token,
        )

    async def orders_checks(self) -> None:
        token, path = self.tokens.get("alice"), f"/api/products/{self.product_id}"
        await self.check(
            "get product (200)",
            "GET",
            path,
            200,
            lambda a: None if a.json() and a.json().get("stock") == self.stock else "wrong stock",
        )
        placed = await self.check(
            "order 2 (201)",
            "POST",
            "/api/orders",
            201,
            token=token,
            body={"productId": self.product_id, "quantity": 2},
        )
        if placed is not None and isinstance(placed.json(), dict) and placed.json().get("id"):
            self.orders.append(placed.json()["id"])
        await self.check(
            f"stock decremented to {self.stock - 2}", "GET", path, 200, self.stock_is(-2)
        )
        await self.check(
            "over-order (409)",
            "POST",
            "/api/orders",
            409,
            token=token,
            body={"productId": self.product_id, "quantity": self.stock - 1},
        )
        await self.check(
            "own orders (200)",
            "GET",
            "/api/orders",
            200,
            token=token,
            verify=lambda a: (
                None
                if [o.get("id") for o in a.json() or []] == self.orders
                else f"listed {a.text[:200]}"
            ),
        )
        order = f"/api/orders/{self.orders[0] if self.orders else 0}"
        bob = self.tokens.get("bob")
        await self.check("another user's order (404)", "GET", order, 404, token=bob)
        await self.check("cancel another user's order (404)", "DELETE", order, 404, token=bob)
        if self.orders:
            await self.check("cancel own order (204)", "DELETE", order, 204, token=token)
            self.orders.pop(0)
            await self.check(f"stock back to {self.stock}", "GET", path, 200, self.stock_is(0))

    def stock_is(self, change: int) -> Callable[[Answer], str | None]:
        def verify(a: Answer) -> str | None:
            stock = (a.json() or {}).get("stock")
            return None if stock == self.stock + change else f"stock is {stock}"

        return verify

    async def notifications_and_cors(self) -> None:
        token = self.tokens.get("alice")
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
            "a NUL in a name is a 400, not a 500",
            "PUT",
            f"/api/users/{self.ids.get('alice')}",
            400,
            lambda a: None if "name" in a.text else f"the error names no field: {a.text}",
            body={"name": "bad\u0000name"},
            token=token,
        )
        if self.admin:
            await self.check(
                "a NUL in a product name is a 400, not a 500",
                "POST",
                "/api/products",
                400,
                lambda a: None if "name" in a.text else f"the error names no field: {a.text}",
                body={"name": "bad\u0000name", "price": "1.00"},
                token=self.tokens.get("admin"),
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

    # ------------------------------------------------------------ clean up

    async def remove_what_it_created(self) -> None:
        """Orders cancelled, the product, the notifications and the test users deleted (each
        user by itself, as any user can), the admin's session ended; then look that they are
        gone."""
        started, problems = time.perf_counter(), []

        async def call(what: str, method: str, path: str, ok: tuple[int, ...], **kwargs):
            try:
                answer, _ = await self.request(method, path, **kwargs)
            except (TimeoutError, aiohttp.ClientError) as exc:
                problems.append(f"{what}: {exc}")
                return None
            if answer.status not in ok:
                problems.append(f"{what}: {answer.status} {answer.text[:100]}")
            return answer

        tokens = {}
        for who, user in self.users.items():  # fresh sessions: the walk ended one
            login = {"email": user["email"], "password": self.password}
            answer = await call(f"login {who}", "POST", "/api/auth/login", (200, 401), body=login)
            if answer is not None and answer.status == 200 and isinstance(answer.json(), dict):
                tokens[who] = answer.json().get("token")
        for order in self.orders:
            path = f"/api/orders/{order}"
            await call(f"cancel order {order}", "DELETE", path, (204,), token=tokens.get("alice"))
        if self.product_created:
            path = f"/api/products/{self.product_id}"
            await call("delete the product", "DELETE", path, (204,), token=self.tokens["admin"])
            await call("the product is gone", "GET", path, (404,))
        for who, token in tokens.items():
            path = "/api/notifications"
            await call(f"delete {who}'s notifications", "DELETE", path, (200,), token=token)
            path = f"/api/users/{self.ids.get(who) or 'unknown'}"
            await call(f"delete {who}", "DELETE", path, (204,), token=token)
            login = {"email": self.users[who]["email"], "password": self.password}
            await call(f"{who} is gone", "POST", "/api/auth/login", (401,), body=login)
        if self.tokens.get("admin"):
            await call(
                "admin logout", "POST", "/api/auth/logout", (200,), token=self.tokens["admin"]
            )
        self.results.append(
            CheckResult(
                "removed what it created",
                not problems,
                (time.perf_counter() - started) * 1000,
                "; ".join(problems),
            )
        )


def _role(answer: Answer) -> str | None:
    body = answer.json()
    return (body.get("user") or {}).get("role") if isinstance(body, dict) else None


async def run_scenario(
    base_url: str, admin: tuple[str, str] | None = None, timeout: float = 30.0
) -> list[CheckResult]:
    """The checks through `base_url`. `admin` is the lab admin's (email, password) (see
    `admin_login`); without it the checks that need an admin are left out and the orders
    use a product that is already there."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        return await Scenario(base_url, session, admin).run()


def admin_login(secretsmanager, secret_arn: str) -> tuple[str, str]:
    """The lab admin's (email, password), from the secret the admin step made (its ARN is
    the step's output `secret_arn`), read with a Secrets Manager client of the target."""
    login = json.loads(secretsmanager.get_secret_value(SecretId=secret_arn)["SecretString"])
    return login["email"], login["password"]
