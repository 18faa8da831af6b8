"""The ``denoiser`` command as a user runs it: in a subprocess."""


import pandas as pd
import pytest
import torch

from denoiser.models.recipe import BF16_RECIPES, RECIPES
from tests.helpers import denoiser, free_port


def test_help_documents_every_option_with_its_default():
    out = denoiser("run", "--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    for option in ("--data-dir", "--model", "--noise", "--epochs", "--batch-size", "--train-limit",
                   "--test-limit", "--device", "--seed", "--retrain", "--runs-dir", "--loss",
                   "--learning-rate", "--schedule", "--max-train-minutes"):
        assert option in text
    unet = RECIPES["unet"]
    for default in ("(default: gaussian:0.5)",
                    f"(default: the model's recipe: unet {unet['epochs']} ({BF16_RECIPES['unet']['epochs']} in bf16), "
                    "conv 10)",
                    f"(default: the model's recipe: unet {unet['batch_size']} "
                    f"({BF16_RECIPES['unet']['batch_size']} in bf16), conv 128)",
                    f"(default: the model's recipe: unet {unet['loss']}, conv bce)",
                    f"(default: the model's recipe: unet {unet['max_minutes']:g}, conv none)",
                    "(default: unet)", "(default: auto)", "(default: data/runs)"):
        assert default in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--noise", "blur:1"], "unknown noise kind 'blur'"),
        (["--epochs", "0"], "--epochs: 0 must be 1 or more"),
        (["--batch-size", "x"], "'x' is not a whole number"),
        (["--max-train-minutes", "-1"], "--max-train-minutes: -1 must be a number above 0"),
        (["--max-train-minutes", "x"], "--max-train-minutes: 'x' is not a number"),
        (["--model", "resnet"], "invalid choice: 'resnet'"),
        (["--run-id", "../x"], "must be a plain folder name"),
    ],
)
def test_bad_option_values_give_one_line(args, message):
    out = denoiser("run", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_one_line_error():
    out = denoiser("run", "--device", "cuda")
    assert out.returncode == 2 and "no CUDA GPU is available" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_offline_without_data_says_where_to_put_the_files(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/"
    out = denoiser("run", "--epochs", "1", cwd=tmp_path,
                   env={"DENOISER_MNIST_MIRRORS": dead, "DENOISER_MNIST_DIR": ""})
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    last = out.stderr.strip().splitlines()[-1]
    assert "data/mnist" in last and "train-images-idx3-ubyte.gz" in last and "--data-dir" in last


@pytest.mark.slow
def test_run_prints_where_the_report_is(tmp_path, idx_dir, api_env):
    # A run whose time budget ends training early (after its first epoch) says so, and its
    # model is stored apart from the recipe's.
    folder, _ = idx_dir
    out = denoiser("run", "--data-dir", str(folder), "--dataset", "idx", "--epochs", "2",
                   "--batch-size", "16", "--test-limit", "32", "--train-limit", "128", "--device", "cpu",
                   "--run-id", "smoke", "--max-train-minutes", "0.000001",
                   cwd=tmp_path, env={"PREFECT_HOME": str(tmp_path / "prefect"), **api_env})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "report: data/runs/smoke/report.parquet" in out.stdout
    frame = pd.read_parquet(tmp_path / "data/runs/smoke/report.parquet")
    assert len(frame) == 32
    stored = [p.stem for p in (tmp_path / "data/models").glob("unet-*.pt")]
    assert len(stored) == 1 and "-cut" in stored[0]  # the default model, cut short by the budget
    assert "the time budget ended training after" in out.stdout and "--max-train-minutes 0" in out.stdout
    assert f"(model {stored[0]})" in out.stdout


def test_polished_errors_a_new_user_meets(tmp_path):
    typo = tmp_path / "no-such-folder"
    out = denoiser("run", "--data-dir", str(typo), "--epochs", "1")
    assert out.returncode == 1 and "does not exist" in out.stderr and not typo.exists()
    (tmp_path / "in").mkdir()
    out = denoiser("serve", str(tmp_path / "in"), str(tmp_path / "out"), "--cron", "bad",
                   env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a cron expression" in out.stderr
    out = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--model", "missing/model.pt")
    assert out.returncode == 1 and "missing/model.pt: no such checkpoint file" in out.stderr
    run_help = " ".join(denoiser("run", "--help").stdout.split())
    assert "(default: 0)" in run_help  # --seed's default is shown
    evaluate_help = " ".join(denoiser("evaluate", "--help").stdout.split())
    assert "(default: gaussian,median,tv,wavelet,nlmeans)" in evaluate_help
    assert "(default: gaussian:0.5)" in evaluate_help and "['" not in evaluate_help  # no Python lists


def test_adapt_refuses_a_missing_or_empty_folder_in_one_line(tmp_path):
    out = denoiser("adapt", str(tmp_path / "nowhere"))
    assert out.returncode == 1 and "does not exist" in out.stderr and out.stderr.count("\n") == 1
    (tmp_path / "empty").mkdir()
    out = denoiser("adapt", str(tmp_path / "empty"))
    assert out.returncode == 2 and "no image files to adapt on" in out.stderr
    out = denoiser("adapt", str(tmp_path / "empty"), "--minutes", "0")
    assert out.returncode == 2 and "--minutes" in out.stderr
