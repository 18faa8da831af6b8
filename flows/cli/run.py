"""``denoiser run``: the MNIST pipeline (ingest -> synthesize noise -> train or load ->
denoise -> report) as the Prefect flow in :mod:`flows.pipeline`; prints where the report is."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, DEVICES
from denoiser.data.datasets import DATASETS
from denoiser.data.mnist import DataError, verify_dataset
from denoiser.models.recipe import DEFAULT_MODEL, LOSSES, MODEL_NAMES, RECIPES, SCHEDULES, TrainConfig
from denoiser.noise.spec import DEFAULT_NOISE
from flows.cli.options import (
    HelpFormatter,
    add_precision,
    add_retention,
    library_log_to_console,
    minutes_or_zero,
    noise_spec,
    non_negative_int,
    positive_int,
    recipe_default,
)


def add_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="ingest MNIST, add noise, train or load the model, denoise, write a report",
        description=(
            "Run the MNIST pipeline as a Prefect flow: ingest -> synthesize noise -> "
            "train or load -> denoise -> report. Prints where the report is."
        ),
        formatter_class=HelpFormatter,
    )
    run.add_argument("--data-dir", metavar="DIR", default=None,
                     help="folder with the four IDX files (.gz or raw); downloaded there if "
                          "missing (default: $DENOISER_MNIST_DIR, else data/mnist)")
    run.add_argument("--dataset", choices=sorted(DATASETS), default="mnist",
                     help="which checksums to verify against ('idx': any set in MNIST's "
                          "layout, unverified)")
    run.add_argument("--model", choices=MODEL_NAMES, default=DEFAULT_MODEL,
                     help="network: a small U-Net, the tutorial's conv DAE, or a dense baseline; "
                          "each comes with its recipe, which the options below override")
    run.add_argument("--noise", type=noise_spec, default=DEFAULT_NOISE, metavar="SPEC",
                     help="KIND:LEVEL, one of gaussian:STD, salt-pepper:FRACTION, "
                          "poisson:PEAK, speckle:STD; a range LOW-HIGH trains a blind model; or "
                          "'scan': realistic scan degradations (the model clean uses by default)")
    run.add_argument("--epochs", type=positive_int, default=None, metavar="N",
                     help=f"training epochs {recipe_default('epochs')}")
    run.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                     help=f"training batch size {recipe_default('batch_size')}")
    run.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                     help=f"Adam's learning rate {recipe_default('learning_rate')}")
    run.add_argument("--loss", choices=LOSSES, default=None,
                     help=f"training loss {recipe_default('loss')}")
    run.add_argument("--schedule", choices=SCHEDULES, default=None,
                     help=f"learning-rate schedule {recipe_default('schedule')}")
    run.add_argument("--max-train-minutes", type=minutes_or_zero, default=None, metavar="M",
                     help="end training, annealed, within M minutes if its epochs would take "
                          f"longer; 0: no limit (default: the model's recipe: unet "
                          f"{RECIPES['unet']['max_minutes']:g}, conv none)")
    run.add_argument("--denoise-batch-size", type=positive_int, default=None, metavar="N",
                     help="batch size for denoising the test set; results do not depend on it "
                          "(default: 64 on a CPU, where it is fastest, 1024 on a GPU)")
    run.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                     help="train on a random N of the training images (all when unset)")
    run.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                     help="denoise and report the first N test images (all when unset)")
    run.add_argument("--device", choices=DEVICES, default="auto",
                     help="where to train and denoise; auto picks CUDA, then MPS, then CPU")
    add_precision(run, "train and denoise")
    run.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                     help="seed for the split, initialisation, batches and noise")
    run.add_argument("--retrain", action="store_true",
                     help="train even when the model store has this recipe's model")
    run.add_argument("--runs-dir", metavar="DIR", default=str(DEFAULT_RUNS_DIR),
                     help="where run folders (arrays, report, summary, preview) go")
    run.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR),
                     help="the model store")
    run.add_argument("--run-id", metavar="ID", default=None,
                     help="resume this run: completed stages are reused (default: a new id)")
    run.add_argument("--flow-retries", type=non_negative_int, default=1, metavar="N",
                     help="retries of the whole flow run; completed stages are not redone")
    add_retention(run, "run folders")


def run(args: argparse.Namespace) -> int:
    # Validate everything that can be checked without Prefect before starting it (the flow
    # builds the same config again from the options the user set).
    TrainConfig.recipe(args.model, noise=args.noise, epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                loss=args.loss, schedule=args.schedule,
                                train_limit=args.train_limit, seed=args.seed,
                                max_minutes=args.max_train_minutes)
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision

    device = resolve_device(args.device)  # a missing GPU is one line here, not a failed flow run
    if args.precision == "bf16":  # an unsupported bf16 is one line here; "auto" is decided in the flow
        resolve_precision("bf16", device)
    if args.run_id is not None and (not args.run_id or "/" in args.run_id or args.run_id.startswith(".")):
        raise ValueError(f"--run-id {args.run_id!r} must be a plain folder name")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):  # a typo must not become a folder
        raise DataError(f"--data-dir {args.data_dir} does not exist (create it first to download "
                        f"{args.dataset} into it; without --data-dir the download goes to data/mnist)")
    # Bad or missing data is the most common user error: find it (downloading the files
    # if needed) before the flow starts, so it ends in one line rather than a failed run.
    with library_log_to_console():  # from here on Prefect's handlers print it
        verify_dataset(args.data_dir, dataset=DATASETS[args.dataset])  # the ingest stage parses it

    from denoiser.runs import new_run_id
    from flows.pipeline import mnist_pipeline

    run_id = args.run_id or new_run_id()
    result = mnist_pipeline.with_options(retries=args.flow_retries)(
        data_dir=args.data_dir, dataset=args.dataset, model=args.model, noise=args.noise,
        epochs=args.epochs, batch_size=args.batch_size,  # what the user set; the flow fills
        learning_rate=args.learning_rate, loss=args.loss, schedule=args.schedule,  # in the recipe
        max_train_minutes=args.max_train_minutes,
        denoise_batch_size=args.denoise_batch_size, train_limit=args.train_limit,
        test_limit=args.test_limit, device=args.device, precision=args.precision, seed=args.seed,
        retrain=args.retrain, runs_dir=args.runs_dir, models_dir=args.models_dir,
        run_id=run_id, keep_runs=args.keep_runs, keep_days=args.keep_days,
    )
    from denoiser.files import read_json
    from denoiser.pipeline.record import read_stage

    summary = read_json(result["summary"])
    trained = read_stage(Path(result["summary"]).parent, "train_or_load")
    if trained.get("cut_short"):
        print(f"the time budget ended training after {trained['steps']:,} of the recipe's "
              f"{trained['planned_steps']:,} steps: this run used {trained['model_id']}, stored apart "
              f"from the recipe's model {trained['recipe_model_id']}, which the next run with the time "
              "trains (or now: --max-train-minutes 0)")
    print(
        f"report: {result['report']}\n"
        f"{summary['images']} images, mean PSNR noisy {summary['mean_psnr_noisy']:.2f} dB -> "
        f"denoised {summary['mean_psnr_denoised']:.2f} dB, mean SSIM "
        f"{summary['mean_ssim_noisy']:.3f} -> {summary['mean_ssim_denoised']:.3f} "
        f"(model {summary['model_id']})"
    )
    return 0
