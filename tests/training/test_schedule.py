import math

import pytest
import torch

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
    # Ids from before budgets existed: the scan model and the tutorial's are not retrained.
    assert model_id_for(TrainConfig.recipe("unet", noise="scan"), "data1") == "unet-3eae70e2060a"
    assert model_id_for(TrainConfig.recipe("conv"), "data1") == "conv-89277d62213e"
    assert "max_minutes" not in TrainConfig.recipe("conv").to_dict()
    # The default recipe has one, and a user can lift it (0) or change it.
    assert TrainConfig.recipe("unet").max_minutes == 14.5
    assert TrainConfig.recipe("unet", max_minutes=0).max_minutes is None
    assert TrainConfig.recipe("unet", max_minutes=30).max_minutes == 30
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        TrainConfig(max_minutes=-1)
