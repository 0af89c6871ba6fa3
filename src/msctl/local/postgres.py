"""A private, throwaway PostgreSQL server built from the machine's own binaries.

Used by the lab service tests today and by msctl's local target: it stands in
for the lab's RDS instance (``microservices-db``, PostgreSQL 15) without Docker
and without touching any system cluster.

    with LocalPostgres(Path("/var/tmp/msctl-pg"), port=55432, password=pw) as pg:
        dsn = pg.dsn()

Every cluster listens on 127.0.0.1 only and keeps its unix socket inside its own
data directory. PostgreSQL refuses to run as root, so when msctl runs as root
(CI does) the server binaries are run as the ``postgres`` system user through
``runuser`` and the data directory is handed to that user.

The password is never logged, printed or passed on a command line: initdb reads
it from a 0600 file that is deleted as soon as initdb returns.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

__all__ = [
    "LocalPostgres",
    "LocalPostgresError",
    "PostgresNotInstalled",
    "find_binaries",
]

log = logging.getLogger(__name__)

#: System account the server runs as when msctl itself runs as root.
SYSTEM_USER = "postgres"

_REQUIRED_BINARIES = ("initdb", "pg_ctl", "postgres")
_DEBIAN_BIN_GLOB = "/usr/lib/postgresql/*/bin"
#: sun_path is 108 bytes on Linux (104 on macOS); keep a margin.
_MAX_SOCKET_PATH = 100
_PG_ENV_VARS = (
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGOPTIONS",
)

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH "
    f"nor under {_DEBIAN_BIN_GLOB}. Install them: "
    "`sudo apt-get install postgresql` on Debian/Ubuntu, "
    "`brew install postgresql` on macOS (then put its bin directory on PATH)."
)


class PostgresNotInstalled(Exception):
    """No PostgreSQL server binaries on this machine; the message says how to install them."""

    def __init__(self, message: str = INSTALL_HINT) -> None:
        super().__init__(message)


class LocalPostgresError(RuntimeError):
    """A PostgreSQL command failed, or the data directory cannot be used."""


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in _REQUIRED_BINARIES)


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name)) or (0,)


def find_binaries() -> Path:
    """Return the directory holding initdb, pg_ctl and postgres.

    First the directory of the ``pg_ctl`` found on PATH (its real directory
    first when it is a symlink), else the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian/Ubuntu layout).
    """
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        link = Path(on_path)
        candidates += [link.resolve().parent, link.parent]
    debian = [Path(p) for p in Path("/").glob(_DEBIAN_BIN_GLOB.lstrip("/"))]
    candidates += sorted(debian, key=_version_key, reverse=True)
    for candidate in candidates:
        if _has_server_binaries(candidate):
            return candidate
    raise PostgresNotInstalled()


def _quote_conninfo(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _run_as_system_user() -> bool:
    return os.geteuid() == 0


class LocalPostgres:
    """One PostgreSQL cluster in ``data_dir``, served on ``127.0.0.1:port``.

    ``password`` protects TCP connections (scram-sha-256); without it TCP
    connections are trusted. The unix socket lives in ``data_dir/sockets``, so
    only the cluster's owner can reach it, and it is trusted.

    ``ephemeral=True`` trades crash safety for speed (no fsync): for test and
    scratch clusters only.
    """

    def __init__(
        self,
        data_dir: Path,
        port: int,
        superuser: str = "postgres",
        password: str | None = None,
        *,
        ephemeral: bool = False,
    ) -> None:
        if not 1 <= int(port) <= 65535:
            raise ValueError(f"port out of range: {port}")
        if password is not None and (not password or any(c in password for c in "\r\n\0")):
            raise ValueError("password must be non-empty and contain no line breaks or NUL")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", superuser):
            raise ValueError(f"invalid superuser name: {superuser!r}")
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.port = int(port)
        self.superuser = superuser
        self._password = password
        self.ephemeral = ephemeral
        self._bin_dir: Path | None = None

    def __repr__(self) -> str:  # never shows the password
        return (
            f"LocalPostgres(data_dir={str(self.data_dir)!r}, port={self.port}, "
            f"superuser={self.superuser!r}, password={'***' if self._password else None})"
        )

    # -- locations -------------------------------------------------------

    @staticmethod
    def find_binaries() -> Path:
        return find_binaries()

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_binaries()
        return self._bin_dir

    @property
    def socket_dir(self) -> Path:
        return self.data_dir / "sockets"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgresql.log"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    # -- connection details ---------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq key/value connection string for TCP on 127.0.0.1."""
        parts = {
            "host": "127.0.0.1",
            "port": str(self.port),
            "dbname": dbname,
            "user": self.superuser,
        }
        if self._password is not None:
            parts["password"] = self._password
        return " ".join(f"{key}={_quote_conninfo(value)}" for key, value in parts.items())

    def service_env(self, dbname: str = "postgres") -> dict[str, str]:
        """The DB_* variables the lab's products/orders services read."""
        env = {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(self.port),
            "DB_NAME": dbname,
            "DB_USER": self.superuser,
        }
        if self._password is not None:
            env["DB_PASSWORD"] = self._password
        return env

    # -- lifecycle ----------------------------------------------------------

    def init(self) -> bool:
        """Create the cluster unless ``data_dir`` already holds one. True if created."""
        if self.initialized:
            return False
        bin_dir = self.bin_dir
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        leftovers = sorted(p.name for p in self.data_dir.iterdir())
        if leftovers:
            raise LocalPostgresError(
                f"{self.data_dir} is not empty and holds no PostgreSQL cluster "
                f"(found {', '.join(leftovers[:5])}); use an empty or missing directory"
            )
        owner = self._prepare_ownership(self.data_dir)
        args = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            "--encoding=UTF8",
            "--locale=C",
        ]
        if self.ephemeral:
            args.append("--no-sync")
        with self._pwfile(owner) as pwfile:
            if pwfile is None:
                args.append("--auth=trust")
            else:
                args += [
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                ]
            self._run(args, what="initdb")
        log.info("initialized PostgreSQL cluster in %s", self.data_dir)
        return True

    def start(self) -> None:
        """Start the server and wait until it accepts connections. No-op if running."""
        if not self.initialized:
            raise LocalPostgresError(f"no cluster in {self.data_dir}; call init() first")
        if self.is_running():
            return
        owner = self._prepare_ownership(self.data_dir)
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if owner is not None:
            os.chown(self.socket_dir, owner.pw_uid, owner.pw_gid)
        socket_path = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket_path)) > _MAX_SOCKET_PATH:
            raise LocalPostgresError(
                f"unix socket path {socket_path} is too long for the OS; "
                "use a shorter data directory path"
            )
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self.socket_dir))}",
            "-c listen_addresses=127.0.0.1",
        ]
        if self.ephemeral:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        args = [
            str(self.bin_dir / "pg_ctl"),
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.logfile),
            "-o",
            " ".join(options),
        ]
        try:
            self._run(args, what="pg_ctl start")
        except LocalPostgresError as exc:
            raise LocalPostgresError(
                f"{exc}\n--- {self.logfile} (tail) ---\n{self._log_tail()}"
            ) from None
        log.info("PostgreSQL running on 127.0.0.1:%d (data %s)", self.port, self.data_dir)

    def stop(self) -> None:
        """Stop the server (fast shutdown). No-op if it is not running."""
        if not self.is_running():
            return
        args = [str(self.bin_dir / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast"]
        self._run([*args, "-D", str(self.data_dir)], what="pg_ctl stop")
        log.info("PostgreSQL on port %d stopped", self.port)

    def is_running(self) -> bool:
        if not self.initialized:
            return False
        args = [str(self.bin_dir / "pg_ctl"), "status", "-D", str(self.data_dir)]
        return self._run(args, what="pg_ctl status", check=False).returncode == 0

    def create_database(self, name: str) -> bool:
        """Create database ``name`` unless it exists (over the private socket). True if created."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"invalid database name: {name!r}")
        exists = self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'")
        if exists.strip() == "1":
            return False
        self._psql(f'CREATE DATABASE "{name}"')
        return True

    def drop_database(self, name: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", name):
            raise ValueError(f"invalid database name: {name!r}")
        self._psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> LocalPostgres:
        self.init()
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def _psql(self, sql: str) -> str:
        if not self.is_running():
            raise LocalPostgresError("PostgreSQL is not running")
        psql = self.bin_dir / "psql"
        if not os.access(psql, os.X_OK):
            psql = Path(shutil.which("psql") or psql)
        args = [
            str(psql),
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            str(self.socket_dir),
            "-p",
            str(self.port),
            "-U",
            self.superuser,
            "-d",
            "postgres",
            "-c",
            sql,
        ]
        return self._run(args, what="psql").stdout

    def _system_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            pass
        useradd = shutil.which("useradd")
        if useradd is None:
            raise LocalPostgresError(
                f"running as root, PostgreSQL must run as the '{SYSTEM_USER}' system user, "
                "which does not exist and cannot be created (no useradd)"
            )
        log.info("creating the '%s' system user to run PostgreSQL as", SYSTEM_USER)
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SYSTEM_USER)

    def _prepare_ownership(self, data_dir: Path) -> pwd.struct_passwd | None:
        """As root: give data_dir to the system user and check it can reach it."""
        if not _run_as_system_user():
            return None
        owner = self._system_user()
        for parent in reversed(data_dir.parents):
            if not _can_traverse(parent, owner):
                mode = stat.filemode(parent.stat().st_mode)
                raise LocalPostgresError(
                    f"{parent} ({mode}) is not traversable by the '{owner.pw_name}' system user. "
                    "PostgreSQL refuses to run as root, so msctl runs it as that user; put the "
                    f"data directory somewhere it can reach (e.g. under /var/tmp) or run "
                    f"`chmod o+x {parent}`."
                )
        st = data_dir.stat()
        if (st.st_uid, st.st_gid) != (owner.pw_uid, owner.pw_gid):
            for path in [data_dir, *data_dir.rglob("*")]:
                os.lchown(path, owner.pw_uid, owner.pw_gid)
        return owner

    @contextlib.contextmanager
    def _pwfile(self, owner: pwd.struct_passwd | None) -> Iterator[Path | None]:
        """A 0600 file holding the password, readable by initdb, gone on exit."""
        if self._password is None:
            yield None
            return
        holder = Path(tempfile.mkdtemp(prefix=".msctl-pgpw-", dir=self.data_dir.parent))
        try:
            if owner is not None:
                os.chown(holder, owner.pw_uid, owner.pw_gid)
            path = holder / "pwfile"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self._password + "\n")
            if owner is not None:
                os.chown(path, owner.pw_uid, owner.pw_gid)
            yield path
        finally:
            shutil.rmtree(holder, ignore_errors=True)

    def _run(
        self, args: list[str], *, what: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if _run_as_system_user():
            self._system_user()
            runuser = shutil.which("runuser")
            if runuser is None:
                raise LocalPostgresError(
                    "running as root needs `runuser` (util-linux) to start PostgreSQL "
                    f"as the '{SYSTEM_USER}' user"
                )
            command = [runuser, "-u", SYSTEM_USER, "--", *command]
        env = {k: v for k, v in os.environ.items() if k not in _PG_ENV_VARS}
        env.setdefault("LC_ALL", "C")
        result = subprocess.run(
            command,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise LocalPostgresError(f"{what} failed (exit {result.returncode}): {detail}")
        return result

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.logfile.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    st = path.stat()
    if user.pw_uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
