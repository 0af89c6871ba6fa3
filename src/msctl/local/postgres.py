"""A private, throwaway PostgreSQL server built from the machine's own binaries.

Used by the lab service tests today and by msctl's local target: it stands in
for the lab's RDS instance (``microservices-db``, PostgreSQL 15) without Docker
and without touching any system cluster.

    with LocalPostgres(Path("/var/tmp/msctl-pg"), port=55432, password=pw) as pg:
        dsn = pg.dsn()

A cluster listens on 127.0.0.1, or with ``tcp=False`` (msctl's local target) on no
network address at all: only its unix socket, which it keeps in a 0700 directory
inside its own data directory (or, when that path is too long for a socket, in a
private one under /tmp). PostgreSQL refuses to run as root, so when msctl runs as
root (CI does) the server binaries are run as the ``postgres`` system user through
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
import sys
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
#: sun_path is 108 bytes on Linux (104 on macOS), the NUL included.
_MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
#: Where a socket goes whose path under the data directory would be too long: short, and
#: traversable by the ``postgres`` user (TMPDIR may be neither).
_SHORT_SOCKET_PARENT = "/tmp"
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
    connections are trusted. The unix socket lives in ``socket_dir``, so only the
    cluster's owner (and root) can reach it, and it is trusted.

    ``tcp=False`` serves the unix socket only (``dsn()`` and ``service_env()``
    name its directory as the host): no other local user can connect, whatever
    password they know.

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
        tcp: bool = True,
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
        self.tcp = tcp
        self._bin_dir: Path | None = None
        self._socket_dir: Path | None = None  # where start() put it

    def __repr__(self) -> str:  # never shows the password
        return (
            f"LocalPostgres(data_dir={str(self.data_dir)!r}, port={self.port}, "
            f"superuser={self.superuser!r}, password={'***' if self._password else None}, "
            f"tcp={self.tcp})"
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
        """The directory of the unix socket: ``data_dir/sockets``, or the short one that
        start() chose instead (a running server's postmaster.pid names it)."""
        return self._socket_dir or self._recorded_socket_dir() or self.data_dir / "sockets"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "postgresql.log"

    @property
    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    # -- connection details ---------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq key/value connection string: TCP on 127.0.0.1, else the unix socket."""
        parts = {
            "host": self._host,
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
            "DB_HOST": self._host,
            "DB_PORT": str(self.port),
            "DB_NAME": dbname,
            "DB_USER": self.superuser,
        }
        if self._password is not None:
            env["DB_PASSWORD"] = self._password
        return env

    @property
    def _host(self) -> str:
        return "127.0.0.1" if self.tcp else str(self.socket_dir)

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
            host_auth = "scram-sha-256" if pwfile else "trust"
            args += ["--auth-local=trust", f"--auth-host={host_auth if self.tcp else 'reject'}"]
            if pwfile is not None:
                args.append(f"--pwfile={pwfile}")
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
        self._socket_dir = self._make_socket_dir(owner)
        options = [
            f"-p {self.port}",
            f"-k {shlex.quote(str(self._socket_dir))}",
            "-c unix_socket_permissions=0700",
            f"-c listen_addresses={'127.0.0.1' if self.tcp else shlex.quote('')}",
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
        where = f"127.0.0.1:{self.port}" if self.tcp else f"its socket in {self._socket_dir}"
        log.info("PostgreSQL running on %s (data %s)", where, self.data_dir)

    def stop(self) -> None:
        """Stop the server (fast shutdown). No-op if it is not running."""
        if not self.is_running():
            return
        socket_dir = self.socket_dir
        args = [str(self.bin_dir / "pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast"]
        self._run([*args, "-D", str(self.data_dir)], what="pg_ctl stop")
        if socket_dir.parent == Path(_SHORT_SOCKET_PARENT):  # made by start(): its own
            shutil.rmtree(socket_dir, ignore_errors=True)
        self._socket_dir = None
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

    def _make_socket_dir(self, owner: pwd.struct_passwd | None) -> Path:
        """A 0700 directory of the server's user for its socket: ``data_dir/sockets``, or a
        fresh one under /tmp when that path would be too long for a unix socket."""
        name = f".s.PGSQL.{self.port}"
        directory = self.data_dir / "sockets"
        if _fits(directory / name):
            directory.mkdir(mode=0o700, exist_ok=True)
        else:
            directory = Path(tempfile.mkdtemp(prefix="msctl-pg-", dir=_SHORT_SOCKET_PARENT))
            if not _fits(directory / name):
                shutil.rmtree(directory, ignore_errors=True)
                raise LocalPostgresError(f"no socket path short enough for {self.data_dir}")
            log.info("socket path under %s too long: using %s", self.data_dir, directory)
        os.chmod(directory, 0o700)
        if owner is not None:
            os.chown(directory, owner.pw_uid, owner.pw_gid)
        return directory

    def _recorded_socket_dir(self) -> Path | None:
        """The socket directory postmaster.pid names (its 5th line), if the file is there."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return None
        return Path(lines[4]) if len(lines) > 4 and lines[4].startswith("/") else None

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


def _fits(socket_path: Path) -> bool:
    return len(os.fsencode(socket_path)) <= _MAX_SOCKET_PATH


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    st = path.stat()
    if user.pw_uid == st.st_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)
