"""The default model per use: promotion behind a quality gate, and what clean picks."""


import pytest
import torch

from denoiser.evaluation import promotion
from denoiser.models import checkpoint, registry
from denoiser.models.networks import ConvDAE, UNet
from denoiser.models.recipe import recipe_versions


def scorer(store, idx_dir, tmp_path, use="run"):
    folder, _ = idx_dir

    def score(model_id: str) -> float:
        return promotion.use_score(tmp_path / "scores", model_id, use, data_dir=str(folder), dataset="idx",
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
            **recipe_versions(registry.CLEAN_RECIPE)}  # as the trainer writes it
    # A scan model whose training pairs an older tone map made is not the recipe's.
    older = {**meta, "scan_pairs_version": meta["scan_pairs_version"] - 1}
    checkpoint.save_checkpoint(two_models, "unet-olderpairs", UNet(), older)
    assert registry.recipe_model(two_models) is None
    checkpoint.save_checkpoint(two_models, "unet-scanrecipe", UNet(), meta)
    found = registry.recipe_model(two_models)
    assert found is not None and found.model_id == "unet-scanrecipe"
    chosen = registry.choose_clean_model(None, two_models)
    assert chosen.model_id == "unet-scanrecipe" and chosen.reason == "recipe" and not chosen.rerun




def test_a_run_that_finds_the_default_being_trained_waits_and_uses_it(untrained, tmp_path):
    """Two workers' first runs on an empty store: the second waits on the store's training lock
    and, once the first has stored the model, cleans with it instead of training again."""
    import threading

    from denoiser.folders.model_choice import choose_for_clean
    from denoiser.folders.settings import CleanOptions, CleanRun

    store = tmp_path / "models"
    chosen = {}
    with registry.training_lock(store):  # the first run, training
        waiting = threading.Thread(target=lambda: chosen.update(found=choose_for_clean(
            CleanRun(models_dir=str(store), data_dir=str(tmp_path / "no-mnist")), CleanOptions(device="cpu"))))
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not chosen  # it waits rather than training a second copy
        checkpoint.save_checkpoint(store, "conv-test", checkpoint.load_model(untrained), dict(untrained.metadata))
        registry.promote(store, "conv-test", "clean", score=lambda _: 0.0)
    waiting.join(timeout=60)
    assert not waiting.is_alive() and chosen["found"].model_id == "conv-test"


def test_adapting_on_a_store_whose_default_is_being_trained_waits_and_adapts_that_model(untrained, tmp_path):
    """`denoiser adapt` with no model to start from takes the store's training lock as `clean`
    does: it waits for the run training the default and adapts the model that run stored."""
    import threading

    from denoiser.folders.model_choice import model_to_adapt

    store = tmp_path / "models"
    chosen = {}
    with registry.training_lock(store):
        waiting = threading.Thread(target=lambda: chosen.update(found=model_to_adapt(
            str(store), None, runs_dir=str(tmp_path / "runs"), data_dir=str(tmp_path / "no-mnist"), device="cpu")))
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not chosen
        checkpoint.save_checkpoint(store, "conv-test", checkpoint.load_model(untrained), dict(untrained.metadata))
        registry.promote(store, "conv-test", "clean", score=lambda _: 0.0)
    waiting.join(timeout=60)
    assert not waiting.is_alive() and chosen["found"].model_id == "conv-test"
    # A named parent is taken as it is, whatever the store's default.
    named = model_to_adapt(str(store), str(untrained.weights), runs_dir=str(tmp_path / "runs"), device="cpu")
    assert named.weights == untrained.weights
