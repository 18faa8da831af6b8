"""The model store: a checkpoint is ``<model_id>.pt`` (a state_dict) + ``<model_id>.json``.

The model id is derived from everything that determines the weights
(:func:`denoiser.models.recipe.model_id_for`); the store takes it as given and depends on nothing
above it.

The ``.json`` is written last, so a checkpoint without one is incomplete and ignored.
Weights are loaded with ``torch.load(weights_only=True)``: no pickled code runs.
"""

from __future__ import annotations

import os
import pickle
import platform
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from denoiser import __version__
from denoiser.files import atomic_path, read_json, write_json
from denoiser.models.networks import build_model, count_parameters


class CheckpointError(ValueError):
    """A file in the store, or given as a model, that is not a usable checkpoint."""


@dataclass(frozen=True)
class Checkpoint:
    model_id: str
    weights: Path
    metadata: dict[str, Any]


def library_versions() -> dict[str, str]:
    return {
        "denoiser": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(
    models_dir: str | os.PathLike[str],
    model_id: str,
    model: torch.nn.Module,
    metadata: dict[str, Any],
) -> Checkpoint:
    """Write the weights, then the metadata; each atomically."""
    models_dir = Path(models_dir)
    weights = models_dir / f"{model_id}.pt"
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    with atomic_path(weights) as tmp:
        torch.save(state, tmp)
    meta = {
        "model_id": model_id,
        "parameters": count_parameters(model),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
        **metadata,
    }
    write_json(models_dir / f"{model_id}.json", meta)
    return Checkpoint(model_id, weights, meta)


def find_checkpoint(models_dir: str | os.PathLike[str], model_id: str) -> Checkpoint | None:
    """The complete checkpoint ``model_id`` in ``models_dir``, or None."""
    models_dir = Path(models_dir)
    weights, meta = models_dir / f"{model_id}.pt", models_dir / f"{model_id}.json"
    if not (weights.is_file() and meta.is_file()):
        return None
    try:
        metadata = read_json(meta)
    except (ValueError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{meta}: not a checkpoint this tool wrote (its metadata is not JSON: "
                              f"{str(error).splitlines()[0]})") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{meta}: not a checkpoint this tool wrote (its metadata is not an object)")
    return Checkpoint(model_id, weights, metadata)


def load_model(checkpoint: Checkpoint, *, device: torch.device | str = "cpu") -> torch.nn.Module:
    """Rebuild the architecture named in the metadata and load the weights into it."""
    architecture = checkpoint.metadata.get("architecture")
    if architecture is None:
        raise CheckpointError(f"{checkpoint.weights}: not a checkpoint this tool wrote "
                              "(its metadata names no architecture)")
    try:
        model = build_model(architecture)
    except ValueError as error:
        raise CheckpointError(f"{checkpoint.weights}: not a checkpoint this tool wrote ({error})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols: the error says it
            state = torch.load(checkpoint.weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{checkpoint.weights}: not a checkpoint this tool wrote (it holds pickled "
                              "objects other than tensors; they were not loaded)") from None
    except Exception as error:  # noqa: BLE001 - truncated, not a zip or pickle, wrong tensors...
        reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise CheckpointError(f"{checkpoint.weights}: not a checkpoint this tool wrote, or damaged "
                              f"({type(error).__name__}: {reason[:200]})") from None
    return model.to(device).eval()


def list_checkpoints(models_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """Every complete checkpoint in the store, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = [find_checkpoint(models_dir, meta.stem) for meta in models_dir.glob("*.json")]
    complete = [c for c in found if c is not None]
    return sorted(complete, key=lambda c: (c.metadata.get("created_at", ""), c.weights.stat().st_mtime))


def resolve_checkpoint(reference: str, models_dir: str | os.PathLike[str]) -> Checkpoint:
    """A checkpoint by model id (in ``models_dir``) or by the path of its ``.pt`` or ``.json``."""
    path = Path(reference)
    if path.suffix in (".pt", ".json") and not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix in (".pt", ".json"):
        found = find_checkpoint(path.parent, path.stem)
        if found is None:
            raise FileNotFoundError(f"{path}: a checkpoint needs both {path.stem}.pt and {path.stem}.json")
        return found
    found = find_checkpoint(models_dir, reference)
    if found is None:
        known = ", ".join(c.model_id for c in list_checkpoints(models_dir)) or "none"
        raise FileNotFoundError(f"no model {reference!r} in {models_dir} (models there: {known})")
    return found


def save_weights(net: torch.nn.Module, weights: Path, metadata: dict[str, Any]) -> Path:
    """Write a small model kept beside a cleaning model (the digit-shape model, the quality
    estimate): its state dict at ``weights``, then ``metadata`` as the ``.json`` beside it,
    each atomically."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(weights) as tmp:
        torch.save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, tmp)
    write_json(weights.with_suffix(".json"), metadata)
    return weights


def load_weights(net: torch.nn.Module, weights: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Load what :func:`save_weights` wrote into ``net`` (``weights_only``: no pickled code
    runs) and return its metadata; anything else is a ValueError naming the file and ``what``
    it should have been."""
    weights = Path(weights)
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        return read_json(weights.with_suffix(".json"))
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same user problem
        raise ValueError(f"{weights}: not {what} this tool wrote ({error})") from None
