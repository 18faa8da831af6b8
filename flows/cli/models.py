"""``denoiser models``: list the model store, show one model, promote one as a use's default.

    denoiser models list
    denoiser models show unet-3f2a9c1b7d4e
    denoiser models promote unet-3f2a9c1b7d4e --for clean      # refused if it scores lower
    denoiser models promote unet-3f2a9c1b7d4e --for clean --force
    denoiser models shapes                                       # the digit-shape model for OOD flags
    denoiser models quality                                      # the learned PSNR estimate for clean
    denoiser models export unet-3f2a9c1b7d4e -o unet.bundle       # everything clean needs, one file
    denoiser models export unet-3f2a9c1b7d4e --format onnx -o unet.onnx
    denoiser models import unet.bundle                           # or https://.../unet.bundle#sha256=HEX

Promotion scores the candidate and the current default on the use's evaluation (the scan
test set for ``clean``, MNIST with the tutorial's noise for ``run``; see
:func:`denoiser.evaluation.promotion.use_score`), and refuses a candidate below the current default.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from denoiser.choices import DEFAULT_MODELS_DIR, DEVICES, USES
from denoiser.data.datasets import DATASETS
from flows.cli.options import HelpFormatter, library_log_to_console, non_negative_int, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser(
        "models", help="list, show and promote the models in the store",
        description="The model store: what is in it, and which model each use runs by default.",
        formatter_class=HelpFormatter)
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="a table of the stored models", formatter_class=HelpFormatter)
    show = actions.add_parser("show", help="one model's metadata as JSON", formatter_class=HelpFormatter)
    show.add_argument("model", metavar="ID|PATH", help="model id in the store or a checkpoint path")
    promote = actions.add_parser(
        "promote", help="make a model the default for clean or run, if it scores at least as well",
        description="Score the model and the current default on the use's evaluation (clean: the scan "
                    "test set; run: MNIST with the tutorial's noise) and make it the default unless it "
                    "scores lower.", formatter_class=HelpFormatter)
    promote.add_argument("model", metavar="ID|PATH", help="model id in the store or a checkpoint path")
    promote.add_argument("--for", dest="use", choices=USES, required=True,
                         help="which command's default it becomes")
    promote.add_argument("--force", action="store_true",
                         help="promote even if it scores below the current default (says so)")
    promote.add_argument("--limit", type=positive_int, default=500, metavar="N",
                         help="test digits per scan kind (or MNIST test images) to score on")
    promote.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                         help="seed of the evaluation's noise")
    promote.add_argument("--data-dir", metavar="DIR", default=None,
                         help="MNIST folder (default: $DENOISER_MNIST_DIR, else data/mnist)")
    promote.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                         help="which checksums to verify the data against")
    promote.add_argument("--device", choices=DEVICES, default="auto", help="where the models run")
    shapes = actions.add_parser(
        "shapes", help="train the digit-shape model that flags non-digits (letters, symbols) in clean",
        description="Train the small digit classifier whose features tell a digit's shape from a "
                    "letter's (about 3 minutes on 2 CPU cores), set its threshold on the clean model's outputs "
                    "of noisy held-out digits, and keep it in the store; clean uses it from then on. The "
                    "scan model's first training makes one too.",
        formatter_class=HelpFormatter)
    shapes.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                        help="which checksums to verify the data against")
    quality = actions.add_parser(
        "quality", help="train the learned PSNR estimate (psnr_est) for the model clean uses",
        description="Degrade MNIST's training digits by a wide mix of scan degradations, clean them as "
                    "clean does, and train a small network on the true PSNR of the outputs (about 4 "
                    "minutes on 2 CPU cores); clean's report estimates with it from then on. The scan "
                    "model's first training makes one too.",
        formatter_class=HelpFormatter)
    for command in (shapes, quality):  # each trains a small model on MNIST beside the clean model
        command.add_argument("--data-dir", metavar="DIR", default=None,
                             help="MNIST folder (default: $DENOISER_MNIST_DIR, else data/mnist)")
        command.add_argument("--retrain", action="store_true",
                             help="train a new one even if the store has one")
    export = actions.add_parser(
        "export", help="write a model as one file: a bundle for another store, or ONNX",
        description="A bundle holds the cleaning model, the store's digit-shape model and the model's quality "
                    "estimate, their metadata and lineage, and the sha256 of each (JSON and safetensors, no "
                    "pickle): `denoiser models import` or `clean --model FILE|URL` on another machine cleans "
                    "without training. ONNX holds the cleaning network alone (dynamic batch and image size), "
                    "for onnxruntime.", formatter_class=HelpFormatter)
    export.add_argument("model", metavar="ID|PATH", help="model id in the store or a checkpoint path")
    export.add_argument("-o", "--output", metavar="FILE", required=True, help="the file to write")
    export.add_argument("--format", choices=("bundle", "onnx"), default="bundle", help="what to write")
    imported = actions.add_parser(
        "import", help="check a model bundle (file or URL) and put its models into the store",
        description="Refuses, in one line and adding nothing, a file that is damaged, truncated, altered, not a "
                    "bundle, holds anything but JSON and safetensors, or was written by a newer format.",
        formatter_class=HelpFormatter)
    imported.add_argument("bundle", metavar="FILE|URL", help="a .bundle file, or an http(s) URL (#sha256=HEX pins it)")
    imported.add_argument("--sha256", metavar="HEX", default=None, help="the digest the bundle file must have")
    for command in (listing, show, promote, shapes, quality, export, imported):
        command.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR),
                             help="the model store")


def run(args: argparse.Namespace) -> int:
    from denoiser.models import checkpoint, registry

    if args.action == "list":
        print(format_listing(args.models_dir))
        return 0
    if args.action == "show":
        found = checkpoint.resolve_checkpoint(args.model, args.models_dir)
        shown = {**found.metadata, "default_for": registry.defaults_for(args.models_dir, found.model_id)}
        print(json.dumps(shown, indent=2))
        return 0
    if args.action == "export":
        return _export(args)
    if args.action == "import":
        from denoiser.sharing.download import obtain

        found = obtain(args.bundle, args.models_dir, sha256=args.sha256)
        extras = [name for name, present in (("digit-shape model", _has_shapes(args.models_dir)),
                                             ("quality estimate", _has_quality(args.models_dir, found.model_id)))
                  if present]
        print(f"{found.model_id} is in {args.models_dir}" + (f" with its {' and '.join(extras)}" if extras else "")
              + f": clean it with `denoiser clean IN OUT --model {found.model_id}`, or make it the default "
              f"with `denoiser models promote {found.model_id} --for clean`")
        return 0
    if args.action == "shapes":
        return _shapes(args)
    if args.action == "quality":
        return _quality(args)
    return _promote(args)


def _export(args: argparse.Namespace) -> int:
    if args.format == "onnx":
        from denoiser.sharing.onnx_export import export_onnx

        written, difference = export_onnx(args.models_dir, args.model, args.output)
        print(f"wrote {written} (checked against PyTorch: largest difference {difference:.1e})")
        return 0
    from denoiser.sharing.bundle import export_bundle, file_digest, read_bundle

    written = export_bundle(args.models_dir, args.model, args.output)
    header, _ = read_bundle(written)
    print(f"wrote {written}: {header['model_id']} with {', '.join(header['roles'])}; sha256 {file_digest(written)}")
    return 0


def _has_shapes(models_dir: str) -> bool:
    from denoiser.checks.shapes import find_shapes

    return find_shapes(models_dir) is not None


def _has_quality(models_dir: str, model_id: str) -> bool:
    from denoiser.checks.quality_net import find_quality

    return find_quality(models_dir, model_id) is not None


def _shapes(args: argparse.Namespace) -> int:
    from denoiser.checks import shapes
    from denoiser.models import registry
    from denoiser.training import shapes as shape_training

    cleaner = registry.choose_clean_model(None, args.models_dir).checkpoint  # what clean uses, if stored
    with library_log_to_console():
        weights = shape_training.ensure_shapes(args.models_dir, args.data_dir, dataset=DATASETS[args.dataset],
                                               retrain=args.retrain, cleaner=cleaner)
    model = shapes.load_shapes(weights)
    line = f"digit-shape model {weights.stem} in {weights.parent}: "
    if cleaner is not None:
        line += (f"clean flags outputs of {cleaner.model_id} scoring above "
                 f"{model.for_model(cleaner.model_id).threshold:.2f}")
    else:
        line += f"clean flags outputs scoring above {model.threshold:.2f} (set on clean held-out digits)"
    print(line)
    return 0


def _quality(args: argparse.Namespace) -> int:
    from denoiser.checks import quality_net
    from denoiser.models import registry
    from denoiser.training import quality as quality_training

    cleaner = registry.choose_clean_model(None, args.models_dir).checkpoint
    if cleaner is None:
        raise ValueError(f"the store {args.models_dir} has no model for clean yet: run `denoiser clean` once "
                         "(it trains the scan model and this estimate), or promote one")
    with library_log_to_console():
        weights = quality_training.ensure_quality(args.models_dir, cleaner, args.data_dir, retrain=args.retrain)
    meta = quality_net.load_quality(weights).metadata
    print(f"quality estimate for {cleaner.model_id} in {weights}: trained on {meta['samples']:,} degraded "
          f"digits in {meta['seconds']:.0f} s")
    return 0


def _scores_dir(models_dir: str) -> Path:
    return Path(models_dir) / "scores"


def _promote(args: argparse.Namespace) -> int:
    from denoiser.evaluation import promotion
    from denoiser.models import registry

    def score(model_id: str) -> float:
        value = promotion.use_score(_scores_dir(args.models_dir), model_id, args.use, data_dir=args.data_dir,
                                   dataset=args.dataset, models_dir=args.models_dir, limit=args.limit,
                                   seed=args.seed, device=args.device)
        print(f"{model_id}: {value:.2f} dB on the {args.use} evaluation ({args.limit} images"
              f"{' per scan kind' if args.use == 'clean' else ''})")
        return value

    with library_log_to_console():
        entry = registry.promote(args.models_dir, args.model, args.use, score=score, force=args.force)
    forced = " (forced past the quality gate)" if entry["forced"] else ""
    print(f"{entry['model_id']} is now the default for {args.use}{forced}")
    return 0


def format_listing(models_dir: str | os.PathLike[str]) -> str:
    """The store as an aligned table, oldest first."""
    from denoiser.evaluation import promotion
    from denoiser.models import checkpoint, registry

    stored = checkpoint.list_checkpoints(models_dir)
    if not stored:
        return f"no models in {models_dir}"
    defaults = registry.read_defaults(models_dir)
    cached = promotion.cached_use_scores(_scores_dir(str(models_dir)))
    width = max([24] + [len(found.model_id) + 2 for found in stored])
    lines = [f"{'model':{width}}{'recipe':8}{'noise':16}{'epochs':>11}{'val PSNR':>10}{'clean dB':>10}"
             f"{'run dB':>8}  {'created':26}default for"]
    for found in stored:
        meta = found.metadata
        config = meta.get("config", {})
        val = meta.get("final", {}).get("val_psnr")
        uses = [use for use, entry in defaults.items() if entry["model_id"] == found.model_id]
        clean, run_score = (cached.get((found.model_id, use)) for use in USES)
        lines.append(
            f"{found.model_id:{width}}{str(meta.get('architecture', '?')):8}{str(config.get('noise', '?')):16}"
            f"{_epochs(meta):>11}{_number(val):>10}{_number(clean):>10}"
            f"{_number(run_score):>8}"
            f"  {str(meta.get('created_at', '?')):26}{', '.join(uses) or '-'}")
    return "\n".join(lines)


def _epochs(meta: dict) -> str:
    """The recipe's epochs, or for a model the time budget cut short, how far it got:
    "2.6/13 cut"."""
    epochs = meta.get("config", {}).get("epochs", "?")
    if not meta.get("cut_short") or not meta.get("planned_steps"):
        return str(epochs)
    return f"{epochs * meta['steps'] / meta['planned_steps']:.1f}/{epochs} cut"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"

