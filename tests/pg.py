"""A real PostgreSQL server for the tests: Debian's binaries (/usr/lib/postgresql/<version>/bin), started once
per session in a temporary directory, listening on a unix socket there only (no TCP port), stopped at the end.
initdb refuses to run as root: as root the server runs as the `postgres` user the Debian package creates, in a
directory it owns. Each test asks for a database of its own (`create_database`), so no test sees another's rows.

    server = PostgresServer.start()          # or skip with why: unavailable()
    url = server.create_database()           # postgresql://postgres@/t3?host=/tmp/parley-pg-.../
    server.drop_database(url); server.stop()
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

INSTALL = "apt-get install postgresql (`make test` does)"
SERVER_SETTINGS = ("-c", "listen_addresses=", "-c", "fsync=off", "-c", "synchronous_commit=off",
                   "-c", "full_page_writes=off", "-c", "shared_buffers=16MB", "-c", "max_connections=40")


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/postgres")]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


def unavailable() -> str | None:
    """Why the PostgreSQL tests cannot run here (None: they can)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed: pip install 'parley[postgres]' (the test extra has it)"
    if bin_dir() is None:
        return f"PostgreSQL is not installed: {INSTALL}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no `postgres` user to run the server as (Debian's package makes it)"
    return None


class PostgresServer:
    def __init__(self, bindir: Path, root: Path):
        self.bin, self.root = bindir, root
        self.data, self.socket_dir = root / "data", root
        self._count = 0

    @classmethod
    def start(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="parley-pg-"))   # /tmp: a unix socket path has ~100 characters
        server = cls(bin_dir(), root)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "--no-sync",
                    "-E", "UTF8", "--locale=C.UTF-8")
        options = " ".join([f"-k {root}", "-p 5432", *SERVER_SETTINGS])
        server._run("pg_ctl", "-D", str(server.data), "-l", str(root / "server.log"), "-w", "-t", "60",
                    "-o", options, "start")
        return server

    def _run(self, tool: str, *args: str) -> None:
        user = {"user": "postgres", "group": "postgres", "extra_groups": []} if os.geteuid() == 0 else {}
        out = subprocess.run([str(self.bin / tool), *args], cwd=self.root, capture_output=True, text=True,
                             timeout=120, **user)
        if out.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{tool} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
                               + (f"\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def url(self, database: str) -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def admin(self):
        """A superuser connection (autocommit) to the server's `postgres` database."""
        import psycopg

        return psycopg.connect(self.url("postgres"), autocommit=True)

    def create_database(self) -> str:
        self._count += 1
        name = f"t{self._count}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.split("/")[3].split("?")[0]
        with self.admin() as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def terminate(self, url: str) -> int:
        """Drop every connection to the database at `url` (as a server restart does); returns how many."""
        name = url.split("/")[3].split("?")[0]
        with self.admin() as db:
            return len(db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                  "WHERE datname = %s AND pid <> pg_backend_pid()", (name,)).fetchall())

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
