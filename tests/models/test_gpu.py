"""CUDA paths: mixed-precision training and CPU loading of GPU-trained weights."""

import numpy as np
import pytest
import torch

from denoiser.models import checkpoint
from denoiser.models.infer import denoise
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.training.loop import train
from tests.helpers import draw_digits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_mixed_precision_training_on_cuda_serves_cpu_users(tmp_path):
    images = draw_digits(320, seed=2)[0]
    config = TrainConfig(model="conv", epochs=3, batch_size=16)
    cuda = torch.device("cuda")
    chosen = resolve_precision("auto", cuda)
    assert chosen.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    result = train(images, config, device=cuda, precision=chosen, show_progress=False)
    assert result.history[-1].train_loss < result.history[0].train_loss
    saved = checkpoint.save_checkpoint(tmp_path, "conv-gpu", result.model, {"architecture": "conv"})
    on_cpu = checkpoint.load_model(saved, device="cpu")
    gpu_out = denoise(result.model, images[:16], device="cuda")
    cpu_out = denoise(on_cpu, images[:16], device="cpu")
    np.testing.assert_allclose(gpu_out, cpu_out, atol=1e-3)
    fast = denoise(result.model, images[:16], device="cuda", precision=chosen)
    np.testing.assert_allclose(fast, cpu_out, atol=0.03)
