"""Adaptation measured: the default clean model, adapted to each test folder's noise, beside
the unadapted model and beside the same model fine-tuned *supervised* on that exact noise
for the same time.

    python -m bench.adapt                      # every folder, 2.5 minutes each (about 40 min)
    python -m bench.adapt --folders gaussian-0.7 --minutes 1 --images 1000
    python -m bench.adapt --json adapt.json

Folders (MNIST test digits 5000 onwards: the gate uses the first 500 test digits):
gaussian 0.3 and 0.7, the tutorial's noise (0.5: the parent already handles it), the scan
test set's kinds mixed, and a handwriting unlike MNIST's (thickened, thinned, slanted,
rescaled digits) with the tutorial's noise, and a second hand that the handwriting match
(denoiser.adapt.style_match) was not built on: a broad pen, leaning right, smaller. PSNR is
against each image's truth, after the cleaner's tone and scale handling, as ``denoiser
clean`` would write it.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from bench.real import adapt_config
from denoiser.adapt import style_match
from denoiser.adapt.averaging import WeightAverage
from denoiser.adapt.budget import rate_factor
from denoiser.adapt.fine_tune import AdaptConfig, adapt
from denoiser.adapt.gate import label_free
from denoiser.adapt.sample import centre_crops
from denoiser.adapt.stage import check_models
from denoiser.choices import PRECISIONS
from denoiser.data.arrays import to_float
from denoiser.data.mnist import load_dataset
from denoiser.evaluation import scanset
from denoiser.metrics import psnr
from denoiser.models import checkpoint, registry
from denoiser.models.precision import FP32, Precision, autocast, resolve_precision
from denoiser.scans import restore

Maker = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]  # digits, seed -> truth, noisy


def gaussian(sigma: float) -> Maker:
    def make(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        x = to_float(digits)
        noise = np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32)
        return x, np.clip(x + sigma * noise, 0, 1)
    return make


def scans(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each kind of the scan test set, in equal shares (3x-scale scans come out 84x84: they
    are kept apart by returning lists of arrays)."""
    kinds = list(scanset.KINDS)
    parts = np.array_split(np.arange(len(digits)), len(kinds))
    truths, noisies = [], []
    for kind, index in zip(kinds, parts, strict=True):
        truth, noisy = scanset.render(digits[index], kind, seed=seed)
        truths += list(truth)
        noisies += list(noisy)
    return truths, noisies  # type: ignore[return-value]


def restyle(digits: np.ndarray, seed: int) -> np.ndarray:
    """Handwriting unlike MNIST's: each digit thickened or thinned, slanted and rescaled."""
    g = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(to_float(digits))[:, None]
    n = len(x)
    stroke = torch.randint(0, 3, (n,), generator=g)  # 0 thicker, 1 thinner, 2 as drawn
    thick = F.max_pool2d(x, 3, 1, 1)
    thin = -F.max_pool2d(-x, 2, 1, 0)
    thin = F.pad(thin, (0, 1, 0, 1))
    pick = stroke.view(-1, 1, 1, 1)
    x = torch.where(pick == 0, thick, torch.where(pick == 1, thin, x))
    shear = (torch.rand(n, generator=g) - 0.5) * 0.8
    scale = 0.75 + 0.5 * torch.rand(n, generator=g)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 1] = 1 / scale, shear, 1 / scale
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")[:, 0].clamp(0, 1).numpy()


def handwriting(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return gaussian(0.5)(restyle(digits, seed), seed + 1)


def broad_pen(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A second hand, unlike :func:`restyle`'s mix: every digit drawn with a broad pen (a 3x3
    maximum), leaning right (shear 0.25) and smaller (0.85), with the tutorial's noise."""
    x = F.max_pool2d(torch.from_numpy(to_float(digits))[:, None], 3, 1, 1)
    leaning = style_match.restyle(x, torch.tensor([[0.25, 0.85, 0.0]]).expand(len(x), 3))
    return gaussian(0.5)(leaning[:, 0].clamp(0, 1).numpy(), seed + 1)


def scan_kind(kind: str) -> Maker:
    """One kind of the scan test set (``evaluate --scans``) as a folder."""
    def make(digits: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        truth, noisy = scanset.render(digits, kind, seed=seed)
        return list(truth), list(noisy)  # type: ignore[return-value]
    return make


FOLDERS: dict[str, Maker] = {
    "gaussian-0.3": gaussian(0.3),
    "gaussian-0.7": gaussian(0.7),
    "tutorial-noise": gaussian(0.5),
    "scans": scans,
    "handwriting": handwriting,
    "broad-pen": broad_pen,
    **{f"scan-{kind}": scan_kind(kind) for kind in scanset.KINDS},
}


def mean_psnr(truth: list[np.ndarray], out: list[np.ndarray]) -> float:
    """The mean of each image's PSNR against its truth (images of several sizes allowed)."""
    return float(np.mean([psnr(t[None], o[None])[0] for t, o in zip(truth, out, strict=True)]))


def score(model: torch.nn.Module, truth: list[np.ndarray], noisy: list[np.ndarray], headroom: float) -> float:
    out, _ = restore.restore(model, list(noisy), headroom=headroom)
    return mean_psnr(truth, out)


def noise2void(python: str, truth: list[np.ndarray], noisy: list[np.ndarray], minutes: float,
               n2v2: bool = False) -> dict:
    """The peer: Noise2Void (CAREamics, :mod:`bench.n2v`, in its own environment ``python``)
    trained from scratch on the folder's scans alone for ``minutes``, scored as adapting is."""
    if len({image.shape for image in noisy}) > 1:
        return {"skipped": "scans of several sizes (CAREamics' arrays are one size)"}
    with tempfile.TemporaryDirectory() as work:
        given, taken = Path(work) / "noisy.npz", Path(work) / "n2v.npz"
        np.savez(given, images=np.stack(noisy).astype(np.float32))
        command = [python, str(Path(__file__).with_name("n2v.py")), str(given), str(taken),
                   "--seconds", str(minutes * 60), *(["--n2v2"] if n2v2 else [])]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
        with np.load(taken) as found:
            out, seconds, epochs = np.clip(found["images"], 0, 1), float(found["seconds"]), int(found["epochs"])
    return {"db": mean_psnr(truth, list(out)), "seconds": round(seconds, 1), "epochs": epochs, "method": "N2V2" if n2v2 else "N2V"}


def supervised(parent: torch.nn.Module, make: Maker, train: np.ndarray, headroom: float, minutes: float,
               seed: int, precision: Precision = FP32,
               schedule: str = AdaptConfig.schedule, average: float = AdaptConfig.average) -> torch.nn.Module:
    """The reference: the parent fine-tuned for ``minutes`` on clean/noisy pairs of the exact
    noise, shown to it as the cleaner shows scans, its steps in ``precision`` (as adapting's)."""
    model = copy.deepcopy(parent).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=AdaptConfig().learning_rate)
    averaged = WeightAverage(model, average)  # as adapting's
    rng, step = np.random.default_rng(seed), 0
    started = time.perf_counter()
    while (elapsed := time.perf_counter() - started) < minutes * 60:
        for group in optimizer.param_groups:  # the same rate schedule as adapting's
            group["lr"] = AdaptConfig().learning_rate * rate_factor(schedule, elapsed / (minutes * 60))
        truth, noisy = make(train[rng.integers(0, len(train), 64)], seed + step)
        inputs, targets = restore.in_model_look(list(truth), list(noisy), headroom)
        with autocast("cpu", precision):
            logits = model(centre_crops(inputs))
        loss = F.binary_cross_entropy_with_logits(logits.float(), centre_crops(targets))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        averaged.update()
        step += 1
    return averaged.model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.adapt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--folders", nargs="+", choices=list(FOLDERS), default=list(FOLDERS)[:6],
                        help="default: all but the scan-<kind> ones (each kind of `evaluate --scans` alone)")
    parser.add_argument("--images", type=int, default=2000, help="images per folder")
    parser.add_argument("--minutes", type=float, default=2.5)
    parser.add_argument("--models-dir", default="data/models")
    parser.add_argument("--model", default=None, help="the model to adapt (default: the model clean uses)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--no-supervised", action="store_true", help="skip the supervised reference")
    parser.add_argument("--style", type=float, default=AdaptConfig.style,
                        help="share of each batch drawn from the folder's own shapes")
    parser.add_argument("--schedule", choices=("cosine", "constant"), default=AdaptConfig.schedule,
                        help="of the learning rate over the minutes (adapting's and the reference's)")
    parser.add_argument("--average", type=float, default=AdaptConfig.average,
                        help="decay of the weights' moving average (adapting's and the reference's; 0: off)")
    parser.add_argument("--no-match", action="store_true",
                        help="train on MNIST's digits as they are, not brought to the folder's handwriting")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="of the fine-tuning steps, as denoiser adapt takes it (default: auto)")
    parser.add_argument("--anchor", type=float, default=AdaptConfig.anchor,
                        help="share of each composite batch that is the folder's scans, the parent's ink as truth")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an adaptation setting (AdaptConfig's field names), over the options above")
    parser.add_argument("--n2v", default=None, metavar="PYTHON",
                        help="also train Noise2Void from scratch on each folder for the same minutes, with "
                             "this Python of a CAREamics environment (bash bench/n2v-env.sh DIR makes one)")
    parser.add_argument("--n2v2", action="store_true", help="with --n2v: N2V2 rather than N2V")
    parser.add_argument("--json", default=None)
    parser.add_argument("--save-models", default=None, metavar="DIR",
                        help="keep each adapted model there as adapted-FOLDER.pt (torch.save of the module)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    mnist = load_dataset(args.data_dir)
    found = registry.choose_clean_model(args.model, args.models_dir).checkpoint
    if found is None:
        raise SystemExit("no clean model in the store: run denoiser clean once, or promote one")
    parent, headroom = checkpoint.load_model(found), restore.model_headroom(found.metadata)
    precision = resolve_precision(args.precision, torch.device("cpu"))
    print(f"fine-tuning in {precision.name}: {precision.reason}", flush=True)
    train, gate = to_float(mnist.train_images), to_float(mnist.test_images[:500])
    rows = []
    for name in args.folders:
        truth, noisy = FOLDERS[name](mnist.test_images[5000 : 5000 + args.images], 0)
        prepared = [restore.prepare(y, headroom=headroom) for y in noisy]
        inputs, contrasts = [p[0] for p in prepared], [p[1].ink - p[1].paper for p in prepared]
        stage_started = time.perf_counter()
        config = adapt_config(args.minutes, [f"style={args.style}", f"schedule={args.schedule}",
                                             f"average={args.average}", f"match={not args.no_match}",
                                             f"anchor={args.anchor}", *args.set])
        # The gate's label-free checks on the folder's scans, as adapt_sample runs them.
        shape_model, estimator = check_models(args.models_dir, found.model_id)
        checked = 0 if shape_model is None and estimator is None else min(len(inputs), config.check_images)
        result = adapt(parent, inputs, train, gate, headroom=headroom, config=config,
                       parent_noise=found.metadata.get("noise"), precision=precision, checked=checked,
                       since=stage_started, scales=[p[1].shrink for p in prepared])
        row = {"folder": name, "parent_db": score(parent, truth, noisy, headroom),
               "adapted_db": score(result.model, truth, noisy, headroom), "gate_passed": result.better,
               "gate": result.gate, "blind_spot": result.blind_spot, "noise": result.profile.summary(),
               "adapt_seconds": round(result.seconds, 1), "steps": result.steps, "precision": precision.name,
               "handwriting": result.handwriting,  # the match's median change; None: MNIST's hand
               "scanning": result.scanning}  # the fitted scanning (denoiser.adapt.scan_fit), where fitted
        checks = label_free(parent, result.model, inputs, contrasts,
                            shape_model=shape_model, estimator=estimator,
                            parent_outputs=result.parent_outputs, limit=config.check_images, seed=config.seed)
        row.update({k: v for k, v in zip(("shapes", "estimate"), checks) if v is not None})
        row["stage_seconds"] = round(time.perf_counter() - stage_started, 1)
        row["gate_passed"] = result.better and all(row[k]["passed"] for k in ("shapes", "estimate") if k in row)
        row["composite"] = result.composite
        row["kept_db"] = row["adapted_db"] if row["gate_passed"] else row["parent_db"]
        if not args.no_supervised:
            reference = supervised(parent, FOLDERS[name], mnist.train_images, headroom, args.minutes, seed=1,
                                   precision=precision, schedule=args.schedule, average=args.average)
            row["supervised_db"] = score(reference, truth, noisy, headroom)
        if args.n2v:
            row["n2v"] = noise2void(args.n2v, truth, noisy, args.minutes, args.n2v2)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.save_models:
            Path(args.save_models).mkdir(parents=True, exist_ok=True)
            torch.save(result.model, Path(args.save_models) / f"adapted-{name}.pt")
    print(f"\n{'folder':16}{'parent':>8}{'adapted':>9}{'gate':>6}{'kept':>8}{'gain':>7}{'supervised':>12}"
          f"{'n2v':>8}{'seconds':>9}")
    for r in rows:
        passed = "yes" if r["gate_passed"] else "no"
        print(f"{r['folder']:16}{r['parent_db']:8.2f}{r['adapted_db']:9.2f}{passed:>6}{r['kept_db']:8.2f}"
              f"{r['kept_db'] - r['parent_db']:+7.2f}{r.get('supervised_db', float('nan')):12.2f}"
              f"{r.get('n2v', {}).get('db', float('nan')):8.2f}"
              f"{r['adapt_seconds']:9.0f}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=2)


if __name__ == "__main__":
    main()
