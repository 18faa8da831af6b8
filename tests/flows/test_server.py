"""`denoiser server start|stop|status`: a real Prefect server, on SQLite and on PostgreSQL."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows import postgres
from flows.server import Server, api_settings
from tests.helpers import denoiser, draw_digits, free_port, webhook_server

FLOW = "from prefect import flow\n@flow(name='server-check')\ndef f():\n    return 41 + 1\nprint(f())\n"


def client_env(url: str, auth: str | None, home: Path) -> dict:
    return {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(home),
            **({"PREFECT_API_AUTH_STRING": auth} if auth else {})}


def live(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie waiting for init to reap it is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def run_a_flow_against(url: str, tmp_path: Path, auth: str | None = None) -> str:
    env = client_env(url, auth, tmp_path / "client-home")
    done = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def alert_a_late_run(port: int, auth: str | None = None) -> None:
    """A folder's scheduled run that no worker starts (none runs on its pool) is marked Late by
    the server, and the alert (denoiser alerts) names the deployment and the folder. A real
    server: the test harness's runs no late-runs service."""
    from datetime import datetime, timedelta, timezone

    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import temporary_settings
    from prefect.states import Scheduled

    from flows import alerts

    with webhook_server() as (hook, bodies), temporary_settings(
            updates=api_settings(f"http://127.0.0.1:{port}/api", auth)):
        CustomWebhookNotificationBlock(name="ops-hook", url=hook,
                                       json_data={"text": "{{subject}}\n{{body}}"}).save("ops", overwrite=True)
        alerts.install("custom-webhook/ops")
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="nobody-works-here", type="process"))
            deployment = client.create_deployment(
                flow_id=client.create_flow_from_name("clean-folder"), name="late-folder",
                work_pool_name="nobody-works-here", parameters={"in_dir": "/scans/late", "out_dir": "/cleaned/late"})
            client.create_flow_run_from_deployment(deployment, state=Scheduled(
                scheduled_time=datetime.now(timezone.utc) - timedelta(minutes=2)))
        deadline = time.time() + 120
        while not (late := [b["text"] for b in bodies if "Late: clean-folder" in b["text"]]):
            assert time.time() < deadline, f"no late-run notification in 120 s; got {bodies}"
            time.sleep(1)
    assert "(deployment late-folder)" in late[0] and "Folder: /scans/late -> /cleaned/late" in late[0]


def alert_a_pool_without_workers(port: int, tmp_path: Path, auth: str | None = None) -> None:
    """A work pool whose only worker is killed is marked not ready by the server once the
    worker's heartbeats stop, and the alert names the pool."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.settings import temporary_settings

    url = f"http://127.0.0.1:{port}/api"
    with webhook_server() as (hook, bodies), temporary_settings(updates=api_settings(url, auth)):
        from prefect.blocks.notifications import CustomWebhookNotificationBlock

        from flows import alerts

        CustomWebhookNotificationBlock(name="pool-hook", url=hook,
                                       json_data={"text": "{{subject}}\n{{body}}"}).save("pools", overwrite=True)
        alerts.install("custom-webhook/pools")
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="short-lived", type="process"))
            env = {**client_env(url, auth, tmp_path / "worker-home"), "PREFECT_WORKER_HEARTBEAT_SECONDS": "1"}
            worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", "short-lived"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
            try:
                deadline = time.time() + 60
                while client.read_work_pool("short-lived").status.value != "READY":
                    assert time.time() < deadline and worker.poll() is None, "the worker never reported"
                    time.sleep(0.5)
            finally:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        deadline = time.time() + 60
        while not (gone := [b["text"] for b in bodies if "No worker: work pool short-lived" in b["text"]]):
            assert time.time() < deadline, f"no notification 60 s after the worker died; got {bodies}"
            time.sleep(0.5)
    assert "denoiser server status" in gone[0]


def serve_a_folder_on_its_schedule(url: str, tmp_path: Path, store: Path, auth: str | None = None) -> None:
    """`denoiser serve` against the server: its deployment's scheduled runs clean the folder."""
    import urllib.request

    def api(path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
        request = urllib.request.Request(f"{url}{path}", data=data, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    source, out = tmp_path / "serve-in", tmp_path / "serve-out"
    for i, digit in enumerate(draw_digits(4, seed=5)[0]):
        source.mkdir(exist_ok=True)
        Image.fromarray(digit.astype(np.uint8)).save(source / f"scan{i}.png")
    # The runner asks for due runs every second, not every 10.
    env = {**client_env(url, auth, tmp_path / "serve-home"), "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    with open(tmp_path / "serve.log", "w") as log:
        served = subprocess.Popen([str(Path(sys.executable).with_name("denoiser")), "serve", str(source), str(out),
                                   "--interval", "5", "--models-dir", str(store), "--device", "cpu",
                                   "--name", "test-clean"], env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 180
        while len([p for p in out.rglob("*.png") if ".denoiser" not in p.parts]) < 4:
            assert served.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.time() < deadline, "no scheduled run wrote outputs"
            time.sleep(1)
        deployment = next(d for d in api("/deployments/filter", {}) if d["name"] == "test-clean")
        assert deployment["schedules"][0]["schedule"]["interval"] == 5.0 and deployment["schedules"][0]["active"]
        query = {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}}
        while not any(r["state_type"] == "COMPLETED" for r in api("/flow_runs/filter", query)):
            assert time.time() < deadline, "the scheduled run never completed"
            time.sleep(1)
    finally:
        os.killpg(served.pid, signal.SIGTERM)
        try:
            served.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(served.pid, signal.SIGKILL)


@pytest.mark.slow
def test_the_sqlite_server_is_found_from_any_directory_serves_alerts_and_restarts_a_dead_worker(tmp_path, store):
    """One server's life (each start costs ~15 s of CPU on 2 cores, so the checks share it):
    started with a password from one directory and found from another, a flow and a served
    folder on it, the alerts for a late run and a pool without workers, a killed worker
    reported and started again, and a clean stop. Everything but the health check wants the
    password: the server's own services, its workers, and `denoiser status` find it in the
    server's state; a client without it is refused in one line."""
    from prefect.client.orchestration import get_client
    from prefect.settings import temporary_settings

    # No --state-dir: the state lives under $XDG_STATE_HOME, not under the current directory.
    # The server's foreman looks every second and calls a worker dead after 2 missed heartbeats.
    env = {"XDG_STATE_HOME": str(tmp_path / "xdg"), "DENOISER_STATE_DIR": "", "PREFECT_API_URL": "",
           "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
           "PREFECT_SERVER_SERVICES_FOREMAN_INACTIVITY_HEARTBEAT_MULTIPLE": "2"}
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir(), elsewhere.mkdir()
    state = tmp_path / "xdg" / "denoiser" / "server"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    open_to_all = denoiser("server", "start", "--port", str(port), "--host", "0.0.0.0", cwd=here, env=env)
    assert open_to_all.returncode == 1 and "add --auth" in open_to_all.stderr and not state.exists()
    started = denoiser("server", "start", "--port", str(port), "--workers", "2", "--auth", cwd=here, env=env,
                       timeout=180)
    assert started.returncode == 0, started.stderr
    restarted = {"workers": []}
    try:
        assert f"ready at {url} (database: sqlite" in started.stdout
        assert f"export PREFECT_API_URL={url}" in started.stdout
        assert f'export PREFECT_API_AUTH_STRING="$(cat {state / "api-auth"})"' in started.stdout
        auth = (state / "api-auth").read_text().strip()
        assert auth.startswith("denoiser:") and oct((state / "api-auth").stat().st_mode & 0o777) == "0o600"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"{url}/flows/filter", data=b"{}", method="POST"))
        assert refused.value.code == 401
        without = denoiser("status", env={**env, "PREFECT_API_URL": url})
        assert without.returncode == 1 and "wants a password: set PREFECT_API_AUTH_STRING" in without.stderr
        record = json.loads((state / "server.json").read_text())
        assert oct((state / "server.json").stat().st_mode & 0o777) == "0o600"
        assert (state / "prefect" / "prefect.db").is_file()  # the server's own SQLite database
        status = denoiser("server", "status", cwd=elsewhere, env=env)
        assert status.returncode == 0 and "2 of 2 workers running" in status.stdout, status.stdout
        named = denoiser("server", "status", "--state-dir", str(state), env=env)
        assert named.returncode == 0 and "healthy" in named.stdout
        again = denoiser("server", "start", "--port", str(port), cwd=elsewhere, env=env)
        assert again.stdout.startswith("Prefect server already running"), again.stdout
        # A second server on the same port is refused in one line, never called ready.
        other = denoiser("server", "start", "--port", str(port), "--state-dir", str(tmp_path / "other"))
        assert other.returncode != 0 and f"port {port} on 127.0.0.1 is already in use" in other.stderr
        assert "Traceback" not in other.stderr and "ready" not in other.stdout
        assert run_a_flow_against(url, tmp_path, auth) == "42"
        # The fleet view finds this server from its state (no PREFECT_API_URL); nothing deployed yet.
        fleet = denoiser("status", cwd=elsewhere, env=env)
        assert fleet.returncode == 0 and fleet.stdout.startswith(f"no folder is deployed on {url}"), fleet
        serve_a_folder_on_its_schedule(url, tmp_path, store, auth)
        alert_a_late_run(port, auth)
        alert_a_pool_without_workers(port, tmp_path, auth)
        # The server's two workers reached it with the password: their heartbeats arrived.
        with temporary_settings(updates=api_settings(url, auth)), get_client(sync_client=True) as client:
            online = {w.name for w in client.read_workers_for_work_pool("denoiser") if w.status.value == "ONLINE"}
        assert online == {"denoiser-worker-1", "denoiser-worker-2"}, online

        os.killpg(record["workers"][0], signal.SIGKILL)
        deadline = time.time() + 20
        while live(record["workers"][0]) and time.time() < deadline:
            time.sleep(0.2)
        status = denoiser("server", "status", cwd=elsewhere, env=env)
        assert status.returncode == 1 and "1 of 2 workers running" in status.stdout and "DOWN" in status.stdout
        again = denoiser("server", "start", "--workers", "2", cwd=elsewhere, env=env, timeout=120)
        assert again.returncode == 0 and "1 of them started again" in again.stdout, again.stdout
        status = denoiser("server", "status", cwd=here, env=env)
        assert status.returncode == 0 and "2 of 2 workers running" in status.stdout
        restarted = json.loads((state / "server.json").read_text())
        assert restarted["workers"][1] == record["workers"][1] and restarted["workers"][0] != record["workers"][0]
    finally:
        stopped = denoiser("server", "stop", cwd=elsewhere, env=env)
    assert stopped.stdout.strip() == "server stopped"
    assert not any(live(pid) for pid in [record["pid"], *record["workers"], *restarted["workers"]])
    assert denoiser("server", "status", cwd=here, env=env).returncode == 3
    assert denoiser("status", cwd=here, env=env).returncode == 3


def test_deploy_refuses_a_model_the_store_does_not_hold_in_one_line(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "store").mkdir()
    done = denoiser("deploy", str(tmp_path / "in"), str(tmp_path / "out"), "--interval", "60", "--model",
                    "unet-doesnotexist", "--models-dir", str(tmp_path / "store"), cwd=tmp_path,
                    env={"PREFECT_API_URL": ""})
    assert done.returncode == 1 and "no model 'unet-doesnotexist' in" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


HAS_POSTGRES = bool(shutil.which("pg_ctl") or list(Path("/usr/lib/postgresql").glob("*/bin")))


DB_ERRORS = ("database is locked", "OperationalError", "DBAPIError", "DeadlockDetected", "IntegrityError")


@pytest.mark.skipif(not HAS_POSTGRES, reason="PostgreSQL is not installed here (apt-get install postgresql)")
def test_on_postgres_two_workers_clean_two_folders_at_once(tmp_path, untrained, monkeypatch):
    """The private cluster (127.0.0.1 only, its password in a 0600 file) keeps the runs that
    two workers run for two folders' deployments, with no database error; stop leaves no
    process of the server, the cluster or the workers."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from denoiser.folders import plan, shard
    from denoiser.folders.settings import CleanOptions

    state = Path(tempfile.mkdtemp(prefix="denoiser-server-")) / "server"
    state.parent.chmod(0o755)
    folders = {}
    for name, seed in (("a", 1), ("b", 2)):
        folders[name] = tmp_path / f"in-{name}"
        for i, digit in enumerate(draw_digits(30, seed=seed)[0]):
            noisy = np.clip(digit / 255 + 0.3 * np.random.default_rng(i).standard_normal(digit.shape), 0, 1)
            (folders[name] / f"{i % 3}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(folders[name] / f"{i % 3}/{i:02d}.png")
    # The workers inherit this environment: they ask for due runs every second, not every 10.
    monkeypatch.setenv("PREFECT_WORKER_QUERY_SECONDS", "1")
    found = Server(state).start(port=free_port(), postgres=True, workers=2)
    try:
        assert found["database"] == "postgres (private cluster)" and found["healthy"]
        assert len(found["workers"]) == 2 and found["pool"] == "denoiser"
        credentials = state / "postgres" / "credentials.json"
        assert oct(credentials.stat().st_mode & 0o777) == "0o600"
        secret = json.loads(credentials.read_text())
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        for port in (found["port"], secret["port"]):
            assert f"127.0.0.1:{port} " in listening and f"0.0.0.0:{port} " not in listening
        postmaster = int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        env = {"PREFECT_API_URL": found["url"], "PREFECT_HOME": str(tmp_path / "client-home")}
        for name, source in folders.items():
            deployed = denoiser("deploy", str(source), str(tmp_path / f"out-{name}"), "--interval", "3600",
                                "--model", str(untrained.weights), "--device", "cpu", "--name", f"clean-{name}",
                                env=env, timeout=180)
            assert deployed.returncode == 0 and f"clean-folder/clean-{name}" in deployed.stdout, deployed.stderr
        # One input folder under a second name (cleaned twice into two places) is refused in one line.
        clash = denoiser("deploy", str(folders["a"]), str(tmp_path / "out-c"), "--interval", "3600",
                         "--model", str(untrained.weights), "--device", "cpu", "--name", "clean-c", env=env, timeout=180)
        assert clash.returncode == 2 and clash.stderr.count("\n") == 1, clash.stderr
        assert f"the input folder {folders['a']} is already deployed as clean-folder/clean-a" in clash.stderr
        with temporary_settings(updates={PREFECT_API_URL: found["url"]}):
            runs = [run_deployment(f"clean-folder/clean-{name}", timeout=0) for name in folders]
            deadline = time.time() + 300
            with get_client(sync_client=True) as client:
                states = [client.read_flow_run(r.id).state for r in runs]
                while not all(s.is_final() for s in states):
                    assert time.time() < deadline, "the workers did not finish both runs in 5 minutes"
                    time.sleep(0.5)
                    states = [client.read_flow_run(r.id).state for r in runs]
        assert all(s.is_completed() for s in states), [s.message for s in states]
        # Two runs of one folder due at once: the second is cancelled, not queued behind the
        # first (runs piled up when an interval was shorter than a run). The pool is paused while
        # both are made, so that no worker can take and finish the first before the second exists.
        with temporary_settings(updates={PREFECT_API_URL: found["url"]}), get_client(sync_client=True) as client:
            from prefect.client.schemas.actions import WorkPoolUpdate

            client.update_work_pool("denoiser", WorkPoolUpdate(is_paused=True))
            busy = [run_deployment("clean-folder/clean-a", timeout=0) for _ in range(2)]
            client.update_work_pool("denoiser", WorkPoolUpdate(is_paused=False))
            options = client.read_deployment_by_name("clean-folder/clean-a").concurrency_options
            assert options.collision_strategy.value == "CANCEL_NEW"
            deadline = time.time() + 300
            while not all((found_state := client.read_flow_run(r.id).state).is_final() for r in busy):
                assert time.time() < deadline, f"the two runs did not end in 5 minutes: {found_state}"
                time.sleep(0.5)
            ends = sorted(client.read_flow_run(r.id).state.type.value for r in busy)
            assert ends == ["CANCELLED", "COMPLETED"], ends
        # The fleet view: both folders, their last runs and files, the workers; nothing needs a look.
        fleet = denoiser("status", env=env, timeout=120)
        assert fleet.returncode == 0, fleet.stdout + fleet.stderr
        for name in folders:
            assert f"clean-folder/clean-{name}: {folders[name]} -> {tmp_path / f'out-{name}'}, every 3600 s" in fleet.stdout
        assert fleet.stdout.count("last run Completed") == 2 and fleet.stdout.count("last files: 30 ok, 0 failed") == 2
        assert "2 worker(s) online on 'denoiser'" in fleet.stdout and "2 folder(s), 0 needing a look" in fleet.stdout
        # Each run under a deployment refreshes the fleet artifact: the latest lists both folders.
        with temporary_settings(updates={PREFECT_API_URL: found["url"]}), get_client(sync_client=True) as client:
            from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

            versions = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fleet"])))
        latest = max(versions, key=lambda a: a.created)
        table = latest.data if isinstance(latest.data, list) else json.loads(latest.data)
        assert sorted(row["folder"] for row in table) == ["clean-folder/clean-a", "clean-folder/clean-b"]
        assert all(row["ok"] == 30 and row["failed"] == 0 for row in table), table
        # Pausing a folder's schedule as docs/production.md says: the fleet view shows it paused.
        with temporary_settings(updates={PREFECT_API_URL: found["url"]}), get_client(sync_client=True) as client:
            schedule_id = client.read_deployment_by_name("clean-folder/clean-b").schedules[0].id
        prefect = Path(sys.executable).with_name("prefect")
        paused = subprocess.run([str(prefect), "deployment", "schedule", "pause", "clean-folder/clean-b", str(schedule_id)],
                                env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
        assert paused.returncode == 0, paused.stdout + paused.stderr
        fleet = denoiser("status", env=env, timeout=120).stdout
        assert f"{tmp_path / 'out-b'}, every 3600 s (PAUSED)" in fleet and f"{tmp_path / 'out-a'}, every 3600 s\n" in fleet
        for name, source in folders.items():  # the outputs a run in this process writes, byte for byte
            by_worker = {p.relative_to(tmp_path / f"out-{name}"): p.read_bytes()
                         for p in (tmp_path / f"out-{name}").rglob("*.png") if ".denoiser" not in p.parts}
            local = tmp_path / f"local-{name}"
            shard.clean_shard(plan.plan(source, local), in_dir=source, out_dir=local,
                                 model=untrained, run_id="local", options=CleanOptions(device="cpu"))
            assert by_worker == {p.relative_to(local): p.read_bytes()
                                 for p in local.rglob("*.png") if ".denoiser" not in p.parts}
            assert len(by_worker) == 30
        logs = "".join(p.read_text(errors="replace") for p in state.glob("*.log"))
        assert "Worker 'denoiser-worker-1' started" in logs and "Worker 'denoiser-worker-2' started" in logs
        assert not [error for error in DB_ERRORS if error in logs]
        psql = postgres.binary("psql")
        rows = subprocess.run([psql, "-h", "127.0.0.1", "-p", str(secret["port"]), "-U", "denoiser", "-d", "prefect",
                               "-tAc", "SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'"],
                              env={**os.environ, "PGPASSWORD": secret["password"]}, capture_output=True, text=True)
        assert rows.returncode == 0 and int(rows.stdout) == 3  # the completed runs are in PostgreSQL
    finally:
        assert Server(state).stop()
    named = {**{pid: "worker" for pid in found["workers"]}, found["pid"]: "server", postmaster: "postmaster"}
    assert not {pid: name for pid, name in named.items() if live(pid)}  # which one, if any
    assert not (state / "postgres" / "data" / "postmaster.pid").exists()
    shutil.rmtree(state.parent)
