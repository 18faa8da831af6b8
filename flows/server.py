"""A local Prefect server for scheduled runs and the UI, in one command: started in the
background, health-checked before it is called ready, stopped leaving no process behind.

The database is Prefect's embedded SQLite by default, or with ``postgres=True`` a private
PostgreSQL cluster under the state folder (:mod:`flows.postgres`), or any PostgreSQL the
user names with a database URL. What runs is recorded in ``STATE/server.json``.

With ``auth=True`` the API and the UI want a password (Prefect's basic auth): the user name
and password are ``$PREFECT_SERVER_API_AUTH_STRING`` where set, else generated and kept in
``STATE/api-auth`` (mode 0600); the server's workers are given them, and a client sets
``PREFECT_API_AUTH_STRING`` to them. A server that listens beyond the loopback interface
must have one: its API can start runs and reads every folder's parameters.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from denoiser.files import write_private
from flows.postgres import Postgres
from flows.workers import POOL, ensure_pool, start_workers

STATE_ENV = "DENOISER_STATE_DIR"
READY_SECONDS = 90
AUTH_FILE = "api-auth"  # "user:password" for Prefect's basic auth, mode 0600
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def api_settings(url: str, auth: str | None = None) -> dict:
    """Prefect settings for a client of the API at ``url``, with its "user:password" where
    the server wants one (for ``temporary_settings``)."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL

    return {PREFECT_API_URL: url, **({PREFECT_API_AUTH_STRING: auth} if auth else {})}


def default_state() -> Path:
    """Where the server keeps its state unless ``--state-dir`` says: ``$DENOISER_STATE_DIR``,
    else ``$XDG_STATE_HOME/denoiser/server`` (``~/.local/state/denoiser/server``): the same
    for every command from any directory (it was ``data/server`` under the current one, so
    ``status`` from elsewhere said no server ran while one did)."""
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser().resolve()
    base = os.environ.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(base).resolve() / "denoiser" / "server"


def port_taken(host: str, port: int) -> bool:
    """Whether something already listens on ``host``:``port`` (or it cannot be bound)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class ServerError(OSError):
    """The server or its database could not be started, or stopped."""


@dataclass(frozen=True)
class Server:
    state: Path

    @property
    def record(self) -> Path:
        return self.state / "server.json"

    def read(self) -> dict | None:
        try:
            return json.loads(self.record.read_text())
        except (OSError, ValueError):
            return None

    def status(self) -> dict | None:
        """The running server's record with ``healthy``; None when none runs."""
        found = self.read()
        if found is None or not _alive(found["pid"]):
            return None
        workers = [pid for pid in found.get("workers", []) if _alive(pid)]
        return {**found, "healthy": _healthy(found["url"]), "workers_alive": len(workers)}

    @property
    def auth_file(self) -> Path:
        return self.state / AUTH_FILE

    def auth_string(self, record: dict | None = None) -> str | None:
        """The running server's "user:password" when it wants one (``auth``), else None;
        ``record``: its record, when the caller has read it already."""
        found = record if record is not None else self.read()
        if not (found or {}).get("auth"):
            return None
        try:
            return self.auth_file.read_text().strip()
        except OSError as error:
            raise ServerError(f"the server wants a password but {self.auth_file} cannot be read: "
                              f"{error.strerror}") from None

    def _new_auth_string(self) -> str:
        """$PREFECT_SERVER_API_AUTH_STRING, else the one an earlier start kept (clients keep
        working across restarts), else a new one; kept in :attr:`auth_file`."""
        given = os.environ.get("PREFECT_SERVER_API_AUTH_STRING", "").strip()
        if given and ":" not in given:
            raise ServerError("PREFECT_SERVER_API_AUTH_STRING must be USER:PASSWORD")
        try:
            kept = self.auth_file.read_text().strip()
        except OSError:
            kept = ""
        auth = given or (kept if ":" in kept else f"denoiser:{secrets.token_urlsafe(24)}")
        write_private(self.auth_file, auth + "\n")
        return auth

    def start(self, *, host: str = "127.0.0.1", port: int = 4200, postgres: bool = False,
              database_url: str | None = None, workers: int = 0, pool: str = POOL, auth: bool = False) -> dict:
        """Start the server (and its PostgreSQL cluster) unless one runs, and ``workers``
        workers on the process pool ``pool`` (:mod:`flows.workers`); its record. ``auth``: the
        API and UI want a password (:meth:`auth_string`); a ``host`` beyond the loopback
        interface is refused without it."""
        running = self.status()
        if running is not None:
            if auth and not running.get("auth"):
                raise ServerError(f"the server already running at {running['url']} has no password: stop it "
                                  "(denoiser server stop) and start it again with --auth")
            if workers:
                running = self._add_workers(running, workers, pool)
            return {**running, "already": True}
        if host not in LOOPBACK and not auth:
            raise ServerError(f"--host {host} opens the API, which can start runs, to the network: add --auth "
                              "(a password for the API and the UI), or keep 127.0.0.1 behind an authenticating proxy")
        if port_taken(host, port):  # another server would answer the health check for this one
            raise ServerError(f"port {port} on {host} is already in use by another process (another Prefect "
                              f"server? its state folder is not {self.state}): stop it, or give --port")
        self.state.mkdir(parents=True, exist_ok=True)
        # The host and port are settings too, not only flags: the UI asks the API at the
        # address they make (with the flags alone it would look for port 4200).
        env = {**os.environ, "PREFECT_HOME": str((self.state / "prefect").resolve()),
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_API_HOST": host,
               "PREFECT_SERVER_API_PORT": str(port)}
        env.pop("PREFECT_API_URL", None)
        # Alerts link to the run (the automations' ui_url filter), with the address the UI has.
        env.setdefault("PREFECT_UI_URL", f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}")
        database = "sqlite"
        if postgres:
            database_url, database = Postgres(self.state / "postgres").start(), "postgres (private cluster)"
        elif database_url:
            database = "postgres (given URL)"
        if database_url:
            env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        env.pop("PREFECT_SERVER_API_AUTH_STRING", None)
        if auth:
            env["PREFECT_SERVER_API_AUTH_STRING"] = self._new_auth_string()
        log = open(self.state / "server.log", "ab")  # noqa: SIM115 - the child keeps it open
        process = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", host,
                                    "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        log.close()
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/api"
        record = {"pid": process.pid, "url": url, "host": host, "port": port, "database": database,
                  "postgres": postgres, "auth": auth, "started": time.time()}
        write_private(self.record, json.dumps(record, indent=1))
        deadline = time.time() + READY_SECONDS
        while not (_healthy(url) and process.poll() is None):
            if process.poll() is not None or time.time() > deadline:
                self.stop()
                raise ServerError(f"the Prefect server did not become healthy at {url} within "
                                  f"{READY_SECONDS} s; its log: {self.state / 'server.log'}")
            time.sleep(0.5)
        if workers:
            record = self._add_workers(record, workers, pool)
        return {**record, "healthy": True, "already": False}

    def _add_workers(self, record: dict, count: int, pool: str) -> dict:
        """Workers 1 to ``count`` running on ``pool``: those recorded and alive are kept, the
        others (dead, or never started) started; ``restarted`` says how many were started."""
        from prefect.settings import temporary_settings

        have = list(record.get("workers", []))
        slots = range(1, max(count, len(have)) + 1)
        missing = [n for n in slots if n > len(have) or not _alive(have[n - 1])]
        if not missing:
            return {**record, "restarted": 0}
        auth = self.auth_string(record)
        with temporary_settings(updates=api_settings(record["url"], auth)):
            ensure_pool(pool)
        started = dict(zip(missing, start_workers(len(missing), state=self.state, api_url=record["url"],
                                                   pool=pool, numbers=missing, auth=auth), strict=True))
        pids = [started.get(n) or have[n - 1] for n in slots]
        record = {**record, "workers": pids, "pool": pool, "workers_alive": len(pids)}
        kept = {k: v for k, v in record.items() if k not in ("healthy", "workers_alive", "already", "restarted")}
        write_private(self.record, json.dumps(kept, indent=1))
        return {**record, "restarted": len(missing) if have else 0}

    def stop(self) -> bool:
        """Stop the workers, the server and its cluster; whether a server was running."""
        found = self.read()
        for worker in (found or {}).get("workers", []):
            _stop_group(worker)
        was_running = found is not None and _alive(found["pid"])
        if was_running:
            _stop_group(found["pid"])
        if found is not None and found.get("postgres"):
            Postgres(self.state / "postgres").stop()
        self.record.unlink(missing_ok=True)
        return was_running


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped: where nothing reaps orphans, a
    killed worker stays one) is not running."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc: os.kill's answer


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop_group(pid: int, seconds: float = 20) -> None:
    """SIGTERM the server's process group, then SIGKILL what is left after ``seconds``, and
    return once the group is gone (or 10 s after the SIGKILL)."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_for_group(pid, seconds):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_for_group(pid, 10)  # a killed process is gone only once the kernel has torn it down


def _wait_for_group(pid: int, seconds: float) -> bool:
    """Whether process group ``pid`` was gone within ``seconds`` (its leader reaped if ours)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        _reap(pid)
        time.sleep(0.2)
    return False


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
