"""Products service of the Day 21 lab (seed section 4.2), hardened.

Flask on port 8080 behind the ALB target group ``microservices-products-tg``,
backed by the lab's RDS PostgreSQL. Run it with::

    gunicorn app:app            # gunicorn.conf.py binds 0.0.0.0:8080

Environment: DB_INSTANCE_ID (the RDS instance: its endpoint is asked of RDS, again until
RDS reports it, as the instance may still be being created) or DB_HOST and DB_PORT (5432;
DB_HOST wins), DB_NAME (postgres), and DB_SECRET_ARN (the RDS-managed secret holding the user
and password; AWS_REGION) or DB_USER and DB_PASSWORD; ORIGIN_SECRET_SHA256 (see below);
optional DB_SSLMODE (the task definition sets ``require``), DB_CONNECT_TIMEOUT (3),
DB_POOL_MIN (1), DB_POOL_MAX (10), DB_POOL_TIMEOUT (3), DB_LOCATE_INTERVAL (2: seconds
between two questions to RDS), MAX_BODY_BYTES (65536), LOG_LEVEL (INFO).

``/health`` is liveness: 200 while the process serves, also before the database is there, so
ECS and the ALB keep a task that waits for RDS. ``/ready`` is readiness: 200 only once the
database answers; until then every request that needs it gets a 503. A service configured
from its environment keeps looking for the database in the background, so it is ready soon
after RDS is, without waiting for traffic.

Only API Gateway may call the service: it sends the lab's origin secret in ``X-Lab-Origin``,
and every request but ``/health`` and ``/ready`` (health checks) whose header doesn't hash
to ORIGIN_SECRET_SHA256 gets a 403, so the identity headers below can't be forged by calling
the ALB, or the service, directly. Without ORIGIN_SECRET_SHA256 every such request is
refused, unless ORIGIN_CHECK=off says that nothing needs checking (tests only).

Writes need the ``X-Authorized-User-Id`` header (401 without it) and
``X-Authorized-Role: admin`` (403 otherwise), which API Gateway sets from its
authorizer. Unlike the seed, this service keeps one connection pool per
process, migrates its schema whenever it starts (under any server), validates
every input and never returns exception text to clients.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal, InvalidOperation
from typing import Any

import boto3
import psycopg
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, Response, g, has_request_context, jsonify, request
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout
from werkzeug.exceptions import HTTPException

SERVICE = "products"
USER_HEADER = "X-Authorized-User-Id"
ORIGIN_HEADER = "X-Lab-Origin"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
ROLE_HEADER = "X-Authorized-Role"
ADMIN_ROLE = "admin"
# C0 and C1 control characters (PostgreSQL refuses NUL in text); multi-line text may keep
# tab, newline and carriage return.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_MULTILINE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: pg_advisory_xact_lock key shared by the products and orders services, so
#: their migrations never run at the same time (ascii "msct").
MIGRATION_LOCK_KEY = 0x6D736374
AWS_CLIENT = Config(connect_timeout=3, read_timeout=5, retries={"max_attempts": 2})
WARM_UP_FIRST, WARM_UP_MAX = 1.0, 10.0  # seconds between background attempts (x1.5)
UNCHECKED = ("health", "ready")  # endpoints the health checks call, without the origin header
INT32_MAX = 2**31 - 1
MAX_PRICE = Decimal("99999999.99")  # NUMERIC(10,2)
CENTS = Decimal("0.01")
MAX_DESCRIPTION = 10_000
SAMPLE_PRODUCT = ("Sample Product 1", "This is a sample product", Decimal("29.99"), 100)

MIGRATION = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS products (
    id SERIAL PRIMARY KEY,
    name VARCHAR(255) NOT NULL,
    description TEXT,
    price NUMERIC(10,2) NOT NULL CHECK (price >= 0),
    stock INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""
# The sample product is inserted once per database: deleting it later sticks.
SEED = """
WITH seeded AS (
    INSERT INTO schema_migrations (name) VALUES ('products-sample-data')
    ON CONFLICT (name) DO NOTHING
    RETURNING name
)
INSERT INTO products (name, description, price, stock)
SELECT %s, %s, %s, %s
WHERE EXISTS (SELECT 1 FROM seeded)
  AND NOT EXISTS (SELECT 1 FROM products WHERE name = %s)
"""
PRODUCT_COLUMNS = "id, name, description, price, stock, created_at"

log = logging.getLogger(SERVICE)


# -- logging ---------------------------------------------------------------


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            in_request = has_request_context() and "request_id" in g
            record.request_id = g.request_id if in_request else "-"
        return True


class _OneLineFormatter(logging.Formatter):
    """Keeps each record (tracebacks included) on one line: one CloudWatch event."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def _configure_logging() -> None:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    log.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")
    if not any(isinstance(f, _RequestIdFilter) for f in log.filters):
        log.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    if root.handlers:  # someone (a test runner, an embedding app) already set logging up
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        _OneLineFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("botocore").setLevel(logging.WARNING)  # not a line per secret read


# -- database --------------------------------------------------------------


class DatabaseUnavailable(Exception):
    """The database cannot be reached, found or migrated yet."""


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default


def conninfo_from_env() -> str:
    """libpq connection string built from DB_* variables (see Login for DB_SECRET_ARN)."""
    params = {
        "host": os.environ.get("DB_HOST") or None,
        "port": os.environ.get("DB_PORT") or "5432",
        "dbname": os.environ.get("DB_NAME") or "postgres",
        "user": os.environ.get("DB_USER") or None,
        "password": os.environ.get("DB_PASSWORD") or None,
        "sslmode": os.environ.get("DB_SSLMODE") or None,
    }
    if params["host"] is None and not os.environ.get("DB_INSTANCE_ID"):
        log.warning("neither DB_HOST nor DB_INSTANCE_ID is set; the database will be unreachable")
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def locator_from_env() -> Locator | None:
    """The RDS instance to find, when DB_HOST doesn't say where the database is."""
    instance = os.environ.get("DB_INSTANCE_ID", "").strip()
    if os.environ.get("DB_HOST") or not instance:
        return None
    return Locator(instance, _env_number("DB_LOCATE_INTERVAL", 2))


def describe_instance(instance_id: str) -> tuple[dict[str, str] | None, str]:
    """({"host", "port"} once RDS reports the instance's endpoint, else None; its status)."""
    try:
        client = boto3.session.Session().client(
            "rds", region_name=os.environ.get("AWS_REGION"), config=AWS_CLIENT
        )
        found = client.describe_db_instances(DBInstanceIdentifier=instance_id)["DBInstances"]
    except (BotoCoreError, ClientError) as exc:
        return None, f"not described ({exc})"
    instance = found[0] if found else {}
    endpoint = instance.get("Endpoint") or {}
    status = instance.get("DBInstanceStatus", "not found")
    if not endpoint.get("Address"):  # none while it is being created
        return None, status
    return {"host": endpoint["Address"], "port": str(endpoint.get("Port") or 5432)}, status


class Locator:
    """Where the database is: the endpoint RDS reports for the instance (the task role may
    describe exactly that one). Asked at most once per ``interval`` seconds until RDS has it;
    an instance keeps its endpoint, so it is never asked again after that."""

    def __init__(self, instance_id: str, interval: float) -> None:
        self.instance_id = instance_id
        self.interval = interval
        self._found: dict[str, str] | None = None
        self._status = "not asked yet"
        self._asked = float("-inf")
        self._lock = threading.Lock()

    def params(self) -> dict[str, str]:
        """connect() keywords host and port; DatabaseUnavailable until RDS reports them."""
        with self._lock:
            if self._found is None and time.monotonic() - self._asked >= self.interval:
                self._asked = time.monotonic()
                self._found, self._status = describe_instance(self.instance_id)
                if self._found:
                    log.info("DB instance %s is at %s", self.instance_id, self._found["host"])
            if self._found is None:
                raise DatabaseUnavailable(f"DB instance {self.instance_id}: {self._status}")
            return self._found


class Login:
    """User and password of new connections: the conninfo's, or the JSON username/password
    of the Secrets Manager secret ``secret_arn``. RDS rotates that secret, so it is cached
    and read again (once per connection) when PostgreSQL refuses the password."""

    def __init__(self, secret_arn: str | None) -> None:
        self.secret_arn = secret_arn
        self._cached: dict[str, str] | None = None
        self._lock = threading.Lock()

    def params(self, stale: dict[str, str] | None = None) -> dict[str, str]:
        """connect() keywords; the secret is read again if the cached value is ``stale``."""
        if not self.secret_arn:
            return {}
        with self._lock:
            if self._cached is None or self._cached is stale:
                self._cached = self._read(self.secret_arn)
            return self._cached

    @staticmethod
    def _read(arn: str) -> dict[str, str]:
        try:  # a client per read: reads are rare, and no client crosses a worker fork
            client = boto3.session.Session().client(
                "secretsmanager", region_name=os.environ.get("AWS_REGION"), config=AWS_CLIENT
            )
            secret = json.loads(client.get_secret_value(SecretId=arn)["SecretString"])
            return {"user": secret["username"], "password": secret["password"]}
        except Exception as exc:  # a parse error's text may quote the value: give its type
            why = str(exc) if isinstance(exc, BotoCoreError | ClientError) else type(exc).__name__
            raise psycopg.OperationalError(f"cannot read database secret {arn}: {why}") from None


class LoginConnection(psycopg.Connection[Any]):
    """A connection made with a Login's user and password (the pool's and the migration's)."""

    @classmethod
    def connect(cls, conninfo: str = "", *, login: Login, **kwargs: Any) -> LoginConnection:
        used = login.params()
        try:
            return super().connect(conninfo, **kwargs, **used)
        except psycopg.OperationalError as exc:
            refused = exc.sqlstate == "28P01" or "password authentication failed" in str(exc)
            if not (refused and login.secret_arn):
                raise
        log.warning("database refused the password: reading secret %s again", login.secret_arn)
        return super().connect(conninfo, **kwargs, **login.params(stale=used))


class Database:
    """Connection pool plus an idempotent migration that is retried until it succeeds."""

    def __init__(
        self,
        conninfo: str,
        *,
        connect_timeout: float,
        pool_min: int,
        pool_max: int,
        pool_timeout: float,
        secret_arn: str | None = None,
        locator: Locator | None = None,
    ) -> None:
        self.login = Login(secret_arn)
        self.locator = locator
        self.conninfo = make_conninfo(
            conninfo,
            connect_timeout=max(1, round(connect_timeout)),
            application_name=f"lab-{SERVICE}",
        )
        self.pool_min = pool_min
        self.pool_max = max(pool_min, pool_max)
        self.pool_timeout = pool_timeout
        self.migrated = False
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        self._attempts = 0
        self._closed = threading.Event()

    def located(self) -> str:
        """The conninfo with the host and port RDS reports, when a Locator finds them."""
        return (
            make_conninfo(self.conninfo, **self.locator.params()) if self.locator else self.conninfo
        )

    def migrate(self) -> None:
        """Create the schema; safe to run from many processes at once."""
        with LoginConnection.connect(self.located(), login=self.login) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(MIGRATION)
            conn.execute(SEED, (*SAMPLE_PRODUCT, SAMPLE_PRODUCT[0]))
        self.migrated = True

    def try_migrate(self) -> bool:
        try:
            self.migrate()
        except DatabaseUnavailable as exc:
            log.warning("database not found yet, will retry: %s", exc)
            return False
        except psycopg.Error as exc:
            log.error("database migration failed, will retry on the next request: %s", exc)
            return False
        log.info("database schema is up to date")
        return True

    def start_warm_up(self) -> None:
        """Keep trying to find and migrate the database in the background (RDS may still
        be creating it). Only the schema: the pool opens on the first request, in the
        process that serves it."""

        def run() -> None:
            delay = WARM_UP_FIRST
            while not self._closed.wait(delay):
                with self._lock:
                    if self.migrated:
                        return
                    self._attempts += 1
                    if self.try_migrate():
                        return
                delay = min(delay * 1.5, WARM_UP_MAX)

        threading.Thread(target=run, name=f"{SERVICE}-warm-up", daemon=True).start()

    def ensure_ready(self) -> ConnectionPool:
        pool = self._pool
        if pool is not None:
            return pool
        attempts_seen = self._attempts
        with self._lock:
            if self._pool is None:
                if not self.migrated:
                    if self._attempts != attempts_seen:
                        # Another thread retried while this one waited, and failed:
                        # answer now instead of queueing one more connect timeout.
                        raise DatabaseUnavailable("database is unreachable")
                    self._attempts += 1
                    if not self.try_migrate():
                        raise DatabaseUnavailable("database migration has not succeeded yet")
                # Opened lazily, so a server that forks after importing the app
                # (gunicorn --preload) never shares pool threads across processes.
                pool = ConnectionPool(
                    self.located(),
                    connection_class=LoginConnection,
                    kwargs={"login": self.login},
                    min_size=self.pool_min,
                    max_size=self.pool_max,
                    timeout=self.pool_timeout,
                    check=ConnectionPool.check_connection,
                    name=f"{SERVICE}-pool",
                    open=False,
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside a transaction (commit on success, rollback on error)."""
        pool = self.ensure_ready()
        with pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None


# -- request helpers ----------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error", ""))
        self.status = status
        self.body = body


_REQUEST_ID_JUNK = re.compile(r"[^A-Za-z0-9=;:._\-]")


def _incoming_request_id() -> str:
    for header in ("X-Amzn-Trace-Id", "X-Request-Id"):
        value = _REQUEST_ID_JUNK.sub("", request.headers.get(header, ""))[:200]
        if value:
            return value
    return uuid.uuid4().hex


def _json_object() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise ApiError(400, {"error": "request body is empty; expected a JSON object"})
    try:
        data = json.loads(raw, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        message = f"request body is not valid JSON (line {exc.lineno}, column {exc.colno})"
        raise ApiError(400, {"error": message}) from None
    except (ValueError, RecursionError):
        raise ApiError(400, {"error": "request body is not valid JSON"}) from None
    if not isinstance(data, dict):
        kind = "an array" if isinstance(data, list) else "a JSON scalar"
        raise ApiError(400, {"error": f"request body must be a JSON object, not {kind}"})
    return data


def origin_check() -> Callable[[], None]:
    """The check of ``X-Lab-Origin`` against ORIGIN_SECRET_SHA256 (see the module doc)."""
    expected = os.environ.get("ORIGIN_SECRET_SHA256", "").strip().lower()
    if not expected and os.environ.get("ORIGIN_CHECK") == "off":
        log.warning("ORIGIN_CHECK=off: requests are not checked for the origin secret")
        return lambda: None
    if not SHA256_HEX.fullmatch(expected):
        log.error("ORIGIN_SECRET_SHA256 is unset or no SHA-256: refusing all but /health")
        expected = ""

    def check() -> None:
        given = request.headers.get(ORIGIN_HEADER, "").encode("latin-1", "replace")
        digest = hashlib.sha256(given).hexdigest()
        if not (expected and hmac.compare_digest(digest, expected)):
            raise ApiError(403, {"error": "forbidden"})

    return check


def _require_user() -> str:
    user = request.headers.get(USER_HEADER, "").strip()
    if not user or len(user) > 255 or not user.isprintable():
        raise ApiError(401, {"error": "authentication required"})
    return user


def _require_admin() -> str:
    user = _require_user()
    if request.headers.get(ROLE_HEADER, "").strip() != ADMIN_ROLE:
        raise ApiError(403, {"error": "the admin role is required to change products"})
    return user


# -- validation ---------------------------------------------------------------


def text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why a text can't be stored (lone surrogates, control characters), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text"
    if (CONTROL_MULTILINE if multiline else CONTROL).search(value):
        return "must not contain control characters" + (
            " other than tab and line breaks" if multiline else ""
        )
    return None


_DECIMAL_STRING = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def _parse_price(value: Any) -> tuple[Decimal | None, str | None]:
    expected = "must be a number >= 0 with at most 2 decimal places"
    if isinstance(value, bool) or value is None:
        return None, expected
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 32 or not _DECIMAL_STRING.fullmatch(text):
            return None, expected
        number = Decimal(text)
    elif isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(str(value))
    else:
        return None, expected
    if not number.is_finite():
        return None, "must be a finite number"
    if number < 0:
        return None, "must be >= 0"
    if number > MAX_PRICE:
        return None, f"must be at most {MAX_PRICE}"
    try:
        rounded = number.quantize(CENTS)
    except InvalidOperation:
        return None, expected
    if rounded != number:
        return None, "must have at most 2 decimal places"
    return rounded, None


def validate_product(data: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Return the column values to write, or raise ApiError naming every bad field."""
    values: dict[str, Any] = {}
    errors: dict[str, str] = {}

    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not name.strip():
            errors["name"] = "must be a non-empty string"
        elif problem := text_problem(name):
            errors["name"] = problem
        elif len(name.strip()) > 255:
            errors["name"] = "must be at most 255 characters"
        else:
            values["name"] = name.strip()
    elif not partial:
        errors["name"] = "is required"

    if "description" in data:
        description = data["description"]
        if description is not None and not isinstance(description, str):
            errors["description"] = "must be a string or null"
        elif description is not None and (problem := text_problem(description, multiline=True)):
            errors["description"] = problem
        elif description is not None and len(description) > MAX_DESCRIPTION:
            errors["description"] = f"must be at most {MAX_DESCRIPTION} characters"
        else:
            values["description"] = description
    elif not partial:
        values["description"] = None

    if "price" in data:
        price, problem = _parse_price(data["price"])
        if problem:
            errors["price"] = problem
        else:
            values["price"] = price
    elif not partial:
        errors["price"] = "is required"

    if "stock" in data:
        stock = data["stock"]
        if isinstance(stock, bool) or not isinstance(stock, int):
            errors["stock"] = "must be an integer"
        elif not 0 <= stock <= INT32_MAX:
            errors["stock"] = f"must be between 0 and {INT32_MAX}"
        else:
            values["stock"] = stock
    elif not partial:
        values["stock"] = 0

    if errors:
        raise ApiError(400, {"error": "invalid product", "fields": errors})
    if not values:
        fields = ["name", "description", "price", "stock"]
        raise ApiError(400, {"error": "nothing to update", "allowed": fields})
    return values


def product_json(row: tuple[Any, ...]) -> dict[str, Any]:
    product_id, name, description, price, stock, created_at = row
    return {
        "id": product_id,
        "name": name,
        "description": description,
        "price": f"{price:.2f}",
        "stock": stock,
        "created_at": created_at.isoformat(),
    }


def _not_found() -> ApiError:
    return ApiError(404, {"error": "product not found"})


# -- the app --------------------------------------------------------------------


def create_app(
    dsn: str | None = None,
    *,
    connect_timeout: float | None = None,
    pool_min: int | None = None,
    pool_max: int | None = None,
    pool_timeout: float | None = None,
) -> Flask:
    """Build the app. ``dsn=None`` reads DB_* from the environment.

    The schema is migrated here; if the database is unreachable (or RDS hasn't made it
    yet) the app still starts: /health answers 200, /ready and the routes that need the
    database 503, and the migration is retried on each request and, for an app configured
    from the environment, in the background.
    """
    _configure_logging()
    db = Database(
        conninfo_from_env() if dsn is None else dsn,
        connect_timeout=connect_timeout or _env_number("DB_CONNECT_TIMEOUT", 3),
        pool_min=pool_min if pool_min is not None else int(_env_number("DB_POOL_MIN", 1)),
        pool_max=pool_max if pool_max is not None else int(_env_number("DB_POOL_MAX", 10)),
        pool_timeout=pool_timeout or _env_number("DB_POOL_TIMEOUT", 3),
        secret_arn=os.environ.get("DB_SECRET_ARN") or None,
        locator=locator_from_env() if dsn is None else None,
    )
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = int(_env_number("MAX_BODY_BYTES", 64 * 1024))
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.url_map.strict_slashes = False
    app.extensions["db"] = db
    if not db.try_migrate() and dsn is None:
        db.start_warm_up()
    check_origin = origin_check()

    @app.before_request
    def _start() -> None:
        g.request_id = _incoming_request_id()
        if request.endpoint not in UNCHECKED:
            check_origin()

    @app.after_request
    def _finish(response: Response) -> Response:
        if "request_id" in g:
            response.headers["X-Request-Id"] = g.request_id
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return jsonify(exc.body), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = exc.get_response()
        response.set_data(json.dumps({"error": (exc.name or "error").lower()}))
        response.content_type = "application/json"
        return response

    @app.errorhandler(DatabaseUnavailable)
    @app.errorhandler(PoolTimeout)
    @app.errorhandler(psycopg.OperationalError)
    def _db_unavailable(exc: Exception) -> tuple[Response, int]:
        log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
        body = {"error": "Service temporarily unavailable", "requestId": g.get("request_id")}
        return jsonify(body), 503

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error in %s %s", request.method, request.path)
        body = {"error": "Internal server error", "requestId": g.get("request_id")}
        return jsonify(body), 500

    @app.get("/health")
    def health() -> tuple[Response, int]:
        """Liveness (the container's and the target group's health checks): the process
        serves. Never the database: a task waiting for RDS must not be replaced."""
        return jsonify({"status": "healthy", "service": SERVICE}), 200

    @app.get("/ready")
    def ready() -> tuple[Response, int]:
        """Readiness: 200 only once the database answers."""
        try:
            with db.connection() as conn:
                conn.execute("SELECT 1")
        except Exception as exc:  # any failure means "not ready", never a 500
            log.warning("not ready: %s: %s", type(exc).__name__, exc)
            return jsonify({"status": "not ready", "service": SERVICE}), 503
        return jsonify({"status": "ready", "service": SERVICE}), 200

    @app.get("/products")
    def list_products() -> Response:
        with db.connection() as conn:
            rows = conn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products ORDER BY created_at DESC, id DESC"
            ).fetchall()
        return jsonify([product_json(row) for row in rows])

    @app.get("/products/<int:product_id>")
    def get_product(product_id: int) -> Response:
        if product_id > INT32_MAX:
            raise _not_found()
        with db.connection() as conn:
            row = conn.execute(
                f"SELECT {PRODUCT_COLUMNS} FROM products WHERE id = %s", (product_id,)
            ).fetchone()
        if row is None:
            raise _not_found()
        return jsonify(product_json(row))

    @app.post("/products")
    def create_product() -> tuple[Response, int]:
        user = _require_admin()
        values = validate_product(_json_object(), partial=False)
        with db.connection() as conn:
            row = conn.execute(
                "INSERT INTO products (name, description, price, stock) "
                f"VALUES (%s, %s, %s, %s) RETURNING {PRODUCT_COLUMNS}",
                (values["name"], values["description"], values["price"], values["stock"]),
            ).fetchone()
        assert row is not None
        log.info("product %s created by %s", row[0], user)
        return jsonify(product_json(row)), 201

    @app.put("/products/<int:product_id>")
    def update_product(product_id: int) -> Response:
        user = _require_admin()
        values = validate_product(_json_object(), partial=True)
        if product_id > INT32_MAX:
            raise _not_found()
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(column), sql.Placeholder())
            for column in values
        )
        query = sql.SQL("UPDATE products SET {} WHERE id = {} RETURNING {}").format(
            assignments, sql.Placeholder(), sql.SQL(PRODUCT_COLUMNS)
        )
        with db.connection() as conn:
            row = conn.execute(query, (*values.values(), product_id)).fetchone()
        if row is None:
            raise _not_found()
        log.info("product %s updated by %s", product_id, user)
        return jsonify(product_json(row))

    @app.delete("/products/<int:product_id>")
    def delete_product(product_id: int) -> tuple[str, int]:
        user = _require_admin()
        if product_id > INT32_MAX:
            raise _not_found()
        try:
            with db.connection() as conn:
                row = conn.execute(
                    "DELETE FROM products WHERE id = %s RETURNING id", (product_id,)
                ).fetchone()
        except pg_errors.ForeignKeyViolation:
            raise ApiError(
                409, {"error": "product has orders and cannot be deleted", "productId": product_id}
            ) from None
        if row is None:
            raise _not_found()
        log.info("product %s deleted by %s", product_id, user)
        return "", 204

    return app


_app: Flask | None = None
_app_lock = threading.Lock()


def __getattr__(name: str) -> Flask:
    """``app`` is built on first access, so importing this module has no side effects."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with _app_lock:
        if _app is None:
            _app = create_app()
    return _app


if __name__ == "__main__":
    create_app().run(host="0.0.0.0", port=int(os.environ.get("PORT", "8080")))
