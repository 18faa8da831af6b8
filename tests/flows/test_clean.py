"""The clean-folder flow under a real (test) Prefect API."""

import json
import re
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect_dask import DaskTaskRunner

from denoiser.folders import shard, workdir
from denoiser.folders.settings import CleanOptions, CleanRun
from flows.clean import clean_folder
from tests.helpers import draw_digits


@pytest.fixture
def scans(tmp_path):
    """Twelve noisy 28x28 scans in two folders, plus one bad file."""
    rng = np.random.default_rng(0)
    for i, digit in enumerate(draw_digits(12, seed=4)[0]):
        noisy = np.clip(digit / 255 + 0.4 * rng.standard_normal(digit.shape), 0, 1)
        path = tmp_path / "in" / f"box{i % 2}" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(path)
    (tmp_path / "in" / "box0" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "in"


def params(scans, out, store, *, overwrite=False, **run):
    """The flow's parameters: the folders, each file's options, the run's settings."""
    return dict(in_dir=str(scans), out_dir=str(out), options=CleanOptions(device="cpu", overwrite=overwrite),
                run=CleanRun(**{"models_dir": str(store), "shard_size": 5, **run}), retry_delay_seconds=0)


def read_outputs(out):
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p))
            for p in sorted(out.rglob("*.png")) if ".denoiser" not in p.parts}


def test_clean_flow_end_to_end(scans, tmp_path, store):
    state = clean_folder(**params(scans, tmp_path / "out", store), return_state=True)
    result = state.result()
    # The run says in its state that a file failed, which, and why.
    # Prefect's own state name (the UI's Runs tab filters by them), tagged where the UI filters.
    assert state.is_completed() and state.name == "Completed"
    with get_client(sync_client=True) as client:
        assert "has-errors" in client.read_flow_run(state.state_details.flow_run_id).tags
    assert state.message.startswith("13 files: 12 ok, 1 error, 0 skipped")
    assert "first error: box0/broken.png: " in state.message
    assert result["status"] == "done" and result["model_id"] == "conv-test"
    assert (result["files"], result["ok"], result["error"], result["skipped"]) == (13, 12, 1, 0)
    frame = pd.read_parquet(result["report"])
    assert len(frame) == 13 and frame.loc[frame["status"] == "error", "path"].tolist() == ["box0/broken.png"]
    assert len(read_outputs(tmp_path / "out")) == 12
    timings = json.loads(next((tmp_path / "out/.denoiser/runs").glob("*/timings.json")).read_text())
    assert timings["files"] == 13 and min(timings[k] for k in ("decode", "model", "encode")) > 0
    assert 0 < timings["library_seconds"] <= timings["flow_seconds"]
    work = timings["flow_seconds"] - timings["library_seconds"]
    assert timings["orchestration_seconds"] == pytest.approx(work, abs=0.01)

    flow_run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    names = sorted(r.name for r in runs)
    assert names == ["clean-shard-0", "clean-shard-1", "clean-shard-2", "record-history", "resolve-model",
                     "write-report"]
    by_key = {a.key: a for a in artifacts}
    assert "data:image/png;base64," in by_key["clean-report"].data
    assert "estimated PSNR" in by_key["clean-report"].data  # the quality distributions
    counts = {row["files"]: row["count"] for row in json.loads(by_key["clean-summary"].data)}
    assert counts["ok"] == 12 and counts["error"] == 1 and counts["skipped"] == 0
    errors = json.loads(by_key["clean-errors"].data)
    assert [e["path"] for e in errors] == ["box0/broken.png"] and errors[0]["error"]
    assert "files that failed (1)" in by_key["clean-errors"].description
    worst = json.loads(by_key["clean-worst"].data)
    assert len(worst) == 10 and all(len(repr(row["recon_mse"])) <= 10 for row in worst)  # rounded
    assert "reason" in str(by_key["clean-ood"].data)  # the flagged files, or "(none)"
    report = by_key["clean-report"].data
    assert "cleaned by conv-test" in report and "(changed most)" in report

    again = clean_folder(**params(scans, tmp_path / "out", store))  # broken.png: known bad now
    assert (again["ok"], again["skipped"], again["error"]) == (0, 13, 0)


def test_a_strict_run_with_a_failed_file_ends_failed(scans, tmp_path, store):
    state = clean_folder(**params(scans, tmp_path / "out", store, strict=True), return_state=True)
    assert state.is_failed() and "box0/broken.png" in state.message
    result = state.result(raise_on_failure=False)
    assert (result["ok"], result["error"]) == (12, 1)  # the good files are cleaned all the same
    clean = tmp_path / "clean-only"
    for path in scans.rglob("*.png"):
        if path.name != "broken.png":
            target = clean / path.relative_to(scans)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    state = clean_folder(**params(clean, tmp_path / "out2", store, strict=True), return_state=True)
    assert state.is_completed() and state.name == "Completed" and "0 errors" in state.message


def test_a_shard_that_fails_once_is_retried(scans, tmp_path, store, monkeypatch):
    calls = Counter()
    original = shard.clean_shard

    def flaky(entries, **kwargs):
        calls["all"] += 1
        if calls["all"] == 1:
            raise OSError("network share went away")
        return original(entries, **kwargs)

    monkeypatch.setattr(shard, "clean_shard", flaky)
    result = clean_folder(**params(scans, tmp_path / "out", store))
    assert result["ok"] == 12 and calls["all"] == 4  # three shards, one of them twice


def test_dask_runner_and_worker_processes_give_the_same_outputs(scans, tmp_path, store):
    clean_folder(**params(scans, tmp_path / "threads", store))
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": False, "threads_per_worker": 1})
    result = clean_folder.with_options(task_runner=runner)(**params(scans, tmp_path / "dask", store))
    assert result["ok"] == 12
    two = params(scans, tmp_path / "processes", store)
    two["options"] = CleanOptions(device="cpu", processes=2)
    state = clean_folder(**two, return_state=True)  # each shard's task hands its files to a worker process
    assert state.result()["ok"] == 12 and "13 files: 12 ok, 1 error" in state.message
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[state.state_details.flow_run_id])))
    assert sorted(r.name for r in runs if r.name.startswith("clean-shard")) == [f"clean-shard-{i}" for i in range(4)]
    shard_runs = {r.id for r in runs if r.name.startswith("clean-shard")}
    deadline, said = time.time() + 20, []
    while time.time() < deadline and len(said) < 4:  # the workers' log lines reach the tasks' logs
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(
                any_=[state.state_details.flow_run_id])))
        said = [log.message for log in logs if log.task_run_id in shard_runs and " cleaned" in log.message]
        time.sleep(0.5)
    counts = [tuple(map(int, re.fullmatch(r"shard of (\d+) files: (\d+) cleaned", m).groups())) for m in said]
    assert len(counts) == 4 and sum(n for n, _ in counts) == 13 and sum(k for _, k in counts) == 12, said
    threads = read_outputs(tmp_path / "threads")
    assert len(threads) == 12
    for other in ("dask", "processes"):
        outputs = read_outputs(tmp_path / other)
        assert outputs.keys() == threads.keys()
        for rel in threads:
            np.testing.assert_array_equal(threads[rel], outputs[rel])


def test_an_overlapping_run_does_nothing(scans, tmp_path, store):
    out = tmp_path / "out"
    with workdir.folder_lock(out):
        result = clean_folder(**params(scans, out, store))
    assert result["status"] == "busy" and not read_outputs(out)


def test_each_run_joins_the_folder_history_and_doubled_noise_is_flagged(tmp_path, store):
    def write_scans(noise):
        rng = np.random.default_rng(int(noise * 100))
        for i, digit in enumerate(draw_digits(24, seed=5)[0]):
            noisy = np.clip(digit / 255 + noise * rng.standard_normal(digit.shape), 0, 1)
            path = tmp_path / "in" / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(path)

    write_scans(0.15)
    out = tmp_path / "out"
    for _ in range(3):
        state = clean_folder(**params(tmp_path / "in", out, store, overwrite=True), return_state=True)
        assert "drift" not in state.message and state.result()["drift"] == []
    write_scans(0.3)
    state = clean_folder(**params(tmp_path / "in", out, store, overwrite=True), return_state=True)
    assert state.result()["drift"] and "drift: median input noise" in state.message

    runs = pd.read_parquet(out / ".denoiser" / "history.parquet")
    assert len(runs) == 4 and runs["ok"].tolist() == [24] * 4
    assert runs["drift"].notna().tolist() == [False, False, False, True]
    assert runs["noise_in_median"].iloc[3] > 1.5 * runs["noise_in_median"].iloc[:3].max()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in artifacts}
    assert "**drift**" in by_key["trend-out"].data and "data:image/png;base64," in by_key["trend-out"].data
    assert len(json.loads(by_key["trend-out-runs"].data)) == 4


def test_a_run_that_finds_nothing_new_keeps_no_report_and_old_runs_are_pruned(scans, tmp_path, store):
    (scans / "box0" / "broken.png").unlink()
    out = tmp_path / "out"
    work = out / ".denoiser"
    first = clean_folder(**params(scans, out, store))
    nothing = clean_folder(**params(scans, out, store))
    assert (first["ok"], nothing["skipped"], nothing["report"]) == (12, 12, None)
    assert [p.stem for p in (work / "reports").glob("*.parquet")] == [first["run_id"]]
    assert not (work / "runs" / nothing["run_id"]).exists()  # no shard files either
    runs = pd.read_parquet(work / "history.parquet")  # but the run is in the history
    assert runs["run_id"].tolist() == [first["run_id"], nothing["run_id"]] and runs["skipped"].tolist() == [0, 12]

    later = [clean_folder(**params(scans, out, store, overwrite=True, keep_runs=2))["run_id"] for _ in range(3)]
    assert sorted(p.stem for p in (work / "reports").glob("*.parquet")) == sorted(later[1:])
    assert sorted(p.name for p in (work / "runs").iterdir()) == sorted(later[1:])
    assert pd.read_parquet(work / "history.parquet")["run_id"].tolist() == later[1:]
    assert len(read_outputs(out)) == 12  # retention never touches the outputs


def test_a_store_with_a_shape_model_flags_by_shape_in_the_run(scans, tmp_path, trained_store):
    import shutil

    from denoiser.checks import shapes
    from denoiser.training import shapes as shape_training
    from tests.helpers import typed

    models = tmp_path / "models"
    shutil.copytree(trained_store, models)  # a trained model: an untrained one's grey outputs are flagged by tone
    images, labels = typed(300, "0123456789", seed=0)
    model = shape_training.train_shapes(images, labels, epochs=1, held_out=60)
    model.net.threshold.fill_(-1.0)  # every judged scan is unlike a digit: the plumbing shows
    weights = shapes.save_shapes(model, models, f"digit-shapes-v{shapes.VERSION}-test")
    # No MNIST to calibrate with (an empty folder, never downloaded): the run goes on with the
    # threshold the model has, and says so in its log.
    result = clean_folder(**params(scans, tmp_path / "out", models, model="unet-tiny",
                                   data_dir=str(tmp_path / "no-mnist")))
    frame = pd.read_parquet(result["report"])
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == 12
    assert ok["ood_reason"].fillna("").str.startswith(("not a digit's shape", "blank", "noise", "tones")).all()
    assert ok["ood_reason"].fillna("").str.startswith("not a digit's shape").any()
    assert shapes.load_shapes(weights).calibrated_for("unet-tiny") is None
    assert not (tmp_path / "no-mnist").exists() or not any((tmp_path / "no-mnist").iterdir())  # nothing fetched


def test_a_ctrl_c_that_prefect_caught_still_stops_the_run_before_any_shard_starts(scans, tmp_path, store):
    """SIGINT in CI once reached Prefect's event machinery, which caught it, and the run went on
    to the end. The CLI's handler also sets interrupt.requested: shards not yet started do
    nothing and the flow stops itself before the report."""
    from flows import interrupt

    interrupt.requested.set()  # as the handler leaves it when the KeyboardInterrupt was lost
    try:
        with pytest.raises(KeyboardInterrupt):
            clean_folder(**params(scans, tmp_path / "out", store))
    finally:
        interrupt.requested.clear()
    assert read_outputs(tmp_path / "out") == {}
    assert not list((tmp_path / "out" / ".denoiser").rglob("*.parquet"))  # no report, no shard rows


def test_the_quality_table_says_unknown_where_no_scan_had_paper_to_measure_noise_on():
    from flows.clean_artifacts import quality_table

    table = quality_table(pd.DataFrame({"psnr_est": [20.0, 21.0, 22.0], "noise_level": [np.nan] * 3}))
    assert "| noise level (model's look) | unknown | unknown | unknown |" in table
    assert "| estimated PSNR (dB) | 20.20 | 21.00 | 21.80 |" in table
    some = quality_table(pd.DataFrame({"psnr_est": [20.0, 21.0, 22.0], "noise_level": [0.1, np.nan, 0.3]}))
    assert "| noise level (model's look) | 0.12 | 0.20 | 0.28 |" in some  # the unknown one left out
