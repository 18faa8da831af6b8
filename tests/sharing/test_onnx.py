"""ONNX export: onnxruntime against PyTorch, and the documented example run as written."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from denoiser.models import checkpoint
from denoiser.models.networks import build_model
from denoiser.scans.restore import prepare_many
from denoiser.sharing.onnx_export import TOLERANCE, export_onnx, largest_difference
from tests.helpers import denoiser, draw_digits

onnxruntime = pytest.importorskip("onnxruntime")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sharing.md"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    torch.manual_seed(0)
    found = checkpoint.save_checkpoint(store, "unet-0123456789ab", build_model("unet"),
                                       {"architecture": "unet", "tone_headroom": 1.25})
    path, difference = export_onnx(store, found.model_id, store / "unet.onnx")
    return found, path, difference


def test_onnxruntime_gives_pytorch_s_outputs_on_random_and_real_scans(exported):
    found, path, difference = exported
    assert difference <= TOLERANCE
    model = checkpoint.load_model(found)
    rng = np.random.default_rng(1)
    # Real: digit scans (dark ink on light paper, noisy) in the model's look, as clean prepares them.
    scans = [np.clip(255 - d + rng.normal(0, 30, d.shape), 0, 255).astype(np.uint8)
             for d in draw_digits(8, seed=2)[0]]
    looks = np.stack([one for one, _ in prepare_many([s / 255 for s in scans], headroom=1.25)])[:, None]
    randoms = [rng.random((4, 1, 32, 32), dtype=np.float32), rng.random((1, 1, 120, 88), dtype=np.float32)]
    assert largest_difference(model, path.read_bytes(), [looks.astype(np.float32), *randoms]) <= TOLERANCE
    meta = onnxruntime.InferenceSession(str(path)).get_modelmeta().custom_metadata_map
    assert meta["denoiser_model_id"] == found.model_id and float(meta["tone_headroom"]) == 1.25


def test_the_documented_example_runs_with_onnxruntime_alone(exported, tmp_path, monkeypatch):
    _, path, _ = exported
    code = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.S)[1]
    assert "import torch" not in code and "denoiser" not in code
    scan = (255 - draw_digits(1, seed=5)[0][0]).astype(np.uint8)
    Image.fromarray(scan).save(tmp_path / "digit.png")
    (tmp_path / "unet.onnx").symlink_to(path)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(DOCS), "exec"), {})  # noqa: S102 - our own docs' example
    out = np.asarray(Image.open(tmp_path / "digit-clean.png"))
    assert out.shape == scan.shape and out.dtype == np.uint8


def test_export_from_the_command_line(exported, tmp_path):
    found, _, _ = exported
    done = denoiser("models", "export", found.model_id, "--format", "onnx", "-o", str(tmp_path / "m.onnx"),
                    "--models-dir", str(found.weights.parent))
    assert done.returncode == 0, done.stderr
    assert "checked against PyTorch: largest difference" in done.stdout and (tmp_path / "m.onnx").is_file()
