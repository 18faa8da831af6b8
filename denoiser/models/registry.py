"""Which stored model each use runs by default, and the quality gate to become it.

The model store (:mod:`denoiser.models.checkpoint`) holds any number of models; ``defaults.json``
beside them names the one *promoted* for each use:

========  ==================================================================================
``clean`` what ``denoiser clean`` uses without ``--model``; scored on the scan test set
          (:mod:`denoiser.evaluation.scanset`): mean PSNR over its kinds, cleaned as ``clean`` cleans
``run``   the MNIST pipeline's reference; scored on MNIST test with the tutorial's noise
========  ==================================================================================

With nothing promoted for ``clean``, the cleaner takes the scan recipe's model
(:func:`recipe_model`) and trains it if absent. No choice ever depends on which model is
newest: a smoke run or an experiment in the store changes nothing until it is promoted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from denoiser.choices import USES
from denoiser.files import read_json, write_json
from denoiser.models import checkpoint
from denoiser.models.recipe import TrainConfig, recipe_versions

log = logging.getLogger(__name__)

#: The recipe whose model ``clean`` uses when nothing is promoted for it.
CLEAN_RECIPE = TrainConfig.recipe("unet", noise="scan")


class PromotionRefused(ValueError):
    """A candidate that scores below the current default for that use."""


@dataclass(frozen=True)
class Choice:
    """The model a command uses, and why (for the logs, the report and the UI)."""

    checkpoint: checkpoint.Checkpoint | None  # None: the recipe's model must be trained first
    reason: str  # "named", "promoted" or "recipe"
    rerun: bool  # whether files cleaned by another model are cleaned again with this one

    @property
    def model_id(self) -> str | None:
        return None if self.checkpoint is None else self.checkpoint.model_id

    def describe(self) -> str:
        what = {"named": "named by the user", "promoted": "promoted as the default for clean",
                "recipe": "the scan recipe's model (nothing promoted for clean)"}[self.reason]
        return f"{self.model_id or CLEAN_RECIPE.model + ' (to be trained)'}: {what}"


def _defaults_path(models_dir: str | os.PathLike[str]) -> Path:
    return Path(models_dir) / "defaults.json"


def read_defaults(models_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """``{use: {"model_id", "score", "promoted_at", "forced"}}`` for the promoted uses."""
    path = _defaults_path(models_dir)
    if not path.is_file():
        return {}
    try:
        found = read_json(path)
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error}); fix or delete it") from None
    return {use: entry for use, entry in found.items() if use in USES and isinstance(entry, dict)}


def promoted(models_dir: str | os.PathLike[str], use: str) -> checkpoint.Checkpoint | None:
    """The checkpoint promoted for ``use``, or None."""
    entry = read_defaults(models_dir).get(use)
    if entry is None:
        return None
    found = checkpoint.find_checkpoint(models_dir, entry["model_id"])
    if found is None:
        raise FileNotFoundError(f"model {entry['model_id']}, promoted for {use}, is missing from "
                                f"{models_dir}; promote another one or delete {_defaults_path(models_dir)}")
    return found


def recipe_model(models_dir: str | os.PathLike[str],
                 config: TrainConfig = CLEAN_RECIPE) -> checkpoint.Checkpoint | None:
    """The stored model trained with exactly ``config`` by this code (:func:`recipe_versions`;
    the oldest, if several datasets gave several), or None."""
    wanted, versions = config.to_dict(), recipe_versions(config)
    for found in checkpoint.list_checkpoints(models_dir):
        meta = found.metadata
        # A model stored before a version existed was made by that version's 1.
        if meta.get("config") == wanted and all(meta.get(k, 1) == v for k, v in versions.items()):
            return found
    return None


def choose_clean_model(reference: str | None, models_dir: str | os.PathLike[str]) -> Choice:
    """The model ``clean`` uses: the one named, else the one promoted for clean, else the
    scan recipe's (``checkpoint`` None when it has yet to be trained).

    Files cleaned earlier by another model are cleaned again only for a named or promoted
    model: a deliberate choice, never a side effect of what else is in the store.
    """
    if reference:
        return Choice(checkpoint.resolve_checkpoint(reference, models_dir), "named", rerun=True)
    found = promoted(models_dir, "clean")
    if found is not None:
        return Choice(found, "promoted", rerun=True)
    return Choice(recipe_model(models_dir), "recipe", rerun=False)


def promote(models_dir: str | os.PathLike[str], model_id: str, use: str, *,
            score: Callable[[str], float], force: bool = False) -> dict[str, Any]:
    """Make ``model_id`` the default for ``use`` if it scores at least as well as the current
    default (:func:`current_default`; ``score(model_id)``: higher is better).

    Raises :class:`PromotionRefused` with both scores otherwise, unless ``force``; the entry
    written (and returned) then says ``"forced": true``.
    """
    if use not in USES:
        raise ValueError(f"unknown use {use!r}; choose one of {', '.join(USES)}")
    candidate = checkpoint.resolve_checkpoint(model_id, models_dir)
    defaults = read_defaults(models_dir)
    current = current_default(models_dir, use)
    new_score = score(candidate.model_id)
    below = False
    if current is not None and current.model_id != candidate.model_id:
        old_score = score(current.model_id)
        below = new_score < old_score
        if below and not force:
            raise PromotionRefused(
                f"{candidate.model_id} scores {new_score:.2f} dB on the {use} evaluation, below the "
                f"current default {current.model_id} at {old_score:.2f} dB; not promoted "
                "(--force overrides)")
    entry = {"model_id": candidate.model_id, "score": round(new_score, 4),
             "promoted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "forced": below}
    write_json(_defaults_path(models_dir), {**defaults, use: entry})
    return entry


def current_default(models_dir: str | os.PathLike[str], use: str) -> checkpoint.Checkpoint | None:
    """What ``use`` runs today without a model named: the promoted model, else (for clean)
    the scan recipe's model if it is stored."""
    found = promoted(models_dir, use) if use in read_defaults(models_dir) else None
    if found is None and use == "clean":
        found = recipe_model(models_dir)
    return found


def defaults_for(models_dir: str | os.PathLike[str], model_id: str) -> list[str]:
    """The uses ``model_id`` is promoted for."""
    return [use for use, entry in read_defaults(models_dir).items() if entry["model_id"] == model_id]


TRAINING_LOCK = ".training.lock"


@contextlib.contextmanager
def training_lock(models_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the store's training lock (a ``flock`` on ``models_dir/.training.lock``): one
    process at a time trains the default models into a store, and another waits for it (two
    workers whose first scheduled runs found no model trained it twice at once). The lock goes
    with the process, however it ends."""
    Path(models_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(models_dir) / TRAINING_LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is training the default models into %s: waiting for it to finish", models_dir)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
