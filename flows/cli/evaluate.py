"""``denoiser evaluate``: models and classical baselines scored on the same noisy test images
(the flow is :func:`flows.evaluate.evaluate_models`)."""

from __future__ import annotations

import argparse

from denoiser.choices import DEFAULT_MODELS_DIR, DEVICES
from denoiser.data.datasets import DATASETS
from denoiser.data.mnist import verify_dataset
from denoiser.noise.spec import DEFAULT_NOISE
from flows.cli.options import (
    BASELINES,
    DEFAULT_BASELINES,
    HelpFormatter,
    add_precision,
    baseline_list,
    noise_spec,
    non_negative_int,
    positive_int,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="score trained models and classical denoisers on the same noisy test images",
        description=(
            "Score models and classical baselines on the MNIST test images with the same noise "
            "(same seed). Baselines tune their parameter on a validation split. Writes "
            "evaluation.parquet (one row per image, method and noise) and summary.json, and "
            "prints the summary table."
        ),
        formatter_class=HelpFormatter,
    )
    evaluate.add_argument("--models", nargs="*", metavar="ID|PATH", default=None,
                          help="model ids in the store or .pt paths (default: every model in the store)")
    evaluate.add_argument("--baselines", type=baseline_list, default=DEFAULT_BASELINES, metavar="LIST",
                          help="comma-separated classical denoisers from "
                               f"{','.join(BASELINES)}, or 'none'; bm3d is slow (a few images/s)")
    evaluate.add_argument("--noise", type=noise_spec, nargs="+", default=[DEFAULT_NOISE], metavar="SPEC",
                          help="one or more noise specs to evaluate at")
    evaluate.add_argument("--scans", action="store_true",
                          help="instead of --noise: test digits rendered as each kind of real scan "
                               "(seed and weak noise, scanner, dust, faded ink, uneven lighting, 3x "
                               "scale), models cleaning them as denoiser clean does")
    evaluate.add_argument("--real", metavar="DIR", default=None,
                          help="instead of MNIST: a folder of real digit scans labelled by labels.json "
                               "({\"path\": digit}) or by sub-folders 0-9, without clean copies; each method's "
                               "outputs are read by a digit reader trained on MNIST, and scored by how often it "
                               "reads them right")
    evaluate.add_argument("--adapt", action="store_true",
                          help="with --real: also adapt the model clean uses to the folder (its labels unused) "
                               "and score the adapted model")
    evaluate.add_argument("--adapt-minutes", type=float, default=2.5, metavar="N",
                          help="with --adapt: time for adapting (fine-tuning and the gate)")
    evaluate.add_argument("--limit", type=positive_int, default=None, metavar="N",
                          help="use the first N test images, or N labelled scans (all when unset)")
    evaluate.add_argument("--tune-images", type=positive_int, default=300, metavar="N",
                          help="validation images on which baselines tune their parameter")
    evaluate.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                          help="seed of the test noise (the same as denoiser run's --seed)")
    evaluate.add_argument("--json", metavar="PATH", default=None,
                          help="also write the summary rows as a JSON list here")
    evaluate.add_argument("--out-dir", metavar="DIR", default=None,
                          help="where the Parquet and summary go (default: data/evaluations/<id>)")
    evaluate.add_argument("--data-dir", metavar="DIR", default=None,
                          help="folder with the four IDX files (default: $DENOISER_MNIST_DIR, "
                               "else data/mnist)")
    evaluate.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                          help="which checksums to verify against")
    evaluate.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR),
                          help="the model store")
    evaluate.add_argument("--device", choices=DEVICES, default="auto",
                          help="where models run; auto picks CUDA, then MPS, then CPU")
    add_precision(evaluate, "run the models")


def evaluate(args: argparse.Namespace) -> int:
    import json

    if args.real is not None:
        return evaluate_real(args)

    from denoiser.evaluation import evaluate
    from denoiser.models import checkpoint
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))
    models = args.models
    if models is None:
        models = [c.model_id for c in checkpoint.list_checkpoints(args.models_dir)]
    for model in models:  # a wrong id fails here, in one line
        checkpoint.resolve_checkpoint(model, args.models_dir)
    verify_dataset(args.data_dir, dataset=DATASETS[args.dataset])

    from flows.evaluate import evaluate_models

    result = evaluate_models(models=models, baselines=args.baselines, noises=args.noise, scans=args.scans,
                             limit=args.limit, tune_images=args.tune_images, seed=args.seed,
                             data_dir=args.data_dir,
                             dataset=args.dataset, models_dir=args.models_dir, out_dir=args.out_dir,
                             device=args.device, precision=args.precision)
    print(evaluate.format_table(result["rows"]))
    print(f"evaluation: {result['evaluation']}")
    if args.json:
        from denoiser.files import write_bytes

        write_bytes(args.json, (json.dumps(result["rows"], indent=2) + "\n").encode())
        print(f"summary rows: {args.json}")
    return 0


def evaluate_real(args: argparse.Namespace) -> int:
    """``evaluate --real DIR``: the folder's labels checked here, in one line; the flow reads it."""
    import json
    import os

    from denoiser.evaluation import real
    from denoiser.models import checkpoint

    real.check_labels(args.real)
    for model in args.models or []:  # a wrong id fails here, in one line
        checkpoint.resolve_checkpoint(model, args.models_dir)
    from flows.evaluate import evaluate_real_folder

    result = evaluate_real_folder(folder=os.path.abspath(args.real), models=args.models or [], adapt=args.adapt,
                                  adapt_minutes=args.adapt_minutes, limit=args.limit, data_dir=args.data_dir,
                                  models_dir=args.models_dir, out_dir=args.out_dir, device=args.device,
                                  precision=args.precision)
    print(real.format_real(result))
    print(f"evaluation: {result['dir']} (real.parquet, summary.json, sheet-sample.png, sheet-changed.png)")
    if args.json:
        from denoiser.files import write_bytes

        write_bytes(args.json, (json.dumps(result, indent=2) + "\n").encode())
        print(f"summary: {args.json}")
    return 0
