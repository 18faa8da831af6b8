"""Which models there are and how each is trained: the recipes, :class:`TrainConfig`, and the
model id that names a trained model in the store.

Each model has a recipe (:data:`RECIPES`): the tutorial's for ``conv`` and the dense baselines
(Adam 1e-3, BCE on logits, batch 128, 10 epochs, constant rate), and the one chosen by
measurement for the default ``unet`` (see the README's evaluation section). Plain Python, so
the command line checks options without importing torch; :mod:`denoiser.training.loop` trains.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from denoiser.noise.spec import DEFAULT_NOISE, NoiseSpec

# Bump when a change to the code changes the weights every recipe produces; it is part of the
# model id, so stale checkpoints are not reused.
RECIPE_VERSION = 5
# Bump when a change alters only how the scan recipes' training pairs are made (the scan
# degradations, the tone map the noisy side goes through): part of the id of models trained
# on scan noise alone, so the tutorial's and the MNIST models are not trained again for it.
# 2: the tone map reads polarity in the scan's middle, where tail and mass agree (2026-12-07).
SCAN_PAIRS_VERSION = 2

DEFAULT_MODEL = "unet"
LOSSES = ("bce", "mse", "l1")
SCHEDULES = ("constant", "cosine")
_TUTORIAL_RECIPE = dict(epochs=10, batch_size=128, learning_rate=1e-3, loss="bce", schedule="constant",
                    keep_best=False, max_minutes=None)
# Per-model defaults for the options a user does not set.
RECIPES: dict[str, dict] = {
    "unet": dict(epochs=8, batch_size=128, learning_rate=2e-3, loss="bce", schedule="cosine",
                 keep_best=True, max_minutes=14.5),
    "conv": _TUTORIAL_RECIPE,
    "dense-ae": _TUTORIAL_RECIPE,
    "dense-dae": _TUTORIAL_RECIPE,
}
MODEL_NAMES = tuple(RECIPES)  # built by denoiser.models.networks.build_model
# Recipes for realistic scan degradations (``--noise scan``), where they differ. A scan batch
# costs about 1.3x a plain one (larger scales, the degradations), and the recipe must
# train in 15 minutes on 2 CPU cores.
SCAN_RECIPES: dict[str, dict] = {
    "unet": dict(RECIPES["unet"], epochs=4, max_minutes=None),
}
#: Where the model trains in bf16 autocast (chosen because it measured faster on the machine),
#: the same 15 minutes buy more epochs, and more, smaller steps. Measured with ``python -m
#: bench.recipe`` on a 2-core AMD EPYC: 8 epochs in bf16 20.77 dB (float32: 20.80), 14 epochs
#: 21.08 dB in 12.7 minutes, 16 epochs 21.15 dB in 14.5 minutes (too close to the budget with
#: the rest of a run); 14 epochs at batch 64 21.29 dB in 13.1 minutes (the images/s hold);
#: 13 epochs at batch 32 21.35 dB in 13.5 minutes (14 at batch 32: 21.36 in 14.0; batch 64 at
#: a rate of 3e-3 instead of 2e-3: 21.27).
#: The recipe's 14.5-minute budget (``max_minutes``) is for the days a VM runs slower: one
#: fresh run at 718-850 images/s took 15.8 minutes for these 13 epochs.
BF16_RECIPES: dict[str, dict] = {"unet": dict(epochs=13, batch_size=32)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines the trained weights (with the data and RECIPE_VERSION).

    The field defaults are the default model's recipe (``TrainConfig() ==
    TrainConfig.recipe(DEFAULT_MODEL)``); :meth:`recipe` gives any model's own recipe, the
    tutorial's for ``conv``.
    """

    model: str = DEFAULT_MODEL
    noise: str = DEFAULT_NOISE
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 2e-3
    loss: str = "bce"  # on the sigmoid output against the clean image
    schedule: str = "cosine"  # or "constant"; cosine decays the rate to 0 over the run
    keep_best: bool = True  # end with the weights of the epoch with the best validation PSNR
    val_fraction: float = 0.1
    train_limit: int | None = None
    seed: int = 0
    # A time budget: the run ends annealed within it when the epochs would take longer
    # (denoiser.training.schedule); None: the epochs decide alone.
    max_minutes: float | None = 14.5

    @classmethod
    def recipe(cls, model: str = DEFAULT_MODEL, *, bf16: bool = False, **overrides: object) -> TrainConfig:
        """``model``'s recipe, with the ``overrides`` that are not None; ``bf16``: the model will
        train in bf16 autocast, which buys some models more steps (:data:`BF16_RECIPES`)."""
        if model not in RECIPES:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
        chosen = {k: v for k, v in overrides.items() if v is not None}
        if chosen.get("max_minutes") == 0:  # the user's "no limit"
            chosen["max_minutes"] = None
        base = RECIPES[model]
        if NoiseSpec.parse(str(chosen.get("noise", DEFAULT_NOISE))).kind == "scan":
            base = SCAN_RECIPES.get(model, base)
        elif bf16 and model in BF16_RECIPES:
            base = {**base, **BF16_RECIPES[model]}
        return cls(model=model, **{**base, **chosen})

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_NAMES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}")
        object.__setattr__(self, "noise", str(NoiseSpec.parse(self.noise)))
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0 (or unset), got {self.max_minutes}")
        if self.train_limit is not None and self.train_limit < 2:
            raise ValueError(f"train_limit must be >= 2 (or unset), got {self.train_limit}")

    def to_dict(self) -> dict:
        """The fields, without a time budget that is not set: a config from before budgets
        existed reads the same, and so keeps its model id."""
        fields = asdict(self)
        if fields["max_minutes"] is None:
            del fields["max_minutes"]
        return fields


def recipe_versions(config: TrainConfig) -> dict[str, int]:
    """The code versions a model trained with ``config`` depends on, as its metadata records
    them: :data:`RECIPE_VERSION`, and :data:`SCAN_PAIRS_VERSION` for scan noise."""
    versions = {"recipe_version": RECIPE_VERSION}
    if NoiseSpec.parse(config.noise).kind == "scan":
        versions["scan_pairs_version"] = SCAN_PAIRS_VERSION
    return versions


def model_id_for(config: TrainConfig, data_checksum: str, *, legacy: bool = False) -> str:
    """``<model>-<12 hex>``: a digest of the config, the data checksum and the code versions
    (:func:`recipe_versions`). The device is not part of it: a model trained on a GPU serves
    CPU users and the other way round. Nor is the time budget: a run the budget did not cut gives the
    weights of a run without one, and a run it cut is stored under :func:`cut_short_id`.
    ``legacy``: the id stores wrote before that (the budget in the digest)."""
    fields = config.to_dict()
    if not legacy:
        fields.pop("max_minutes", None)
    versions = recipe_versions(config)
    recipe = {"config": fields, "data": data_checksum, "recipe": versions["recipe_version"]}
    if versions.get("scan_pairs_version", 1) > 1:  # absent at 1: the ids stores hold from before
        recipe["scan_pairs"] = versions["scan_pairs_version"]
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{config.model}-{digest[:12]}"


def cut_short_id(model_id: str, steps: int) -> str:
    """The id of a model whose training the time budget ended after ``steps`` of the recipe's
    steps: never the recipe's own id, so nothing asking for the recipe is served it."""
    return f"{model_id}-cut{steps}"


def finished(metadata: dict) -> bool:
    """Whether a stored model trained every step its recipe planned (models stored before
    budgets existed record no plan, and trained all their epochs)."""
    planned = metadata.get("planned_steps")
    return planned is None or int(metadata.get("steps", planned)) >= int(planned)
