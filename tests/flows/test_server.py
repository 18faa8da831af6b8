"""`denoiser server start|stop|status`: a real Prefect server, on SQLite and on PostgreSQL."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from flows import server as server_module
from flows.server import Server
from tests.helpers import denoiser, free_port

FLOW = "from prefect import flow\n@flow(name='server-check')\ndef f():\n    return 41 + 1\nprint(f())\n"


def live(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for init to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def run_a_flow_against(url: str, tmp_path: Path) -> str:
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "client-home")}
    done = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def test_the_sqlite_server_starts_answers_and_stops_without_leftovers(tmp_path):
    state, port = tmp_path / "server", free_port()
    started = denoiser("server", "start", "--state-dir", str(state), "--port", str(port), timeout=180)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}/api"
    assert f"ready at {url} (database: sqlite" in started.stdout
    assert f"export PREFECT_API_URL={url}" in started.stdout
    record = json.loads((state / "server.json").read_text())
    assert oct((state / "server.json").stat().st_mode & 0o777) == "0o600"
    assert denoiser("server", "start", "--state-dir", str(state), "--port", str(port)).stdout.startswith(
        "Prefect server already running")
    status = denoiser("server", "status", "--state-dir", str(state))
    assert status.returncode == 0 and "healthy" in status.stdout
    assert run_a_flow_against(url, tmp_path) == "42"
    assert (state / "prefect" / "prefect.db").is_file()  # the server's own SQLite database
    stopped = denoiser("server", "stop", "--state-dir", str(state))
    assert stopped.stdout.strip() == "server stopped" and not live(record["pid"])
    assert denoiser("server", "status", "--state-dir", str(state)).returncode == 3


HAS_POSTGRES = bool(server_module.shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin")))


@pytest.mark.skipif(not HAS_POSTGRES, reason="PostgreSQL is not installed here (apt-get install postgresql)")
def test_the_postgres_server_keeps_runs_in_its_private_cluster(tmp_path):
    # Run as root, PostgreSQL runs as the user postgres, who cannot enter pytest's 0700 folders.
    state = Path(tempfile.mkdtemp(prefix="denoiser-server-")) / "server"
    state.parent.chmod(0o755)
    found = Server(state).start(port=free_port(), postgres=True)
    try:
        assert found["database"] == "postgres (private cluster)" and found["healthy"]
        credentials = state / "postgres" / "credentials.json"
        assert oct(credentials.stat().st_mode & 0o777) == "0o600"
        secret = json.loads(credentials.read_text())
        assert run_a_flow_against(found["url"], tmp_path) == "42"
        env = {**os.environ, "PGPASSWORD": secret["password"]}
        psql = server_module._binary("psql")
        rows = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(secret["port"]), "-U", "denoiser",
                               "-d", "prefect", "-tAc", "SELECT count(*) FROM flow_run"],
                              env=env, capture_output=True, text=True)
        assert rows.returncode == 0 and int(rows.stdout) >= 1  # the run is in PostgreSQL
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        for port in (found["port"], secret["port"]):
            assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
        postmaster = int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
    finally:
        assert Server(state).stop()
    assert not live(found["pid"]) and not live(postmaster)
    assert not (state / "postgres" / "data" / "postmaster.pid").exists()
    shutil.rmtree(state.parent)
