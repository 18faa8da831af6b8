"""Retention: the newest runs or the recent ones are kept, everything else the runs left is
removed, and nothing else."""

import os
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from denoiser import runs as retention_runs
from denoiser import runs as stages_runs
from denoiser.files import write_parquet
from denoiser.folders import history, retention
from denoiser.folders.report import new_row, report_frame
from denoiser.out_tree import OutTree
from denoiser.pipeline import stages
from tests.helpers import write_idx_dataset

DAY = 86400


def test_the_newest_runs_and_the_recent_ones_are_kept():
    now = 1_000 * DAY
    runs = {f"r{i}": now - i * DAY for i in range(6)}  # r0 today, r5 five days ago
    assert retention_runs.Retention(keep_runs=2).expired(runs, now=now) == ["r2", "r3", "r4", "r5"]
    assert retention_runs.Retention(keep_days=2.5).expired(runs, now=now) == ["r3", "r4", "r5"]
    assert retention_runs.Retention(keep_runs=4, keep_days=1.5).expired(runs, now=now) == ["r2", "r3", "r4", "r5"]
    assert retention_runs.Retention().expired(runs, now=now) == [] and not retention_runs.Retention().active
    with pytest.raises(ValueError, match="keep_runs must be >= 1"):
        retention_runs.Retention(keep_runs=0)
    with pytest.raises(ValueError, match="keep_days must be > 0"):
        retention_runs.Retention(keep_days=-1)


def test_pruning_a_cleaned_folder_removes_old_reports_shards_and_history_rows_only(tmp_path):
    out = tmp_path / "out"
    work = out / ".denoiser"
    frame = report_frame([new_row("r", "a.png", "m", status="ok", recon_mse=0.01)])
    ids = [stages_runs.new_run_id() for _ in range(5)]
    for age, run in zip((4, 3, 2, 1, 0), ids, strict=True):
        when = datetime.fromtimestamp(time.time() - age * DAY, timezone.utc)
        with OutTree(out) as tree:
            history.append_run(tree, history.run_row(frame, run_id=run, model_id="m", seconds=1.0, when=when))
        write_parquet(frame, work / "reports" / f"{run}.parquet")
        write_parquet(frame, work / "runs" / run / "shard-00000.parquet")
    (work / "reports" / "mine.parquet").write_bytes(b"a user's own file")
    (out / "cleaned.png").write_bytes(b"an output")

    tree = OutTree(out)
    gone = retention.prune_clean_runs(tree, retention_runs.Retention(keep_runs=2), current=ids[0])
    assert gone == sorted(ids[1:4])  # the current run is one of the 2 kept, however old
    assert sorted(p.stem for p in (work / "reports").glob("*.parquet")) == sorted([ids[0], ids[4], "mine"])
    assert sorted(p.name for p in (work / "runs").iterdir()) == sorted([ids[0], ids[4]])
    assert history.read_history(tree)["run_id"].tolist() == [ids[0], ids[4]]
    assert (out / "cleaned.png").read_bytes() == b"an output"

    assert retention.prune_clean_runs(tree, retention_runs.Retention(keep_days=0.5)) == [ids[0]]
    assert history.read_history(tree)["run_id"].tolist() == [ids[4]]


def test_retention_keeps_the_history_the_drift_rule_compares_with(tmp_path):
    # --keep-runs 3 with idle scheduled runs between: the runs with data keep their history
    # rows, so a doubled-noise batch is still flagged on its first run.
    from tests.folders.test_history import run_report

    rng = np.random.default_rng(0)
    out = tmp_path / "out"
    ids = []

    def run(frame):
        ids.append(stages_runs.new_run_id())
        with OutTree(out) as tree:
            reasons = history.append_run(tree, history.run_row(frame, run_id=ids[-1], model_id="m", seconds=1.0))[1]
            retention.prune_clean_runs(tree, retention_runs.Retention(keep_runs=3), current=ids[-1])
        return reasons

    for _ in range(4):
        assert run(run_report(rng, files=40)) == []
    for _ in range(5):  # nothing new in the folder
        assert run(run_report(rng, files=0)) == []
    kept = history.read_history(OutTree(out))["run_id"].tolist()
    assert kept == ids[:4] + ids[-3:]  # the band of four, and the newest three
    assert run(run_report(rng, files=40, noise=0.4))[0].startswith("median input noise 0.4")


def test_runs_share_one_copy_of_the_training_images_and_pruning_frees_it(tmp_path):
    data_dir = tmp_path / "mnist"
    write_idx_dataset(data_dir, n_train=64, n_test=16)
    runs = tmp_path / "runs"
    first = stages.ingest(runs / stages_runs.new_run_id(), data_dir=str(data_dir), dataset="idx")
    second = stages.ingest(runs / stages_runs.new_run_id(), data_dir=str(data_dir), dataset="idx")
    assert first["train_images"] == second["train_images"]  # one copy, outside both runs
    assert not list(runs.glob("*/train_images.npy")) and len(list((runs / "cache").iterdir())) == 1
    assert np.load(first["train_images"]).shape == (64, 28, 28)

    old = time.time() - 2 * retention_runs.CACHE_GRACE
    os.utime(first["train_images"], (old, old))
    for run in runs.glob("2*"):
        os.utime(run, (old, old))
    assert len(retention_runs.prune_pipeline_runs(runs, retention_runs.Retention(keep_days=0.01))) == 2
    assert not (runs / "cache").exists() or not list((runs / "cache").iterdir())  # no run uses it now
