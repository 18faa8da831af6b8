"""The digit-identity check used by the scan evaluation."""

import numpy as np
import torch

from denoiser.evaluation import digits
from denoiser.noise import degrade
from tests.helpers import draw_digits


def test_classifier_finds_its_digits_again_in_any_tone_and_scale():
    images, labels = draw_digits(60, seed=8)
    x = torch.from_numpy(images.astype(np.float32) / 255)
    # References: three slightly noisy copies of each digit, so that the three nearest agree.
    generator = torch.Generator().manual_seed(1)
    copies = [(x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1) for _ in range(3)]
    classifier = digits.NearestNeighbour(torch.cat(copies).numpy(), np.tile(labels, 3))
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert (classifier.predict(noisy.numpy()) == labels[:60]).mean() >= 0.9
    # The same digits as dark, faded ink on grey paper, at 3x: the same answers.
    scans = degrade.render_tone(degrade.resample(x, 3.0), paper=torch.tensor(0.8), ink=torch.tensor(0.5))
    assert (classifier.predict(scans.numpy()) == labels[:60]).mean() >= 0.9
    # Blank pages are not recognised as the digits.
    blank = classifier.predict(np.zeros((60, 28, 28), np.float32))
    assert (blank == labels[:60]).mean() < 0.5
