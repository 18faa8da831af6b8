"""Which model cleans a folder under ``clean --adapt``, and when to adapt again.

The decision is kept in ``OUT_DIR/.denoiser/adapted.json`` (the parent, the adapted model,
the one chosen, the noise it was adapted on). A run adapts when the folder has no decision
yet, the parent changed, or the folder's noise drifted from what it was adapted on
(:func:`denoiser.adapt.noise_profile.readapt_reason`); otherwise it reuses the decision.

    reason = readapt_reason(in_dir, out_dir, choice)   # None: reuse
    ...                                                # adapt (the adapt-folder flow)
    record(out_dir, choice.model_id, outcome)
    choice = cleaning_choice(out_dir, choice)          # the adapted model where it passed the gate
"""

from __future__ import annotations

import json
import os
from typing import Any

from denoiser.adapt import gate, noise_profile
from denoiser.adapt.sample import sample_folder
from denoiser.folders.model_choice import ModelChoice, cached_model
from denoiser.folders.workdir import WORK_DIR
from denoiser.models.checkpoint import resolve_checkpoint
from denoiser.models.device import resolve_device
from denoiser.out_tree import OutTree
from denoiser.scans.restore import model_headroom

STATE = f"{WORK_DIR}/adapted.json"


def read_adaptation(out_dir: str | os.PathLike[str]) -> dict | None:
    """What ``clean --adapt`` decided for this folder last time, or None."""
    try:
        with OutTree(out_dir, create=False) as tree:
            state = json.loads(tree.read_bytes(STATE))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and {"parent", "chosen", "levels"} <= state.keys() else None


def write_adaptation(out_dir: str | os.PathLike[str], state: dict) -> None:
    text = json.dumps(state, indent=2, sort_keys=True) + "\n"
    with OutTree(out_dir) as tree:
        tree.write_bytes(STATE, text.encode("utf-8"))


def readapt_reason(in_dir: str, out_dir: str, choice: ModelChoice, device: str = "auto") -> str | None:
    """Why this folder's model must be adapted (again), or None to reuse the last decision:
    the folder's noise, measured on a sample of 300 images, against what it was adapted on."""
    parent = choice.checkpoint()
    taken = sample_folder(in_dir, headroom=model_headroom(parent.metadata), max_images=300, seed=1,
                          digest=False)  # every run: read little
    if not taken.inputs:
        return None  # nothing readable to measure: clean with what there is
    torch_device = resolve_device(device)
    model = cached_model(parent, torch_device)  # loaded once per process, as the shards use it
    profile = noise_profile.NoiseProfile.measure(model, taken.inputs, torch_device)
    return noise_profile.readapt_reason(read_adaptation(out_dir), parent.model_id, profile)


def record(out_dir: str, parent_id: str, outcome: dict[str, Any]) -> None:
    """Keep an adaptation's outcome as the folder's decision."""
    write_adaptation(out_dir, {"parent": parent_id, "model_id": outcome["model_id"], "chosen": outcome["chosen"],
                               "why": outcome["why"], "levels": outcome["levels"],
                               "correlations": outcome["correlations"]})


def cleaning_choice(out_dir: str, choice: ModelChoice, models_dir: str) -> ModelChoice:
    """``choice``, or the folder's adapted model in its place where the decision chose it."""
    state = read_adaptation(out_dir)
    if state is None or state["chosen"] == choice.model_id:
        return choice
    return choice.adapted(resolve_checkpoint(state["chosen"], models_dir))


def gate_verdict(outcome: dict[str, Any]) -> tuple[str, str]:
    """(the model chosen, why) from an adaptation's outcome: the numbers that decided it."""
    chosen = outcome["model_id"] if outcome["passed"] else outcome["parent"]
    shapes = outcome.get("shapes")
    read = ("" if not shapes else f"; its outputs of the folder's scans read as digits with p "
            f"{shapes['parent_digit_p']:.3f} -> {shapes['adapted_digit_p']:.3f}, may fall at most {gate.SHAPE_MARGIN}")
    estimate = outcome.get("estimate")
    if estimate and estimate.get("judged"):
        read += (f"; their estimated PSNR {estimate['parent_db']:.2f} -> {estimate['adapted_db']:.2f} dB, may fall "
                 f"at most {gate.ESTIMATE_MARGIN} dB")
    if (outcome.get("scanning") or {}).get("trained_on"):  # the fitted scanning's gate (AdaptResult.better)
        return chosen, (f"{outcome['parent_db']:.2f} dB (parent) -> {outcome['adapted_db']:.2f} dB (adapted) on "
                        f"held-out digits scanned as the folder was fitted to be, needs +{gate.GATE_DB} dB; the "
                        f"flatness of the paper of backgrounds of the folder's scans that training never saw "
                        f"{outcome['paper_parent_db']:.2f} -> {outcome['paper_adapted_db']:.2f} dB, may fall at most "
                        f"{gate.PAPER_MARGIN} dB" + read)
    if outcome.get("composite"):
        return chosen, (f"{outcome['parent_db']:.2f} dB (parent) -> {outcome['adapted_db']:.2f} dB (adapted) on "
                        "digits laid on backgrounds of the folder's scans that training never saw, needs "
                        f"+{gate.GATE_DB} dB" + read)
    loss = outcome["blind_spot"]
    return chosen, (f"{outcome['parent_db']:.2f} dB (parent) -> {outcome['adapted_db']:.2f} dB (adapted) on digits "
                    f"with the folder's noise, needs +{gate.GATE_DB} dB; blind-spot loss on the folder's "
                    f"scans {loss['parent']:.5f} -> {loss['adapted']:.5f}, needs to fall "
                    f"{gate.BLIND_SPOT_MARGIN:.0%}" + read)
