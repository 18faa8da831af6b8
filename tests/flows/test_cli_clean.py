"""``denoiser clean`` and ``denoiser serve`` as a user runs them: in subprocesses."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from denoiser.folders import workdir
from tests.helpers import denoiser, seed_prefect_home

BIN = Path(sys.executable).parent


def write_scans(folder: Path, count: int, size: int = 28) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"batch{i // 50}" / f"scan {i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)


def outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and ".denoiser" not in p.parts)


SLOW_FILES = 60  # enough that a run stopped after 5 outputs is stopped mid-way


def start_slow_clean(tmp_path, store, api: dict | None = None, **popen) -> subprocess.Popen:
    """``denoiser clean`` of :data:`SLOW_FILES` large scans one at a time, in a process group of
    its own, returned once 5 outputs are written (or it ended); on a temporary server of its
    own unless ``api`` names one."""
    write_scans(tmp_path / "in", SLOW_FILES, size=200)
    script = BIN / "denoiser"
    command = [str(script) if script.exists() else sys.executable, *([] if script.exists() else
               ["-m", "flows.cli"]), "clean", str(tmp_path / "in"), str(tmp_path / "out"),
               "--models-dir", str(store), "--batch-size", "1", "--shard-size", "10", "--device", "cpu"]
    env = {**os.environ, **prefect_env(tmp_path, **(api or {}))}
    if not api:  # the temporary server's database, migrated already (8 s to make, once per process)
        seed_prefect_home(env["PREFECT_HOME"])
    run = subprocess.Popen(command, env=env, start_new_session=True, **popen)
    deadline = time.time() + 120
    while len(outputs(tmp_path / "out")) < 5 and time.time() < deadline and run.poll() is None:
        time.sleep(0.02)
    return run


def prefect_env(tmp_path, **extra):
    return {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": "",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def test_clean_prints_a_summary_and_sets_the_exit_status(tmp_path, store, api_env):
    write_scans(tmp_path / "in", 3)
    (tmp_path / "in" / "bad.png").write_bytes(b"")
    args = ["clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(store),
            "--device", "cpu", "--report", str(tmp_path / "report.parquet")]
    out = denoiser(*args, env=prefect_env(tmp_path, **api_env))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "4 files: 3 ok, 1 error, 0 skipped" in out.stdout
    assert "model conv-test: promoted as the default for clean" in out.stdout
    report = pd.read_parquet(tmp_path / "report.parquet")
    assert len(report) == 4 and set(report["model_reason"].dropna()) == {"promoted"}
    strict = denoiser(*args, "--strict", env=prefect_env(tmp_path, **api_env))
    assert strict.returncode == 1 and "0 ok, 1 error, 3 skipped" in strict.stdout


def test_nothing_processable_is_a_failure(tmp_path, store, api_env):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"junk")
    out = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(store),
                   env=prefect_env(tmp_path, **api_env))
    assert out.returncode == 1 and "1 files: 0 ok, 1 error" in out.stdout


def test_user_mistakes_get_one_line(tmp_path, store):
    cases = [
        (["clean", str(tmp_path / "nope"), str(tmp_path / "out")], "does not exist"),
        (["clean", str(tmp_path), str(tmp_path / "out")], "must not be the input folder or inside it"),
        (["clean", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "conv-nope",
          "--models-dir", str(store)], "no model 'conv-nope'"),
    ]
    (tmp_path / "in").mkdir()
    for args, message in cases:
        out = denoiser(*args)
        assert out.returncode != 0 and message in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1


def test_a_run_that_finds_the_folder_busy_does_nothing_and_exits_0(tmp_path, store, api_env):
    write_scans(tmp_path / "in", 2)
    with workdir.folder_lock(tmp_path / "out"):  # another run holds the folder
        out = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(store),
                       "--device", "cpu", env=prefect_env(tmp_path, **api_env))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "another run is cleaning into" in out.stderr and not outputs(tmp_path / "out")


def test_dry_run_lists_and_writes_nothing(tmp_path, store):
    write_scans(tmp_path / "in", 2)
    out = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--dry-run",
                   "--models-dir", str(store))
    assert out.returncode == 0
    assert "todo     batch0/scan 000.png" in out.stdout and "2 to clean" in out.stdout
    assert "model conv-test: promoted" in out.stdout
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_one_line_per_file_whatever_its_name(tmp_path, store):
    write_scans(tmp_path / "in", 2)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "in" / "two\nlines.png")
    out = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--dry-run", "--models-dir", str(store))
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 and "todo     two\\nlines.png" in lines


@pytest.mark.parametrize("after", [0.3, 1.0, 3.0])
def test_ctrl_c_at_any_moment_of_the_start_is_one_line(tmp_path, store, after):
    write_scans(tmp_path / "in", 2)
    script = BIN / "denoiser"
    run = subprocess.Popen([str(script), "clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir",
                            str(store), "--device", "cpu"], env={**os.environ, **prefect_env(tmp_path)},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal starts it
    time.sleep(after)
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "denoiser clean: interrupted", err[-2000:]


@pytest.mark.slow
def test_a_killed_run_leaves_no_partial_file_and_the_next_run_finishes(tmp_path, store, api_env):
    run = start_slow_clean(tmp_path, store, api_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    done = outputs(tmp_path / "out")
    assert 5 <= len(done) < SLOW_FILES, "the run should have been killed mid-way"
    for path in done:  # every visible output is whole
        with Image.open(path) as image:
            image.load()
            assert image.size == (200, 200)

    rerun = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(store),
                     "--device", "cpu", env=prefect_env(tmp_path, **api_env))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert len(outputs(tmp_path / "out")) == SLOW_FILES
    assert f"{SLOW_FILES} files: " in rerun.stdout and " 0 error" in rerun.stdout
    assert not list((tmp_path / "out" / ".denoiser" / "tmp").glob("*"))


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_to_the_group_stops_the_run_in_seconds_and_no_server_is_left(tmp_path, store, sig):
    """Ctrl-C in a terminal, or a supervisor's SIGTERM, reaches the whole process group. It used
    to stop Prefect's temporary server too, and the command then retried the dead API for
    minutes, printing tracebacks, before it exited."""
    from flows import orphans

    run = start_slow_clean(tmp_path, store, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.killpg(run.pid, sig)
    try:
        _, stderr = run.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        pytest.fail(f"still running 30 s after {sig.name}")
    assert len(outputs(tmp_path / "out")) < SLOW_FILES, "the run should have been stopped mid-way"
    if sig == signal.SIGINT:
        assert run.returncode == 130 and "denoiser clean: interrupted" in stderr
    else:
        assert run.returncode == -signal.SIGTERM
    assert "Connection refused" not in stderr
    home = str(tmp_path / "prefect-home")

    def servers_left() -> bool:
        return any(orphans.prefect_home_of(pid) == home for pid in orphans.temporary_servers())

    deadline = time.time() + 15  # the watchdog stops a server that Prefect could not
    while time.time() < deadline and servers_left():
        time.sleep(0.2)
    assert not servers_left()


def test_serve_without_a_server_says_how_to_start_one(tmp_path, store):
    (tmp_path / "in").mkdir()
    out = denoiser("serve", str(tmp_path / "in"), str(tmp_path / "out"), "--interval", "60",
                   env=prefect_env(tmp_path))
    assert out.returncode == 2
    assert "denoiser server start" in out.stderr and "PREFECT_API_URL" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
