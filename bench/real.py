"""Cleaning on real scans, measured: how often the digit reader reads each method's outputs
right (``evaluate --real``), what ``clean`` reports on them (the OOD flag and its reasons,
the identity flag), and ``clean --adapt`` (the adapted model, its gate and its minutes).

    python -m bench.real /path/to/labelled-scans                 # the scans, filters, the default model
    python -m bench.real /path/to/labelled-scans --adapt --json bench/results/real.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from denoiser.adapt import stage
from denoiser.adapt.fine_tune import AdaptConfig
from denoiser.evaluation import real, recognizer
from denoiser.folders.model_choice import cached_quality, cached_shapes, choose_for_clean
from denoiser.folders.settings import CleanOptions, CleanRun
from denoiser.models.checkpoint import resolve_checkpoint
from denoiser.scans.batch import clean_batch
from denoiser.scans.restore import model_headroom


def flags(choice, images: list[np.ndarray], labels: list[int]) -> dict:
    """The share of scans ``clean`` flags as OOD, by reason and by digit, and the identity
    flag's share."""
    from denoiser.folders.model_choice import cached_model

    found = choice.checkpoint()
    shapes = cached_shapes(choice.shapes)
    results = clean_batch(cached_model(found, "cpu"), images, headroom=model_headroom(found.metadata),
                          precision=choice.resolved_precision,
                          shape_model=shapes.for_model(found.model_id, choice.parent) if shapes else None,
                          quality_model=cached_quality(choice.quality))
    done = [(r.fields, label) for r, label in zip(results, labels, strict=True) if not isinstance(r, Exception)]
    fields = [f for f, _ in done]
    reasons = Counter((f["ood_reason"] or "").split(" (")[0] for f in fields if f["ood"])
    by_digit = {str(d): [f["ood"] for f, label in done if label == d] for d in sorted({label for _, label in done})}
    return {"scans": len(fields), "ood_share": round(sum(f["ood"] for f in fields) / len(fields), 4),
            "ood_reasons": {k: round(v / len(fields), 4) for k, v in reasons.most_common()},
            "ood_share_by_digit": {d: round(sum(v) / len(v), 3) for d, v in by_digit.items()},
            "identity_changed_share": round(sum(bool(f["identity_changed"]) for f in fields) / len(fields), 4)}


def adapt_config(minutes: float, settings: list[str]) -> AdaptConfig:
    """AdaptConfig with ``minutes`` and ``KEY=VALUE`` settings, each value read as its field's type."""
    values: dict = {"minutes": minutes}
    fields = {f.name: f.type for f in dataclasses.fields(AdaptConfig)}
    for item in settings:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"--set {item}: AdaptConfig has no field {key!r} (it has {', '.join(fields)})")
        kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes"), "str": str}
        values[key] = kind[str(fields[key])](value)
    return AdaptConfig(**values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--models-dir", default="data/models")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--adapt", action="store_true")
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", default=None, help="a model to clean with instead of the default")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an adaptation setting (AdaptConfig's field names), as many as needed")
    parser.add_argument("--json", default=None)
    parser.add_argument("--sheets", default=None, metavar="DIR",
                        help="where to write the contact sheets (they show the scans: never a folder in git)")
    args = parser.parse_args()
    started = time.time()
    found = real.labelled_scans(args.folder, args.limit)
    reader = recognizer.load_reader(recognizer.ensure_reader(args.models_dir, args.data_dir))
    run = CleanRun(model=args.model, models_dir=args.models_dir, data_dir=args.data_dir)
    choice = choose_for_clean(run, CleanOptions(device="cpu"))
    methods = {**real.CLASSICAL, f"clean ({choice.model_id})": real.model_method(choice)}
    result = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
              "reader": reader.metadata, "flags": {"clean": flags(choice, found.images, found.labels)}}
    if args.adapt:
        with tempfile.TemporaryDirectory() as run_dir:
            outcome = stage.adapt_folder(args.folder, choice.checkpoint(), models_dir=args.models_dir,
                                         run_dir=run_dir, data_dir=args.data_dir,
                                         config=adapt_config(args.minutes, args.set), device="cpu")
        result["adapt"] = {k: v for k, v in outcome.items() if k not in ("levels", "correlations")}
        adapted = choice.adapted(resolve_checkpoint(outcome["model_id"], args.models_dir))
        methods[f"clean --adapt ({adapted.model_id})"] = real.model_method(adapted)
        result["flags"]["adapted"] = flags(adapted, found.images, found.labels)
    with tempfile.TemporaryDirectory() as out:
        summary = real.score_real(found, out, methods, reader, compare_to="input")
        if args.sheets:  # crops of the scans themselves: keep them out of the repository
            Path(args.sheets).mkdir(parents=True, exist_ok=True)
            for name in ("sheet-sample.png", "sheet-changed.png"):
                if (Path(out) / name).is_file():
                    (Path(args.sheets) / name).write_bytes((Path(out) / name).read_bytes())
    result.update(summary=summary, seconds=round(time.time() - started, 1))
    print(real.format_real(summary))
    print(json.dumps(result["flags"], indent=2))
    if "adapt" in result:
        print(json.dumps(result["adapt"], indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
