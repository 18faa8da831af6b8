"""The default model per use: promotion behind a quality gate, and what clean picks."""

import shutil

import pytest
import torch

from denoiser import checkpoint, evaluate, registry
from denoiser.model import ConvDAE, UNet
from denoiser.recipe import RECIPE_VERSION
from tests.helpers import denoiser


@pytest.fixture
def two_models(trained_store, tmp_path):
    """A store with the tiny trained U-Net and an untrained conv DAE (newer)."""
    store = tmp_path / "models"
    shutil.copytree(trained_store, store)
    torch.manual_seed(0)
    checkpoint.save_checkpoint(store, "conv-untrained", ConvDAE(), {"architecture": "conv"})
    return store


def scorer(store, idx_dir, tmp_path, use="run"):
    folder, _ = idx_dir

    def score(model_id: str) -> float:
        return evaluate.use_score(tmp_path / "scores", model_id, use, data_dir=str(folder), dataset="idx",
                                  models_dir=store, limit=16, device="cpu")
    return score


def test_a_worse_model_is_refused_with_both_scores_and_force_overrides(two_models, idx_dir, tmp_path):
    score = scorer(two_models, idx_dir, tmp_path)
    entry = registry.promote(two_models, "unet-tiny", "run", score=score)
    assert entry["model_id"] == "unet-tiny" and not entry["forced"]
    good, bad = score("unet-tiny"), score("conv-untrained")
    assert good > bad
    with pytest.raises(registry.PromotionRefused) as refused:
        registry.promote(two_models, "conv-untrained", "run", score=score)
    assert f"{bad:.2f}" in str(refused.value) and f"{good:.2f}" in str(refused.value)
    assert registry.read_defaults(two_models)["run"]["model_id"] == "unet-tiny"
    forced = registry.promote(two_models, "conv-untrained", "run", score=score, force=True)
    assert forced["forced"] and registry.read_defaults(two_models)["run"]["model_id"] == "conv-untrained"
    assert registry.defaults_for(two_models, "conv-untrained") == ["run"]


def test_clean_uses_the_promoted_model_never_the_newest(two_models):
    nothing = registry.choose_clean_model(None, two_models)
    assert nothing.checkpoint is None and nothing.reason == "recipe" and not nothing.rerun
    registry.promote(two_models, "unet-tiny", "clean", score=lambda _: 1.0)
    torch.manual_seed(1)
    checkpoint.save_checkpoint(two_models, "conv-newest", ConvDAE(), {"architecture": "conv"})
    chosen = registry.choose_clean_model(None, two_models)
    assert chosen.model_id == "unet-tiny" and chosen.reason == "promoted" and chosen.rerun
    named = registry.choose_clean_model("conv-newest", two_models)
    assert named.model_id == "conv-newest" and named.reason == "named"


def test_the_scan_recipe_model_is_the_clean_fallback(two_models):
    meta = {"architecture": "unet", "config": registry.CLEAN_RECIPE.to_dict(), "tone_headroom": 1.25,
            "recipe_version": RECIPE_VERSION}  # as the trainer writes it
    checkpoint.save_checkpoint(two_models, "unet-scanrecipe", UNet(), meta)
    found = registry.recipe_model(two_models)
    assert found is not None and found.model_id == "unet-scanrecipe"
    assert found.metadata["recipe_version"] == RECIPE_VERSION
    chosen = registry.choose_clean_model(None, two_models)
    assert chosen.model_id == "unet-scanrecipe" and chosen.reason == "recipe" and not chosen.rerun


def test_models_command_lists_promotes_and_refuses(two_models, idx_dir, tmp_path):
    folder, _ = idx_dir
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    base = ["--models-dir", str(two_models)]
    promote = ["models", "promote", "--for", "run", "--limit", "16", "--data-dir", str(folder),
               "--dataset", "idx", "--device", "cpu", *base]
    first = denoiser(*promote[:2], "unet-tiny", *promote[2:], env=env)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "unet-tiny is now the default for run" in first.stdout
    refused = denoiser(*promote[:2], "conv-untrained", *promote[2:], env=env)
    assert refused.returncode == 1 and "below the current default unet-tiny" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    listing = denoiser("models", "list", *base, env=env)
    assert listing.returncode == 0
    line = next(row for row in listing.stdout.splitlines() if row.startswith("unet-tiny"))
    assert line.rstrip().endswith("run")
    shown = denoiser("models", "show", "unet-tiny", *base, env=env)
    assert '"default_for": [\n    "run"\n  ]' in shown.stdout
