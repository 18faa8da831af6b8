"""Shards cleaned in worker processes, one per core: the same outputs and report as in one
process, and no worker left behind by a killed run."""

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from denoiser.folders import plan, processes
from denoiser.folders.run import clean_folder, clean_shard_part
from denoiser.folders.settings import CleanOptions, CleanRun
from tests.helpers import make_messy_tree

REPO = Path(__file__).resolve().parents[2]


def outputs(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".denoiser" not in p.parts}


def test_shards_for_processes_are_even_a_multiple_of_the_processes_and_keep_the_order():
    entries = list(range(10_000))
    parts = plan.shards(entries, 2000, processes=2)
    assert [len(p) for p in parts] == [1667, 1667, 1667, 1667, 1666, 1666]  # 5 shards would idle one process
    assert [e for p in parts for e in p] == entries
    assert [len(p) for p in plan.shards(entries, 2000)] == [2000] * 5  # in one process: as before
    assert [len(p) for p in plan.shards(list(range(3)), 2000, processes=4)] == [1, 1, 1]
    assert plan.shards([], 5, processes=2) == []


def test_runs_take_one_process_per_cpu_only_when_large_enough_to_pay_for_them(monkeypatch):
    monkeypatch.setattr(processes, "available_cpus", lambda: 4)
    cpu = CleanOptions(device="cpu")
    assert processes.processes_for(processes.MIN_FILES, cpu) == 4
    assert processes.processes_for(processes.MIN_FILES - 1, cpu) == 0  # starting them costs more than they win
    assert processes.processes_for(50, CleanOptions(device="cpu", processes=3)) == 3  # asked for
    assert processes.processes_for(10**6, CleanOptions(device="cpu", processes=0)) == 0
    monkeypatch.setattr(processes, "available_cpus", lambda: 1)
    assert processes.processes_for(10**6, cpu) == 0
    with pytest.raises(ValueError, match="processes must be >= 0"):
        CleanOptions(processes=-1)


def test_a_run_on_two_processes_writes_what_one_process_writes(tmp_path, store):
    # Byte for byte the same outputs and report rows, every bad file an error row there too.
    expected = make_messy_tree(tmp_path / "in", tmp_path / "outside")
    settings = CleanRun(models_dir=str(store), shard_size=4)
    alone = clean_folder(str(tmp_path / "in"), str(tmp_path / "one"), CleanOptions(device="cpu", processes=0),
                         settings)
    two = clean_folder(str(tmp_path / "in"), str(tmp_path / "two"), CleanOptions(device="cpu", processes=2),
                       settings)
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one") and outputs(tmp_path / "one")
    same = ["path", "status", "error", "noise_level", "psnr_est", "ood"]
    a = alone.frame[same].sort_values("path").reset_index(drop=True)
    b = two.frame[same].sort_values("path").reset_index(drop=True)
    assert a.equals(b)
    assert dict(zip(b["path"], b["status"], strict=True)) == expected
    # What the processes recorded in the manifest, a run in one process skips.
    again = clean_folder(str(tmp_path / "in"), str(tmp_path / "two"), CleanOptions(device="cpu", processes=0),
                         settings)
    assert again.totals["ok"] == 0 and again.totals["skipped"] == two.totals["ok"] + two.totals["error"]


def test_a_worker_that_dies_fails_its_shard_in_one_line_and_the_retry_starts_a_new_one(tmp_path, store):
    from denoiser.folders.model_choice import choose_for_clean

    source = tmp_path / "in"
    make_messy_tree(source, tmp_path / "outside")
    options = CleanOptions(device="cpu")
    choice = choose_for_clean(CleanRun(models_dir=str(store)), options)
    entries = plan.plan(source, tmp_path / "out")
    kwargs = dict(in_dir=str(source), out_dir=str(tmp_path / "out"), choice=choice, run_id="r", options=options)
    with processes.ShardPool(1, "r") as pool:
        first = clean_shard_part(0, entries[:3], **kwargs)  # through the registry, as a task does
        assert first["ok"] + first["error"] + first["skipped"] == 3
        (pid,) = pool._executor._processes  # the one worker
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="the process cleaning shard 1 died"):
            clean_shard_part(1, entries[3:], **kwargs)
        retried = clean_shard_part(1, entries[3:], **kwargs)
        assert retried["ok"] + retried["error"] + retried["skipped"] == len(entries) - 3


def test_a_killed_run_leaves_no_worker_process(tmp_path):
    script = ("import sys, time\n"
              "from denoiser.folders.processes import ShardPool\n"
              "with ShardPool(1) as pool:\n"
              "    pool._executor.submit(time.sleep, 0).result()\n"
              "    print(*pool._executor._processes, flush=True)\n"
              "    time.sleep(60)\n")
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        workers = [int(pid) for pid in run.stdout.readline().split()]
        assert len(workers) == 1
    finally:
        run.kill()
        run.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in workers)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its reaper."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
