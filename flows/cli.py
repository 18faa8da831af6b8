"""The ``denoiser`` command.

    denoiser run                                   # the default model on MNIST, full size
    denoiser run --model conv                      # the tutorial's model and recipe
    denoiser run --epochs 1 --train-limit 2048 --test-limit 512   # a smoke-sized run
    denoiser run --data-dir ~/mnist --noise salt-pepper:0.1 --retrain
    denoiser evaluate --limit 1000 --baselines tv,nlmeans --json eval.json
    denoiser run --noise scan                      # the scan model: realistic scan degradations
    denoiser models promote unet-99c5b8201725 --for clean
    denoiser evaluate --scans --limit 1000         # each kind of real scan, with digit identity
    denoiser clean scans/ cleaned/ [--tones normalize] [--adapt]
    denoiser adapt scans/                          # fine-tune the clean model to the folder's noise

``denoiser run`` validates its options, runs the Prefect flow in ``flows/pipeline.py``
(on the API in $PREFECT_API_URL, else a temporary local one) and prints where the report
is. Wrong option values and bad data end in a one-line error and exit status 2 or 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# Only modules without torch, pandas or Prefect here: options are parsed and checked before
# those load (about 2 s), so a mistyped option answers at once. Each command imports them.
from denoiser.choices import DEFAULT_MODELS_DIR, DEFAULT_RUNS_DIR, DEVICES
from denoiser.data import DataError, verify_dataset
from denoiser.datasets import DATASETS
from denoiser.noise_spec import DEFAULT_NOISE
from denoiser.recipe import DEFAULT_MODEL, LOSSES, MODEL_NAMES, RECIPES, SCHEDULES, TrainConfig
from denoiser.workdir import OutputFolderError
from flows import (cli_adapt, cli_alerts, cli_clean, cli_deploy, cli_evaluate, cli_models, cli_server,
                   interrupt, orphans)
from flows.options import (
    ArgumentParser,
    HelpFormatter,
    library_log_to_console,
    add_precision,
    add_retention,
    minutes_or_zero,
    noise_spec,
    non_negative_int,
    positive_int,
    recipe_default,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="denoiser",
        description="Clean digit images with a convolutional denoising autoencoder.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    cli_clean.add_parsers(commands)
    cli_evaluate.add_parser(commands)
    cli_adapt.add_parser(commands)
    cli_models.add_parser(commands)
    cli_alerts.add_parser(commands)
    cli_server.add_parser(commands)
    cli_deploy.add_parser(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    # Validate everything that can be checked without Prefect before starting it (the flow
    # builds the same config again from the options the user set).
    TrainConfig.recipe(args.model, noise=args.noise, epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                loss=args.loss, schedule=args.schedule,
                                train_limit=args.train_limit, seed=args.seed,
                                max_minutes=args.max_train_minutes)
    from denoiser.device import resolve_device
    from denoiser.precision import resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))
    if args.run_id is not None and (not args.run_id or "/" in args.run_id or args.run_id.startswith(".")):
        raise ValueError(f"--run-id {args.run_id!r} must be a plain folder name")
    if args.data_dir is not None and not os.path.isdir(args.data_dir):  # a typo must not become a folder
        raise DataError(f"--data-dir {args.data_dir} does not exist (create it first to download "
                        f"{args.dataset} into it; without --data-dir the download goes to data/mnist)")
    # Bad or missing data is the most common user error: find it (downloading the files
    # if needed) before the flow starts, so it ends in one line rather than a failed run.
    with library_log_to_console():  # from here on Prefect's handlers print it
        verify_dataset(args.data_dir, dataset=DATASETS[args.dataset])  # the ingest stage parses it

    from denoiser.stages import new_run_id
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

    summary = read_json(result["summary"])
    print(
        f"report: {result['report']}\n"
        f"{summary['images']} images, mean PSNR noisy {summary['mean_psnr_noisy']:.2f} dB -> "
        f"denoised {summary['mean_psnr_denoised']:.2f} dB, mean SSIM "
        f"{summary['mean_ssim_noisy']:.3f} -> {summary['mean_ssim_denoised']:.3f} "
        f"(model {summary['model_id']})"
    )
    return 0



#: Commands that talk to the Prefect API (the one in $PREFECT_API_URL, else a temporary one).
USES_API = ("run", "clean", "serve", "evaluate", "adapt", "deploy", "alerts")


class ApiUnreachable(OSError):
    """PREFECT_API_URL names a server that does not answer."""


def check_api(url: str, timeout: float = 5.0) -> None:
    """Raise :class:`ApiUnreachable` (one line) unless the Prefect API at ``url`` answers its
    health check."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as answer:
            if answer.status == 200:
                return
            why = f"HTTP {answer.status}"
    except urllib.error.HTTPError as error:
        why = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        why = str(getattr(error, "reason", error))
    raise ApiUnreachable(f"no Prefect server answers at {url} (PREFECT_API_URL; {why}): start one with "
                         "`denoiser server start`, or unset PREFECT_API_URL to use a temporary local one")


def main(argv: Sequence[str] | None = None) -> int:
    interrupt.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:  # serve checks its schedule first, then the server (flows.cli_clean.serve)
        if args.command in USES_API and args.command != "serve" and os.environ.get("PREFECT_API_URL"):
            check_api(os.environ["PREFECT_API_URL"])
    except ApiUnreachable as error:
        return _user_error(args.command, error)
    except KeyboardInterrupt:
        print(f"denoiser {args.command}: interrupted", file=sys.stderr)
        return 130
    if args.command in ("run", "clean", "evaluate", "adapt") and not os.environ.get("PREFECT_API_URL"):
        orphans.stop_orphans()  # temporary servers a killed command left behind
        orphans.start_watchdog()
        orphans.shield_temporary_servers()
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "clean":
            return cli_clean.clean(args)
        if args.command == "serve":
            return cli_clean.serve(args)
        if args.command == "evaluate":
            return cli_evaluate.evaluate(args)
        if args.command == "adapt":
            return cli_adapt.adapt(args)
        if args.command == "models":
            return cli_models.run(args)
        if args.command == "alerts":
            return cli_alerts.run(args)
        if args.command == "server":
            return cli_server.run(args)
        if args.command == "deploy":
            return cli_deploy.run(args)
    except (ValueError, OSError) as error:
        return _user_error(args.command, error)
    except KeyboardInterrupt:
        print(f"denoiser {args.command}: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


def _user_error(command: str, error: ValueError | OSError) -> int:
    """Print a user's mistake or bad input in one line; exit status 1 for bad data or files,
    2 for a wrong value."""
    if _is(error, "denoiser.registry", "PromotionRefused"):
        print(f"denoiser models: {error}", file=sys.stderr)
        return 1
    if _is(error, "denoiser.manifest", "ManifestError"):
        print(f"denoiser {command}: error: {error}: rerun with --rebuild-manifest", file=sys.stderr)
        return 1
    print(f"denoiser {command}: error: {_one_line(error)}", file=sys.stderr)
    bad_input = isinstance(error, (DataError, OSError, OutputFolderError))
    return 1 if bad_input or _is(error, "denoiser.checkpoint", "CheckpointError") else 2


def _is(error: BaseException, module: str, name: str) -> bool:
    """``isinstance(error, module.name)`` without importing ``module`` (torch, pandas): an
    error of a module that was never imported cannot have been raised."""
    return isinstance(error, getattr(sys.modules.get(module), name, ()))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    if isinstance(error, OSError) and error.filename and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return text[0] if text else type(error).__name__


if __name__ == "__main__":
    sys.exit(main())

