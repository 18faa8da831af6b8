import pytest
import torch

from denoiser.adapt.averaging import WeightAverage


def shift(model: torch.nn.Module, by: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(by)


def values(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_the_average_follows_a_short_run_closely_then_moves_by_the_decay():
    live = torch.nn.Linear(3, 2)
    start = values(live)
    averaged = WeightAverage(live, decay=0.75)
    for _ in range(4):  # the first four steps: the average is the live weights
        shift(live, 1.0)
        averaged.update()
    assert all(torch.allclose(a, s + 4.0) for a, s in zip(averaged.model.parameters(), start, strict=True))
    shift(live, 1.0)
    averaged.update()  # step 5 moves it 4/5 of the way from +4 to +5
    assert all(torch.allclose(a, s + 4.8) for a, s in zip(averaged.model.parameters(), start, strict=True))
    for _ in range(14):
        averaged.update()
    before = values(averaged.model)
    shift(live, 4.0)
    averaged.update()  # step 20: 4/20 would be 0.2, so the decay (a quarter of the way) rules
    for a, b, p in zip(averaged.model.parameters(), before, live.parameters(), strict=True):
        assert torch.allclose(a, b + 0.25 * (p - b))
    assert all(torch.allclose(p, s + 9.0) for p, s in zip(live.parameters(), start, strict=True))
    assert averaged.model is not live


def test_decay_zero_is_the_live_model_itself():
    live = torch.nn.Linear(3, 2)
    averaged = WeightAverage(live, decay=0.0)
    averaged.update()
    assert averaged.model is live
    with pytest.raises(ValueError, match="decay must be in"):
        WeightAverage(live, decay=1.0)
