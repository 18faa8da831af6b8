"""Model bundles as a user moves them: export on one store, clean by URL on a fresh one."""

import hashlib
import os

import numpy as np
import torch
from PIL import Image

from denoiser.models import checkpoint
from denoiser.models.networks import build_model
from tests.helpers import bundle_server, denoiser, draw_digits


def test_a_fresh_store_cleans_with_a_bundle_by_url_without_training(tmp_path, idx_dir, api_env):
    torch.manual_seed(0)
    source = tmp_path / "trained-elsewhere"
    checkpoint.save_checkpoint(source, "unet-0123456789ab", build_model("unet"),
                               {"architecture": "unet", "tone_headroom": 1.25})
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), **api_env}
    exported = denoiser("models", "export", "unet-0123456789ab", "-o", str(tmp_path / "unet.bundle"),
                        "--models-dir", str(source), env=env)
    assert exported.returncode == 0, exported.stderr
    data = (tmp_path / "unet.bundle").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert f"sha256 {digest}" in exported.stdout
    for i, digit in enumerate(draw_digits(5, seed=1)[0]):
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray((255 - digit).astype(np.uint8)).save(tmp_path / "in" / f"scan{i}.png")

    fresh = tmp_path / "fresh-store"
    # Nothing to clean with and no training allowed: one line, before any flow starts.
    refused = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(fresh),
                       "--no-train", env=env)
    assert refused.returncode == 2 and "--no-train was given" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()

    with bundle_server({"unet.bundle": data}) as (base, _):
        cleaned = denoiser("clean", str(tmp_path / "in"), str(tmp_path / "out"), "--models-dir", str(fresh),
                           "--model", f"{base}/unet.bundle#sha256={digest}", "--no-train", env=env)
    assert cleaned.returncode == 0, cleaned.stderr[-2000:]
    assert "5 files: 5 ok" in cleaned.stdout and "model unet-0123456789ab" in cleaned.stdout
    assert "training the scan recipe" not in cleaned.stdout + cleaned.stderr
    assert sorted(p.name for p in fresh.glob("*.pt")) == ["unet-0123456789ab.pt"]  # nothing trained
    assert sorted(os.listdir(tmp_path / "out" / "")) == [".denoiser"] + [f"scan{i}.png" for i in range(5)]

    listing = denoiser("models", "list", "--models-dir", str(fresh), env=env)
    assert "unet-0123456789ab" in listing.stdout
    # An imported model is promoted as a trained one is.
    promoted = denoiser("models", "promote", "unet-0123456789ab", "--for", "run", "--limit", "16", "--data-dir",
                        str(idx_dir[0]), "--dataset", "idx", "--device", "cpu", "--models-dir", str(fresh), env=env)
    assert promoted.returncode == 0 and "unet-0123456789ab is now the default for run" in promoted.stdout, promoted
    broken = tmp_path / "broken.bundle"
    broken.write_bytes(data[: len(data) // 2])
    refused = denoiser("models", "import", str(broken), "--models-dir", str(tmp_path / "third"), env=env)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "broken.bundle: not a model bundle, or truncated" in refused.stderr
    assert not (tmp_path / "third").exists()
