import math

import numpy as np
import pytest
import torch

from denoiser.models import recipe
from denoiser.models.recipe import TrainConfig, model_id_for
from denoiser.training.loop import train
from denoiser.training.schedule import Schedule
from tests.helpers import draw_digits


def planned_cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def test_without_a_budget_the_rate_is_the_planned_cosine():
    schedule = Schedule("cosine", 100)
    assert [schedule.factor(s) for s in range(101)] == [planned_cosine(s, 100) for s in range(101)]
    assert not schedule.replan(50, 1e9) and schedule.end == 100
    assert Schedule("constant", 10).factor(7) == 1.0


def test_a_run_on_pace_is_not_changed():
    schedule = Schedule("cosine", 100, budget_seconds=100.0)
    assert not schedule.replan(20, 19.0)  # 0.95 s a step: 95 s for the whole run
    assert schedule.end == 100 and schedule.factor(30) == planned_cosine(30, 100)


def test_a_slow_run_is_shortened_to_fit_and_still_anneals_smoothly():
    schedule = Schedule("cosine", 100, budget_seconds=100.0)
    before = schedule.factor(20)
    assert schedule.replan(20, 40.0)  # 2 s a step: 200 s planned, 30 more steps fit
    assert schedule.end == 50 < schedule.planned_steps
    rates = [schedule.factor(s) for s in range(20, 51)]
    assert rates[0] == pytest.approx(before)  # no jump where the plan changed
    assert all(a > b for a, b in zip(rates, rates[1:], strict=False))
    assert rates[-1] == 0.0 and schedule.factor(49) < 0.01
    # Slower still later on: shortened again, from where it is.
    at_40 = schedule.factor(40)
    assert schedule.replan(40, 95.0) and schedule.end == 42
    assert schedule.factor(40) == pytest.approx(at_40) and schedule.factor(42) == 0.0


def test_a_run_whose_pace_picks_up_is_lengthened_back_but_never_past_the_plan():
    schedule = Schedule("cosine", 1000, budget_seconds=1000.0)
    assert schedule.replan(100, 150.0) < 0  # a slow first epoch: 1.5 s a step
    assert schedule.end == 100 + 566
    at_200 = schedule.factor(200)
    assert schedule.replan(200, 298.0) == 0  # 1.49 s a step: 5 steps later, not worth moving
    assert schedule.replan(200, 180.0) > 0  # 0.9 s a step: 911 more steps would fit
    assert schedule.end == 1000 and schedule.factor(200) == pytest.approx(at_200)
    assert schedule.factor(999) < 0.001 and schedule.factor(1000) == 0.0


def test_the_budget_ends_training_annealed_and_records_the_steps():
    digits = draw_digits(160, seed=3)[0]
    config = TrainConfig(model="conv", epochs=4, batch_size=16, max_minutes=1e-6)
    result = train(digits, config, device=torch.device("cpu"), show_progress=False)
    # The budget is checked from the second epoch on: it ends there, inside the epoch.
    assert len(result.history) == 2 and result.steps < result.planned_steps == 4 * 9
    assert result.steps < 2 * 9
    assert math.isfinite(result.history[-1].val_psnr)


def test_a_budget_that_is_not_reached_leaves_the_weights_unchanged():
    digits = draw_digits(96, seed=4)[0]
    config = TrainConfig(model="conv", epochs=2, batch_size=32, max_minutes=None)
    plain = train(digits, config, device=torch.device("cpu"), show_progress=False)
    budgeted = train(digits, TrainConfig(**{**config.to_dict(), "max_minutes": 60.0}),
                     device=torch.device("cpu"), show_progress=False)
    assert budgeted.steps == plain.steps == plain.planned_steps
    for name, value in plain.model.state_dict().items():
        assert torch.equal(value, budgeted.model.state_dict()[name]), name


def test_recipes_without_a_budget_keep_their_model_ids():
    # Ids from before budgets existed: the tutorial's model is not retrained.
    assert model_id_for(TrainConfig.recipe("conv"), "data1") == "conv-89277d62213e"
    # The scan model's id is the one from before budgets with the scan pairs' version added
    # (version 1, unet-3eae70e2060a, had none): only the tone map's change retrains it.
    assert model_id_for(TrainConfig.recipe("unet", noise="scan"), "data1") == "unet-3d6f9858c2fc"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(recipe, "SCAN_PAIRS_VERSION", 1)
        assert model_id_for(TrainConfig.recipe("unet", noise="scan"), "data1") == "unet-3eae70e2060a"
    assert "max_minutes" not in TrainConfig.recipe("conv").to_dict()
    # The default recipe has one, and a user can lift it (0) or change it.
    assert TrainConfig.recipe("unet").max_minutes == 14.5
    assert TrainConfig.recipe("unet", max_minutes=0).max_minutes is None
    assert TrainConfig.recipe("unet", max_minutes=30).max_minutes == 30
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        TrainConfig(max_minutes=-1)


def test_a_model_the_budget_cut_short_is_never_served_as_the_recipes(tmp_path):
    from denoiser.data.mnist import array_digest
    from denoiser.models import checkpoint
    from denoiser.models.recipe import cut_short_id
    from denoiser.pipeline import train_stage

    digits = draw_digits(160, seed=3)[0]
    np.save(tmp_path / "train.npy", digits)
    budgeted = TrainConfig(model="conv", epochs=4, batch_size=16, max_minutes=1e-6)
    kwargs = dict(train_images=str(tmp_path / "train.npy"), train_sha256=array_digest(digits),
                  models_dir=tmp_path / "models", device="cpu")
    recipe_id = model_id_for(budgeted, kwargs["train_sha256"])
    # The budget does not name the weights: the same recipe without it has the same id.
    assert recipe_id == model_id_for(TrainConfig(**{**budgeted.to_dict(), "max_minutes": None}), kwargs["train_sha256"])

    cut = train_stage.train_or_load(tmp_path / "run1", config=budgeted, **kwargs)
    assert cut["trained"] and cut["cut_short"] and cut["steps"] < cut["planned_steps"] == 36
    assert cut["model_id"] == cut_short_id(recipe_id, cut["steps"]) == f"{recipe_id}-cut{cut['steps']}"
    assert checkpoint.find_checkpoint(kwargs["models_dir"], recipe_id) is None
    stored = checkpoint.find_checkpoint(kwargs["models_dir"], cut["model_id"]).metadata
    assert stored["cut_short"] and stored["recipe_model_id"] == recipe_id
    # The next run trains the recipe again rather than loading the cut model as the recipe's.
    again = train_stage.train_or_load(tmp_path / "run2", config=budgeted, **kwargs)
    assert again["trained"] and again["cut_short"]
    # Without a budget (--max-train-minutes 0) it trains to its end under the recipe's id,
    # which a budgeted run then loads.
    full = train_stage.train_or_load(tmp_path / "run3", config=TrainConfig(
        **{**budgeted.to_dict(), "max_minutes": None}), **kwargs)
    assert full["trained"] and not full["cut_short"] and full["model_id"] == recipe_id
    loaded = train_stage.train_or_load(tmp_path / "run4", config=budgeted, **kwargs)
    assert not loaded["trained"] and loaded["model_id"] == recipe_id


def test_a_store_from_before_keeps_its_finished_model_and_drops_a_cut_one(tmp_path):
    from denoiser.data.mnist import array_digest
    from denoiser.models import checkpoint
    from denoiser.models.networks import build_model
    from denoiser.pipeline import train_stage

    digits = draw_digits(64, seed=2)[0]
    np.save(tmp_path / "train.npy", digits)
    config = TrainConfig(model="conv", epochs=1, batch_size=32, max_minutes=14.5)
    sha = array_digest(digits)
    legacy = model_id_for(config, sha, legacy=True)
    assert legacy != model_id_for(config, sha)
    kwargs = dict(train_images=str(tmp_path / "train.npy"), train_sha256=sha, config=config,
                  models_dir=tmp_path / "models", device="cpu")
    checkpoint.save_checkpoint(kwargs["models_dir"], legacy, build_model("conv"),
                               {"architecture": "conv", "steps": 1, "planned_steps": 2})
    assert train_stage.train_or_load(tmp_path / "run1", **kwargs)["trained"]  # cut: trained again
    checkpoint.save_checkpoint(kwargs["models_dir"], legacy, build_model("conv"),
                               {"architecture": "conv", "steps": 2, "planned_steps": 2})
    (tmp_path / "models" / f"{model_id_for(config, sha)}.json").unlink()
    loaded = train_stage.train_or_load(tmp_path / "run2", **kwargs)
    assert not loaded["trained"] and loaded["model_id"] == legacy
