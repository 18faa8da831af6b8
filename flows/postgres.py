"""The private PostgreSQL cluster of ``denoiser server start --postgres``: made under the
server's state folder on first use with Debian's ``postgresql`` programs (initdb, pg_ctl,
psql), listening on 127.0.0.1 only, on a free port chosen at each start, its generated
password kept in a file of mode 0600.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from pathlib import Path

from denoiser.files import write_private


class PostgresError(OSError):
    """The cluster could not be made, started or reached."""


class Postgres:
    """A private PostgreSQL cluster in ``folder``: made on first use, on 127.0.0.1 only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self.data = self.folder / "data"
        self.secrets = self.folder / "credentials.json"

    def start(self) -> str:
        """Start the cluster (making it first if needed); the asyncpg URL of its database."""
        if not (self.data / "PG_VERSION").is_file():
            self._init()
        credentials = json.loads(self.secrets.read_text())
        port = credentials["port"] = free_port()
        write_private(self.secrets, json.dumps(credentials))
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={self.data}"
        self._run([binary("pg_ctl"), "-D", str(self.data), "-l", str(self.data / "postgres.log"), "-w",
                   "-t", "60", "-o", options, "start"])
        password = credentials["password"]
        url = f"postgresql+asyncpg://denoiser:{password}@127.0.0.1:{port}/prefect"
        self._create_database(port, password)
        return url

    def stop(self) -> None:
        if (self.data / "postmaster.pid").is_file():
            self._run([binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"], check=False)

    def _init(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        write_private(self.secrets, json.dumps({"user": "denoiser", "password": password}))
        pwfile = self.folder / ".pw"
        write_private(pwfile, password)
        self.data.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its files belong to postgres
            shutil.chown(self.data, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
            reach = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-r", str(pwfile)])
            if reach.returncode != 0:
                shutil.rmtree(self.folder, ignore_errors=True)
                raise PostgresError(f"running as root, PostgreSQL runs as the user postgres, which cannot "
                                  f"reach {self.folder}: choose a --state-dir it can reach")
        try:
            self._run([binary("initdb"), "-D", str(self.data), "-U", "denoiser", f"--pwfile={pwfile}",
                       "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions"])
        finally:
            pwfile.unlink(missing_ok=True)

    def _create_database(self, port: int, password: str) -> None:
        env = {**os.environ, "PGPASSWORD": password}
        exists = subprocess.run([binary("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "denoiser", "-d",
                                 "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'prefect'"],
                                env=env, capture_output=True, text=True, check=True)
        if exists.stdout.strip() != "1":
            subprocess.run([binary("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "denoiser", "-d",
                            "postgres", "-c", "CREATE DATABASE prefect"], env=env, capture_output=True,
                           check=True)

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess:
        program = Path(command[0]).name
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if check and done.returncode != 0:
            raise PostgresError(f"{program} failed: {(done.stderr or done.stdout)[-800:]}")
        return done


def binary(name: str) -> str:
    """A PostgreSQL program: on the PATH, or in Debian's /usr/lib/postgresql/VERSION/bin."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
                                                   reverse=True)), None)
    if found is None:
        raise PostgresError(f"{name} is not installed: install PostgreSQL (Debian/Ubuntu: "
                          "apt-get install postgresql), or pass --database-url of an existing server")
    return str(found)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
