import pytest
import torch
from torch.nn import functional as F

from denoiser.models.networks import ConvDAE, DenseAE, build_model, count_parameters


def test_conv_dae_matches_the_seed():
    model = ConvDAE()
    assert count_parameters(model) == 121_281
    x = torch.rand(3, 1, 28, 28)
    h1, h2, code = model.encode(x)
    assert h1.shape == (3, 64, 14, 14) and h2.shape == (3, 64, 7, 7)
    assert code.shape == (3, 32, 4, 4)
    assert model(x).shape == (3, 1, 28, 28)


@pytest.mark.parametrize("size", [(16, 16), (27, 31), (84, 28)])
def test_conv_dae_is_fully_convolutional(size):
    assert ConvDAE()(torch.rand(2, 1, *size)).shape == (2, 1, *size)


@pytest.mark.parametrize("name, hidden, params", [("dense-ae", 64, 784 * 64 + 64 + 64 * 784 + 784),
                                                  ("dense-dae", 32, 784 * 32 + 32 + 32 * 784 + 784)])
def test_dense_baselines(name, hidden, params):
    model = build_model(name)
    assert isinstance(model, DenseAE) and model.encoder.out_features == hidden
    assert count_parameters(model) == params
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 1, 28, 28)
    with pytest.raises(ValueError, match="dense models take 28x28"):
        model(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("name", ["unet", "conv", "dense-ae", "dense-dae"])
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.rand(4, 1, 28, 28)
    F.binary_cross_entropy_with_logits(model(x), x).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_unknown_model_name():
    with pytest.raises(ValueError, match="unknown model 'resnet'; choose one of unet, conv"):
        build_model("resnet")


def test_unet_keeps_any_size():
    model = build_model("unet")
    assert model(torch.rand(2, 1, 30, 45)).shape == (2, 1, 30, 45)
