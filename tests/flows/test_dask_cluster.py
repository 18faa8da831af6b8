"""``denoiser clean --task-runner dask --dask-address`` on a cluster started apart: a Dask
scheduler and two workers as separate processes (as on machines sharing a file system),
reporting to a real Prefect server."""

import filecmp
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import free_port

pytest.importorskip("prefect_dask")
DASK = Path(sys.executable).with_name("dask")


def write_scans(folder: Path, count: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"box{i // 20}" / f"scan {i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def images(out: Path) -> list[Path]:
    return sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and ".denoiser" not in p.parts)


def wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} after {seconds} s")


@pytest.fixture
def cluster(tmp_path, prefect_api):
    """A Dask scheduler and two single-threaded Dask workers, each its own process, reporting
    to the session's Prefect test server (a server of its own cost 12-20 s to start on 2
    cores); yields (env for the clean command, scheduler address, worker processes)."""
    if not DASK.exists():
        pytest.skip("the dask command is not installed beside this Python")
    env = {**os.environ, "PREFECT_API_URL": prefect_api,
           "PREFECT_HOME": str(tmp_path / "client-home"), "OMP_NUM_THREADS": "1"}
    scheduler_port = free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    processes = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(scheduler_port),
                                   "--dashboard-address", "127.0.0.1:0"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)]
    try:
        wait_for_port(scheduler_port)
        workers = [subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                     "--dashboard-address", "127.0.0.1:0", "--name", f"w{i}"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True) for i in range(2)]
        processes += workers
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        yield env, address, workers
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_an_existing_cluster_cleans_as_a_local_run_byte_for_byte_with_a_worker_killed_mid_run(
        cluster, tmp_path, untrained):
    env, address, workers = cluster
    model = ["--model", str(untrained.weights), "--device", "cpu"]
    on_dask = ["--task-runner", "dask", "--dask-address", address]

    def clean(in_dir: Path, out_dir: Path, *options: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(Path(sys.executable).with_name("denoiser")), "clean", str(in_dir), str(out_dir),
                               *model, *options], env=env, capture_output=True, text=True, timeout=300)

    write_scans(tmp_path / "slow", 24, size=250, seed=1)
    assert clean(tmp_path / "slow", tmp_path / "slow-local", "--shard-size", "4", "--batch-size", "1").returncode == 0
    # On the cluster, with a worker killed mid-run: its shard runs again on the other worker.
    command = [str(Path(sys.executable).with_name("denoiser")), "clean", str(tmp_path / "slow"),
               str(tmp_path / "slow-out"), *model, "--shard-size", "4", "--batch-size", "1", *on_dask]
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(images(tmp_path / "slow-out")) < 5 and time.time() < deadline and run.poll() is None:
        time.sleep(0.05)
    assert run.poll() is None, "the run ended before a worker could be killed"
    os.killpg(workers[0].pid, signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr[-2000:]
    # The files the killed worker had finished are recorded, and its shard's rerun skips them.
    counts = re.search(r"24 files: (\d+) ok, 0 error, (\d+) skipped", stdout)
    assert counts and int(counts[1]) + int(counts[2]) == 24, stdout
    # Nothing lost or doubled: every input has its one output, the local run's byte for byte.
    found = images(tmp_path / "slow-local")
    assert len(found) == 24 and images(tmp_path / "slow-out") == found
    assert all(filecmp.cmp(tmp_path / "slow-local" / p, tmp_path / "slow-out" / p, shallow=False) for p in found)
