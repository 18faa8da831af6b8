"""The ``denoiser`` command.

    denoiser run                                   # the default model on MNIST, full size
    denoiser run --model conv                      # the seed's model and recipe
    denoiser run --epochs 1 --train-limit 2048 --test-limit 512   # a smoke-sized run
    denoiser run --data-dir ~/mnist --noise salt-pepper:0.1 --retrain
    denoiser evaluate --limit 1000 --baselines tv,nlmeans --json eval.json

``denoiser run`` validates its options, runs the Prefect flow in ``flows/pipeline.py``
(on the API in $PREFECT_API_URL, else a temporary local one) and prints where the report
is. Wrong option values and bad data end in a one-line error and exit status 2 or 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from denoiser.baselines import BASELINES
from denoiser.checkpoint import DEFAULT_MODELS_DIR
from denoiser.data import DATASETS, DataError, load_dataset
from denoiser.device import DEVICES, resolve_device
from denoiser.model import MODEL_NAMES
from denoiser.noise import DEFAULT_NOISE, NoiseSpec
from denoiser.stages import DEFAULT_RUNS_DIR
from denoiser.train import DEFAULT_MODEL, LOSSES, RECIPES, SCHEDULES, TrainConfig


DEFAULT_BASELINES = ["gaussian", "median", "tv", "wavelet", "nlmeans"]


def int_at_least(minimum: int):
    """An argparse type: a whole number >= ``minimum``, with a plain-words error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
        return value

    return parse


positive_int, non_negative_int = int_at_least(1), int_at_least(0)


def noise_spec(text: str) -> str:
    try:
        return str(NoiseSpec.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def recipe_default(option: str) -> str:
    """'(default: the model's recipe: unet 8, conv 10)' for an option the recipes set."""
    values = {model: RECIPES[model][option] for model in ("unet", "conv")}
    return "(default: the model's recipe: " + ", ".join(f"{m} {v}" for m, v in values.items()) + ")"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after each option's help, except where there is no default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """Errors in one line (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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
                     help="network: a small U-Net, the seed's conv DAE, or a dense baseline; "
                          "each comes with its recipe, which the options below override")
    run.add_argument("--noise", type=noise_spec, default=DEFAULT_NOISE, metavar="SPEC",
                     help="KIND:LEVEL, one of gaussian:STD, salt-pepper:FRACTION, "
                          "poisson:PEAK, speckle:STD; a range LOW-HIGH trains a blind model")
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
    run.add_argument("--denoise-batch-size", type=positive_int, default=None, metavar="N",
                     help="batch size for denoising the test set; results do not depend on it "
                          "(default: 64 on a CPU, where it is fastest, 1024 on a GPU)")
    run.add_argument("--train-limit", type=positive_int, default=None, metavar="N",
                     help="train on a random N of the training images (all when unset)")
    run.add_argument("--test-limit", type=positive_int, default=None, metavar="N",
                     help="denoise and report the first N test images (all when unset)")
    run.add_argument("--device", choices=DEVICES, default="auto",
                     help="where to train and denoise; auto picks CUDA, then MPS, then CPU")
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
    clean = commands.add_parser(
        "clean",
        help="clean a folder of scanned digit images into a mirror folder",
        description=(
            "Clean every image under IN_DIR (png, jpg, bmp, tif, webp, gif; any mode, size "
            "and bit depth) into the same relative path under OUT_DIR, in the same format. "
            "Unchanged inputs are skipped on reruns; bad files become error rows."
        ),
        formatter_class=HelpFormatter,
    )
    add_clean_arguments(clean)
    clean.add_argument("--report", metavar="PATH", default=None,
                       help="where the Parquet report goes (default: "
                            "OUT_DIR/.denoiser/reports/RUN_ID.parquet)")
    clean.add_argument("--task-runner", choices=("thread", "dask"), default="thread",
                       help="run shards in a thread pool or on a Dask cluster")
    clean.add_argument("--dask-address", metavar="ADDR", default=None,
                       help="scheduler of an existing Dask cluster, e.g. tcp://host:8786 "
                            "(default: a local cluster)")
    clean.add_argument("--overwrite", action="store_true",
                       help="clean every file again, even unchanged ones")
    clean.add_argument("--strict", action="store_true",
                       help="exit with status 1 if any file could not be processed")
    clean.add_argument("--dry-run", action="store_true",
                       help="list what would be cleaned, skipped or refused; write nothing")

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
    evaluate.add_argument("--limit", type=positive_int, default=None, metavar="N",
                          help="use the first N test images (all when unset)")
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

    serve = commands.add_parser(
        "serve",
        help="serve a scheduled deployment that cleans IN_DIR into OUT_DIR",
        description=(
            "Register a deployment of the cleaning flow with a schedule on the Prefect server "
            "in $PREFECT_API_URL and run its scheduled runs until stopped (Ctrl-C). Each run "
            "cleans what is new or changed."
        ),
        formatter_class=HelpFormatter,
    )
    add_clean_arguments(serve)
    when = serve.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron schedule, e.g. '0 * * * *'")
    when.add_argument("--interval", type=positive_int, metavar="SECONDS",
                      help="run every SECONDS seconds")
    serve.add_argument("--name", default="clean-folder", help="deployment name")
    return parser


def add_clean_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("in_dir", metavar="IN_DIR", help="folder of images to clean (only read)")
    command.add_argument("out_dir", metavar="OUT_DIR", help="folder for the cleaned mirror")
    command.add_argument("--model", metavar="ID|PATH", default=None,
                         help="model id in the store, or a checkpoint's .pt path (default: the "
                              "newest model in the store; if none, train the default on MNIST)")
    command.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                         help="images of one size denoised together, fewer when they are "
                              "large so a batch stays under 1M pixels (default: 64 on a CPU, "
                              "1024 on a GPU)")
    command.add_argument("--shard-size", type=positive_int, default=2000, metavar="N",
                         help="files per shard; a shard is one retryable task, streamed "
                              "through in chunks so memory does not grow with it")
    command.add_argument("--device", choices=DEVICES, default="auto",
                         help="where to denoise; auto picks CUDA, then MPS, then CPU")
    command.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR),
                         help="the model store")
    command.add_argument("--data-dir", metavar="DIR", default=None,
                         help="MNIST folder, used only to train the default model when the "
                              "store is empty (default: $DENOISER_MNIST_DIR, else data/mnist)")


def _clean_parameters(args: argparse.Namespace) -> dict:
    return dict(in_dir=os.path.abspath(args.in_dir), out_dir=os.path.abspath(args.out_dir),
                model=args.model, batch_size=args.batch_size, shard_size=args.shard_size,
                device=args.device, models_dir=os.path.abspath(args.models_dir),
                data_dir=args.data_dir and os.path.abspath(args.data_dir))


def _clean(args: argparse.Namespace) -> int:
    import pandas as pd

    from denoiser import checkpoint, cleaning

    resolve_device(args.device)
    entries = cleaning.plan(args.in_dir, args.out_dir)
    chosen = checkpoint.select_checkpoint(args.model, args.models_dir)  # a bad --model fails here
    if args.dry_run:
        model_id = chosen.model_id if chosen else None
        frame = cleaning.report_frame(cleaning.dry_run(entries, out_dir=args.out_dir,
                                                       model_id=model_id, overwrite=args.overwrite))
        for row in frame.itertuples():
            print(f"{row.status:8} {row.path}" + ("" if pd.isna(row.error) else f"  ({row.error})"))
        n = frame["status"].value_counts()
        print(f"dry run: {len(frame)} files: {n.get('todo', 0)} to clean, {n.get('skipped', 0)} "
              f"skipped, {n.get('error', 0)} error"
              + ("" if model_id else "; the default model would be trained first"))
        return 0

    import flows  # noqa: F401 - sets Prefect's environment before Prefect is imported
    from flows.clean import clean_folder

    flow = clean_folder
    if args.task_runner == "dask":
        flow = clean_folder.with_options(task_runner=dask_task_runner(args.dask_address))
    result = flow(**_clean_parameters(args), overwrite=args.overwrite,
                  report=args.report and os.path.abspath(args.report))
    if result["status"] == "busy":
        print(f"another run is cleaning into {args.out_dir}; nothing done", file=sys.stderr)
        return 1
    print(f"{result['files']} files: {result['ok']} ok, {result['error']} error, "
          f"{result['skipped']} skipped (model {result['model_id']})\nreport: {result['report']}")
    if result["files"] and result["ok"] + result["skipped"] == 0:
        return 1
    return 1 if args.strict and result["error"] else 0


def dask_task_runner(address: str | None):
    """prefect-dask's runner on an existing cluster, or on a local one."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # Worker processes need a real Prefect server to report to; without one, keep the
    # workers in this process (threads) rather than start a temporary server in each.
    processes = bool(os.environ.get("PREFECT_API_URL"))
    return DaskTaskRunner(cluster_kwargs={"n_workers": 2, "processes": processes,
                                          "threads_per_worker": 1})


def _serve(args: argparse.Namespace) -> int:
    resolve_device(args.device)
    from denoiser import cleaning

    cleaning.plan(args.in_dir, args.out_dir)
    import flows  # noqa: F401
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise ValueError(
            "schedules need a running Prefect server, and PREFECT_API_URL is not set: start one "
            "with `prefect server start` and run `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    from prefect.deployments.runner import EntrypointType

    from flows.clean import clean_folder

    clean_folder.serve(
        name=args.name,
        cron=args.cron,
        interval=args.interval,
        parameters=_clean_parameters(args),
        global_limit=1,
        description=f"Clean {args.in_dir} into {args.out_dir}",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    # Validate everything that can be checked without Prefect before starting it.
    config = TrainConfig.recipe(args.model, noise=args.noise, epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                loss=args.loss, schedule=args.schedule,
                                train_limit=args.train_limit, seed=args.seed)
    resolve_device(args.device)
    if args.run_id is not None and (not args.run_id or "/" in args.run_id or args.run_id.startswith(".")):
        raise ValueError(f"--run-id {args.run_id!r} must be a plain folder name")
    # Bad or missing data is the most common user error: find it (downloading the files
    # if needed) before the flow starts, so it ends in one line rather than a failed run.
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    library_log = logging.getLogger("denoiser")
    library_log.addHandler(console)
    library_log.setLevel(logging.INFO)
    try:
        load_dataset(args.data_dir, dataset=DATASETS[args.dataset])
    finally:
        library_log.removeHandler(console)  # from here on Prefect's handlers print it

    import flows  # noqa: F401 - sets Prefect's environment before Prefect is imported
    from denoiser.stages import new_run_id
    from flows.pipeline import mnist_pipeline

    run_id = args.run_id or new_run_id()
    result = mnist_pipeline.with_options(retries=args.flow_retries)(
        data_dir=args.data_dir, dataset=args.dataset, model=config.model, noise=config.noise,
        epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, loss=config.loss, schedule=config.schedule,
        denoise_batch_size=args.denoise_batch_size, train_limit=config.train_limit,
        test_limit=args.test_limit, device=args.device, seed=config.seed,
        retrain=args.retrain, runs_dir=args.runs_dir, models_dir=args.models_dir,
        run_id=run_id,
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


def baseline_list(text: str) -> list[str]:
    """An argparse type: 'tv,nlmeans' -> ['tv', 'nlmeans']; 'none' -> []."""
    names = [] if text.strip() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline {unknown[0]!r}; choose from {','.join(BASELINES)}")
    return names


def _evaluate(args: argparse.Namespace) -> int:
    import json

    from denoiser import checkpoint, evaluate

    resolve_device(args.device)
    models = args.models
    if models is None:
        models = [c.model_id for c in checkpoint.list_checkpoints(args.models_dir)]
    for model in models:  # a wrong id fails here, in one line
        checkpoint.resolve_checkpoint(model, args.models_dir)
    load_dataset(args.data_dir, dataset=DATASETS[args.dataset])

    import flows  # noqa: F401 - sets Prefect's environment before Prefect is imported
    from flows.evaluate import evaluate_models

    result = evaluate_models(models=models, baselines=args.baselines, noises=args.noise,
                             limit=args.limit, tune_images=args.tune_images, seed=args.seed,
                             data_dir=args.data_dir,
                             dataset=args.dataset, models_dir=args.models_dir, out_dir=args.out_dir,
                             device=args.device)
    print(evaluate.format_table(result["rows"]))
    print(f"evaluation: {result['evaluation']}")
    if args.json:
        from denoiser.files import write_bytes

        write_bytes(args.json, (json.dumps(result["rows"], indent=2) + "\n").encode())
        print(f"summary rows: {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return _run(args)
        if args.command == "clean":
            return _clean(args)
        if args.command == "serve":
            return _serve(args)
        if args.command == "evaluate":
            return _evaluate(args)
    except (DataError, ValueError, FileNotFoundError) as error:
        print(f"denoiser {args.command}: error: {error}", file=sys.stderr)
        return 2 if not isinstance(error, (DataError, FileNotFoundError)) else 1
    except KeyboardInterrupt:
        print(f"denoiser {args.command}: interrupted", file=sys.stderr)
        return 130
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
