"""msctl.local.postgres.LocalPostgres: lifecycle, idempotency, secrecy of the password."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

import psycopg
import pytest

from msctl.local import postgres as local_pg
from msctl.local.postgres import LocalPostgres, LocalPostgresError, PostgresNotInstalled


def files_containing(root: Path, needle: bytes) -> list[Path]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
            hits.append(path)
    return hits


def test_lifecycle_is_idempotent_and_keeps_the_password_secret(
    server_dir: Path, unused_port: int, pg_bin: Path
) -> None:
    password = secrets.token_urlsafe(24)
    data_dir = server_dir / "data"
    server = LocalPostgres(data_dir, unused_port, password=password, ephemeral=True)
    assert password not in repr(server)
    assert not server.is_running()
    server.stop()  # stopping a server that never ran is a no-op

    assert server.init() is True
    assert server.init() is False
    server.start()
    server.start()
    try:
        assert server.is_running()
        assert server.socket_dir.parent == data_dir
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT current_setting('listen_addresses')").fetchone() == (
                "127.0.0.1",
            )
            assert conn.execute("SHOW port").fetchone() == (str(unused_port),)
        wrong = server.dsn().replace(password, "not-the-password")
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(wrong, connect_timeout=5).close()

        assert server.create_database("scratch") is True
        assert server.create_database("scratch") is False
        with psycopg.connect(server.dsn("scratch")) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("scratch",)
        assert server.service_env("scratch") == {
            "DB_HOST": "127.0.0.1",
            "DB_PORT": str(unused_port),
            "DB_NAME": "scratch",
            "DB_USER": "postgres",
            "DB_PASSWORD": password,
        }
    finally:
        server.stop()
    assert not server.is_running()
    server.stop()

    # The pwfile is gone (only the data dir is left beside it), and the
    # plaintext password is in no file: the log included, and the auth
    # catalog only holds a SCRAM verifier.
    assert sorted(p.name for p in server_dir.iterdir()) == ["data"]
    assert server.logfile.is_file()
    assert password.encode() not in server.logfile.read_bytes()
    assert files_containing(data_dir, password.encode()) == []

    # A stopped cluster starts again from the same data directory.
    with LocalPostgres(data_dir, unused_port, password=password, ephemeral=True) as again:
        assert again.is_running()
        with psycopg.connect(again.dsn("scratch")) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not again.is_running()


def test_trust_auth_without_password(server_dir: Path, unused_port: int, pg_bin: Path) -> None:
    with LocalPostgres(server_dir / "data", unused_port, ephemeral=True) as server:
        assert "password" not in server.dsn()
        assert "DB_PASSWORD" not in server.service_env()
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def test_refuses_a_non_empty_foreign_directory(server_dir: Path, unused_port: int) -> None:
    data_dir = server_dir / "data"
    data_dir.mkdir()
    (data_dir / "stray.txt").write_text("not a cluster")
    with pytest.raises(LocalPostgresError, match="not empty"):
        LocalPostgres(data_dir, unused_port).init()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as the postgres user")
def test_root_needs_a_traversable_parent(server_dir: Path, unused_port: int) -> None:
    private = server_dir / "private"
    private.mkdir(mode=0o700)
    with pytest.raises(LocalPostgresError, match="not traversable by the 'postgres'"):
        LocalPostgres(private / "data", unused_port).init()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data dir to postgres")
def test_root_hands_the_data_dir_to_postgres(server_dir: Path, unused_port: int) -> None:
    import pwd

    server = LocalPostgres(server_dir / "data", unused_port, ephemeral=True)
    server.init()
    owner = pwd.getpwnam("postgres")
    st = (server_dir / "data").stat()
    assert st.st_uid == owner.pw_uid
    assert stat.S_IMODE(st.st_mode) == 0o700


def test_find_binaries_falls_back_to_debian_layout(
    monkeypatch: pytest.MonkeyPatch, pg_bin: Path
) -> None:
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("no Debian-layout PostgreSQL on this machine")
    monkeypatch.setenv("PATH", "/nonexistent")
    found = local_pg.find_binaries()
    assert found.parent.parent == Path("/usr/lib/postgresql")
    assert (found / "initdb").exists()


def test_missing_binaries_explain_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(local_pg, "_DEBIAN_BIN_GLOB", str(tmp_path / "none" / "*" / "bin"))
    with pytest.raises(PostgresNotInstalled) as excinfo:
        local_pg.find_binaries()
    message = str(excinfo.value)
    assert "apt-get install postgresql" in message
    assert "brew install postgresql" in message
    assert isinstance(excinfo.value, Exception)


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        LocalPostgres(tmp_path, 0)
    with pytest.raises(ValueError):
        LocalPostgres(tmp_path, 5432, password="two\nlines")
    with pytest.raises(ValueError):
        LocalPostgres(tmp_path, 5432, superuser="bad name")


def test_dsn_quotes_awkward_passwords(tmp_path: Path) -> None:
    from psycopg.conninfo import conninfo_to_dict

    awkward = "it's a \\ pass word"
    server = LocalPostgres(tmp_path / "data", 5432, password=awkward)
    assert conninfo_to_dict(server.dsn("db"))["password"] == awkward


def test_socket_only_refuses_tcp_and_serves_the_socket(
    server_dir: Path, unused_port: int, pg_bin: Path
) -> None:
    known = "the-emulators-password"
    with LocalPostgres(server_dir / "data", unused_port, ephemeral=True, tcp=False) as server:
        socket_dir = server.socket_dir
        assert socket_dir == server_dir / "data" / "sockets"
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        tcp = f"host=127.0.0.1 port={unused_port} user=postgres password={known}"
        with pytest.raises(psycopg.OperationalError, match="refused"):
            psycopg.connect(tcp, connect_timeout=5).close()
        env = server.service_env("postgres")
        assert env["DB_HOST"] == str(socket_dir) and "DB_PASSWORD" not in env
        with psycopg.connect(host=env["DB_HOST"], port=env["DB_PORT"], user="postgres") as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("",)
        hba = (server_dir / "data" / "pg_hba.conf").read_text()
        host_rules = [ln.split()[-1] for ln in hba.splitlines() if ln.startswith("host")]
        assert host_rules and set(host_rules) == {"reject"}  # no password to guess, ever
    assert not server.is_running()


def test_a_long_data_dir_gets_a_short_private_socket_dir(
    server_dir: Path, unused_port: int, pg_bin: Path
) -> None:
    deep = server_dir.joinpath(*["d" * 20] * 5, "data")
    deep.parent.mkdir(parents=True)
    for parent in deep.parents:  # as root, the postgres user must reach it
        if parent == server_dir:
            break
        parent.chmod(0o711)
    assert len(str(deep / "sockets" / f".s.PGSQL.{unused_port}")) > 107
    with LocalPostgres(deep, unused_port, ephemeral=True, tcp=False) as server:
        socket_dir = server.socket_dir
        assert socket_dir.parent == Path("/tmp") and socket_dir.name.startswith("msctl-pg-")
        assert stat.S_IMODE(socket_dir.stat().st_mode) == 0o700
        # Another LocalPostgres of the same cluster finds it (the data plane restarted).
        assert LocalPostgres(deep, unused_port, tcp=False).socket_dir == socket_dir
        with psycopg.connect(server.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert not socket_dir.exists()
