"""``denoiser adapt``: fine-tune a stored model to the noise of a folder's own scans (the flow
is :func:`flows.adapt.adapt_folder`)."""

from __future__ import annotations

import argparse
import os

from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, DEVICES, SAMPLE_IMAGES
from flows.cli.options import HelpFormatter, add_precision, non_negative_int, positive_float, positive_int


def add_parser(commands: argparse._SubParsersAction) -> None:
    adapt = commands.add_parser(
        "adapt", help="fine-tune a model to the noise of a folder of scans (no clean images needed)",
        description=(
            "Measure the noise of IN_DIR's images as the cleaner sees them and fine-tune a copy of the "
            "model to it, storing it with its lineage. White noise: MNIST digits given the folder's "
            "measured noise. Anything else (printed patterns, paper texture, blur, JPEG, dust, uneven "
            "lighting): MNIST digits laid on the folder's own paper, taken from its scans with the ink "
            "removed. Either way a share of each batch is the folder's own scans, their strokes as the "
            "parent cleans them. The copy becomes this folder's model only if it beats its parent on "
            "data like the folder that training never saw (held-out noise or paper) and does not read "
            "worse on the folder's own scans by the digit-shape and quality checks; else the parent "
            "stays and the numbers say why."),
        formatter_class=HelpFormatter)
    adapt.add_argument("in_dir", metavar="IN_DIR", help="folder of noisy images (only read)")
    adapt.add_argument("--from", dest="parent", metavar="ID|PATH", default=None,
                       help="model to adapt (default: the model clean uses)")
    adapt.add_argument("--minutes", type=positive_float, default=2.5, metavar="N",
                       help="time for adapting: measuring the folder, fine-tuning and the gate's checks "
                            "(fine-tuning gets what the rest leaves); sampling the folder comes on top")
    adapt.add_argument("--max-images", type=positive_int, default=SAMPLE_IMAGES, metavar="N",
                       help="images of the folder sampled to measure its noise")
    adapt.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                       help="seed of the sample and the noise")
    adapt.add_argument("--data-dir", metavar="DIR", default=None,
                       help="MNIST folder, whose digits carry the folder's noise in training "
                            "(default: $DENOISER_MNIST_DIR, else data/mnist)")
    adapt.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR), help="the model store")
    adapt.add_argument("--runs-dir", metavar="DIR", default=str(DEFAULT_RUNS_DIR),
                       help="where the run folder (the sample) goes")
    adapt.add_argument("--device", choices=DEVICES, default="auto", help="where to train")
    add_precision(adapt, "fine-tune")


def adapt(args: argparse.Namespace) -> int:
    from denoiser.data.mnist import verify_dataset
    from denoiser.folders.read import scan_folder
    from denoiser.models import checkpoint, registry
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))
    if not scan_folder(args.in_dir):
        raise ValueError(f"{args.in_dir} holds no image files to adapt on")
    if args.parent is not None:
        checkpoint.resolve_checkpoint(args.parent, args.models_dir)  # a wrong id fails here, in one line
    registry.choose_clean_model(args.parent, args.models_dir)
    verify_dataset(args.data_dir)

    from flows.adapt import adapt_folder

    result = adapt_folder(in_dir=os.path.abspath(args.in_dir), parent=args.parent, minutes=args.minutes,
                          max_images=args.max_images, models_dir=args.models_dir, data_dir=args.data_dir,
                          runs_dir=args.runs_dir, device=args.device, precision=args.precision,
                          seed=args.seed)
    print(f"{result['images']} of {result['files']} images sampled ({result['unreadable']} unreadable)")
    if result["model_id"] is None:
        print(f"nothing adapted from {result['parent']}: {result['why']}\n"
              f"its parent stays: denoiser clean {args.in_dir} OUT_DIR --model {result['chosen']}")
        return 0
    verdict = "use it" if result["passed"] else "its parent stays better; kept for the record"
    print(f"adapted model {result['model_id']} from {result['parent']}: {result['why']}\n"
          f"{verdict}: denoiser clean {args.in_dir} OUT_DIR --model {result['chosen']}")
    return 0
