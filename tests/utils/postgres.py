"""A PostgreSQL server of the test's own, to stop and start at will: the machine's shared
cluster serves other tests and developers, and must never be restarted by one.

It listens on a Unix socket in its own folder only: a TCP port would be free for anyone
between a stop and the next start. initdb refuses to run as root, so as root the server
runs as the `postgres` user, in a folder that user owns.
"""

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from tests.conftest import migrate

DATABASE = "trainserve"
SERVER_USER = "postgres"  # the role initdb makes, and the user it runs as under root


def _binary(name: str) -> str:
    """A server program of the newest PostgreSQL installed (Debian keeps them off PATH)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise RuntimeError(f"no PostgreSQL {name} in /usr/lib/postgresql/*/bin or on PATH")
    return on_path


def _major_version(path: str) -> int:
    return int(Path(path).parts[-3])


class PostgresServer:
    """initdb, then pg_ctl start and stop; the socket and the data live in `folder`."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.data, self.log = folder / "data", folder / "postgres.log"
        self.url = f"postgresql+psycopg://{SERVER_USER}@/{DATABASE}?host={folder}"
        self._as_server_user = [
            *(["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else [])
        ]

    def create(self) -> None:
        """A new cluster (trust authentication, no TCP), started, with a migrated database."""
        self._run(_binary("initdb"), "-D", self.data, "-U", SERVER_USER, "-A", "trust")
        self.start()
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{DATABASE}"')
        migrate(self.url)

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.folder), user=SERVER_USER, dbname="postgres", autocommit=True
        )

    def start(self) -> None:
        # -w: returns once the server accepts connections.
        options = f"-c listen_addresses='' -c unix_socket_directories={self.folder}"
        self._run(_binary("pg_ctl"), "-D", self.data, "-l", self.log, "-o", options, "-w", "start")

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: every session is ended (its transaction rolled back), as
        when an administrator restarts the database."""
        self._run(_binary("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop")

    def is_running(self) -> bool:
        status = subprocess.run(
            [*self._as_server_user, _binary("pg_ctl"), "-D", str(self.data), "status"],
            capture_output=True,
        )
        return status.returncode == 0

    def _run(self, *command: str | Path) -> None:
        subprocess.run(
            [*self._as_server_user, *map(str, command)],
            check=True,
            capture_output=True,
            timeout=120,
        )


@contextmanager
def private_postgres() -> Iterator[PostgresServer]:
    """A started server with a migrated database; stopped and removed afterwards. Its folder
    is made outside pytest's tmp_path, which the server's user cannot enter under root."""
    folder = Path(tempfile.mkdtemp(prefix="trainserve-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, SERVER_USER)
    server = PostgresServer(folder)
    try:
        server.create()
        yield server
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
