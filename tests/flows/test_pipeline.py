"""The MNIST flow under a real (test) Prefect API, on a small synthetic dataset."""

import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
    LogFilter,
    LogFilterFlowRunId,
)

from denoiser.files import read_json
from denoiser.pipeline import stages, train_stage
from flows import pipeline, policy


@pytest.fixture
def params(tmp_path, idx_dir):
    folder, _ = idx_dir
    return dict(data_dir=str(folder), dataset="idx", epochs=1, batch_size=16, device="cpu",
                runs_dir=str(tmp_path / "runs"), models_dir=str(tmp_path / "models"),
                retry_delay_seconds=0)


def task_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return runs


def count_calls(monkeypatch, names, fail_first=None, failures=0):
    """Wrap stage functions to count calls; make ``fail_first`` raise ``failures`` times."""
    calls = Counter()
    for name in names:
        module = train_stage if name == "train_or_load" else stages  # where the flow finds it
        original = getattr(module, name)

        def wrapper(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            if _name == fail_first and calls[_name] <= failures:
                raise RuntimeError(f"injected failure {calls[_name]} in {_name}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, wrapper)
    return calls


def test_flow_end_to_end(params):
    state = pipeline.mnist_pipeline(**params, return_state=True)
    assert state.is_completed()
    result = state.result()
    frame = pd.read_parquet(result["report"])
    assert len(frame) == 64
    for column in ("run_id", "image_index", "split", "label", "noise", "noise_seed", "model_id",
                   "mse_noisy", "mse_denoised", "psnr_noisy", "psnr_denoised", "ssim_noisy",
                   "ssim_denoised"):
        assert column in frame.columns
    assert frame["psnr_denoised"].mean() > frame["psnr_noisy"].mean()

    flow_run_id = state.state_details.flow_run_id
    names = {run.name for run in task_runs(flow_run_id)}
    assert names == {"ingest", "synthesize-noise", "train-or-load", "denoise", "write-report"}

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        # Logs reach the API in batches a couple of seconds apart: wait for the epoch line.
        deadline = time.time() + 20
        while True:
            logs = client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any("epoch 1/1" in log.message for log in logs) or time.time() > deadline:
                break
            time.sleep(0.5)
    by_type = {a.type: a for a in artifacts}
    assert set(by_type) >= {"table", "markdown", "progress"}
    assert by_type["progress"].data == 100
    assert "data:image/png;base64," in by_type["markdown"].data
    assert "psnr" in str(by_type["table"].data)
    assert any("epoch 1/1" in log.message and "loss" in log.message for log in logs)


def test_second_run_with_the_same_recipe_loads_the_model(params, monkeypatch):
    first = pipeline.mnist_pipeline(**params)
    calls = count_calls(monkeypatch, ["train_or_load"])
    second = pipeline.mnist_pipeline(**params)
    assert calls["train_or_load"] == 1
    trained = read_json(second["report"].replace("report.parquet", "stages/train_or_load.json"))
    assert trained["trained"] is False
    assert pd.read_parquet(second["report"])["model_id"].iloc[0] == \
        pd.read_parquet(first["report"])["model_id"].iloc[0]


def test_a_stage_that_fails_once_is_retried(params, monkeypatch):
    calls = count_calls(monkeypatch, ["denoise"], fail_first="denoise", failures=1)
    state = pipeline.mnist_pipeline(**params, return_state=True)
    assert state.is_completed()
    assert calls["denoise"] == 2
    denoise_run = [r for r in task_runs(state.state_details.flow_run_id) if r.name == "denoise"]
    assert denoise_run[0].run_count == 2


def test_flow_run_retry_reuses_completed_stages(params, monkeypatch):
    # denoise fails on all its task retries, so the flow run fails and is retried.
    calls = count_calls(monkeypatch, ["ingest", "synthesize_noise", "train_or_load", "denoise"],
                        fail_first="denoise", failures=policy.TASK_RETRIES + 1)
    flow = pipeline.mnist_pipeline.with_options(retries=1, retry_delay_seconds=0)
    state = flow(**params, return_state=True)
    assert state.is_completed()
    assert calls == {"ingest": 1, "synthesize_noise": 1, "train_or_load": 1,
                     "denoise": policy.TASK_RETRIES + 2}
    states = Counter(r.state.name for r in task_runs(state.state_details.flow_run_id))
    assert states["Cached"] == 3


def test_bad_input_is_not_retried(params, tmp_path):
    params["data_dir"] = str(tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    params["dataset"] = "mnist"
    state = pipeline.mnist_pipeline.with_options(retries=0)(**params, return_state=True)
    assert state.is_failed()
    ingest_run = [r for r in task_runs(state.state_details.flow_run_id) if r.name == "ingest"]
    assert ingest_run[0].run_count == 1  # a DataError is not worth a retry


def test_tasks_run_as_plain_functions(tmp_path, idx_dir):
    folder, _ = idx_dir
    result = pipeline.ingest.fn(str(tmp_path / "run"), str(folder), "idx", 10)
    assert result["n_test"] == 10 and result["n_train"] == 512
    noised = pipeline.synthesize_noise.fn(str(tmp_path / "run"), result["test_images"],
                                          "salt-pepper:0.2", 1)
    assert noised["noise"] == "salt-pepper:0.2"


def test_a_replaced_stored_result_is_rejected_not_executed(params, tmp_path, monkeypatch):
    import pickle

    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    # Storage of this test's own: another test's flow, run at the same time by another
    # worker, may store its results in the shared one.
    storage = tmp_path / "prefect-storage"
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: storage}):
        first = pipeline.mnist_pipeline(**params, run_id="resume-me")
    assert not storage.exists() or not any(storage.rglob("*"))  # Prefect kept nothing
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    records = sorted((tmp_path / "runs" / "resume-me" / "stages" / "done").glob("ingest-*.json"))
    assert len(records) == 1
    records[0].write_bytes(pickle.dumps(Payload()))
    calls = count_calls(monkeypatch, ["ingest", "denoise"])
    second = pipeline.mnist_pipeline(**params, run_id="resume-me")
    assert not marker.exists()
    assert (calls["ingest"], calls["denoise"]) == (1, 0)  # the replaced one runs again, the rest are reused
    assert second["report"] == first["report"]


def test_parameters_with_fixed_choices_are_validated_by_prefect():
    from prefect.exceptions import ParameterTypeError

    from flows.clean import clean_folder

    assert pipeline.mnist_pipeline.validate_parameters({"model": "conv", "loss": "mse"})["loss"] == "mse"
    for bad in ({"model": "resnet"}, {"loss": "hinge"}, {"device": "tpu"}, {"dataset": "cifar"}):
        with pytest.raises(ParameterTypeError):
            pipeline.mnist_pipeline.validate_parameters(bad)
    with pytest.raises(ParameterTypeError):
        clean_folder.validate_parameters({"in_dir": "a", "out_dir": "b", "options": {"tones": "sepia"}})


def test_interrupt_stops_the_run_before_the_next_stage(params, monkeypatch):
    """A Ctrl-C that Prefect's machinery caught (the CLI's handler has set interrupt.requested)
    still stops the run: the stage in progress ends, no later stage starts, no report."""
    from flows import interrupt

    calls = count_calls(monkeypatch, ["ingest", "train_or_load"])
    interrupt.requested.set()
    try:
        with pytest.raises(KeyboardInterrupt):
            pipeline.mnist_pipeline(**params, run_id="stopped")
    finally:
        interrupt.requested.clear()
    assert calls == Counter({"ingest": 1})
    assert not list(Path(params["runs_dir"], "stopped").rglob("*.parquet"))
