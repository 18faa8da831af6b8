"""``denoiser clean`` and ``denoiser serve``: a folder of scans into a cleaned mirror, once
or on a schedule (the flow is :func:`flows.clean.clean_folder`)."""

from __future__ import annotations

import argparse
import os
import sys

from denoiser.choices import DEFAULT_MODELS_DIR, DEVICES, MAX_PIXELS, TONES
from denoiser.files import printable
from denoiser.folders.safe_read import MAX_FILE_MB
from flows.cli.options import (
    HelpFormatter,
    add_precision,
    add_retention,
    non_negative_int,
    positive_float,
    positive_int,
)

CLEAN_RECORDS = "reports, shard files and history rows"
#: Scheduled runs keep this much by default: an hourly schedule would otherwise pile up reports.
SERVE_KEEP_DAYS = 30.0


def add_parsers(commands: argparse._SubParsersAction) -> None:
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
    clean.add_argument("--dry-run", action="store_true",
                       help="list what would be cleaned, skipped or refused; write nothing")
    add_retention(clean, CLEAN_RECORDS)
    clean.add_argument("--rebuild-manifest", action="store_true",
                       help="set a corrupt manifest aside and rebuild it from the run reports "
                            "(only outputs whose input still has the recorded hash count as done)")


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
    add_retention(serve, CLEAN_RECORDS, keep_days=SERVE_KEEP_DAYS)


def png_level(text: str) -> int:
    """An argparse type: a zlib level, 0-9."""
    value = non_negative_int(text)
    if value > 9:
        raise argparse.ArgumentTypeError(f"{value} must be 0-9")
    return value


def add_clean_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("in_dir", metavar="IN_DIR", help="folder of images to clean (only read)")
    command.add_argument("out_dir", metavar="OUT_DIR", help="folder for the cleaned mirror")
    command.add_argument("--model", metavar="ID|PATH|BUNDLE|URL", default=None,
                         help="model id in the store, a checkpoint's .pt path, or a model bundle (a .bundle "
                              "file, or an http(s) URL, with #sha256=HEX to pin it), checked and put into "
                              "the store first (default: the model "
                              "promoted for clean (denoiser models promote ID --for clean), else the "
                              "scan recipe's model, trained on MNIST first if absent)")
    command.add_argument("--no-train", dest="train", action="store_false",
                         help="fail at once, rather than train first, when the store has no model for clean "
                              "(a first clean otherwise trains the scan model and its checks: it says how long)")
    command.add_argument("--retry-errors", action="store_true",
                         help="read again the files whose same content could not be read as an image on "
                              "an earlier run (default: such a file is skipped as known bad, no new error)")
    command.add_argument("--tones", choices=TONES, default="keep",
                         help="keep each scan's paper tone and ink darkness, or normalize to pure "
                              "paper and full-contrast ink")
    command.add_argument("--batch-size", type=positive_int, default=None, metavar="N",
                         help="images of one size denoised together, fewer when they are "
                              "large so a batch stays under 1M pixels (default: 64 on a CPU, "
                              "1024 on a GPU)")
    command.add_argument("--shard-size", type=positive_int, default=2000, metavar="N",
                         help="files per shard; a shard is one retryable task, streamed "
                              "through in chunks so memory does not grow with it")
    command.add_argument("--max-file-mb", type=positive_float, default=MAX_FILE_MB, metavar="MB",
                         help="input files larger than this are error rows, never read")
    command.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, metavar="N",
                         help="files that would decode to more pixels (all pages together) are error "
                              "rows, never decoded; the default keeps one file under about 1 GB of memory")
    command.add_argument("--device", choices=DEVICES, default="auto",
                         help="where to denoise; auto picks CUDA, then MPS, then CPU")
    add_precision(command, "denoise")
    command.add_argument("--processes", type=non_negative_int, default=None, metavar="N",
                         help="worker processes cleaning shards side by side, each on one core "
                              "(default: one per CPU for runs of 4,000 files or more on the CPU; "
                              "0: every shard in this process)")
    command.add_argument("--encode-processes", type=non_negative_int, default=0, metavar="N",
                         help="worker processes that encode outputs beside the model; 0 encodes in the "
                              "writing threads, which measured faster on small scans")
    command.add_argument("--png-level", type=png_level, default=6, metavar="0-9",
                         help="zlib level of PNG outputs: 6 is Pillow's; on large scans 3 encodes about a "
                              "third faster for files about 8%% larger")
    command.add_argument("--strict", action="store_true",
                         help="a run in which any file could not be processed ends Failed (and "
                              "`clean` exits with status 1); without it such a run ends Completed, "
                              "tagged has-errors, its message naming the first failure")
    command.add_argument("--models-dir", metavar="DIR", default=str(DEFAULT_MODELS_DIR),
                         help="the model store")
    command.add_argument("--data-dir", metavar="DIR", default=None,
                         help="MNIST folder, used to train the default model when the store is "
                              "empty, and by --adapt (default: $DENOISER_MNIST_DIR, else data/mnist)")
    command.add_argument("--adapt", action="store_true",
                         help="clean with the model adapted to this folder's noise (denoiser adapt): "
                              "made on the first run, reused while the noise holds, made again when "
                              "it drifts; used only if it passes the gate")
    command.add_argument("--adapt-minutes", type=positive_float, default=2.5, metavar="N",
                         help="time for adapting when --adapt adapts (fine-tuning and the gate; sampling on top)")


def clean_settings(args: argparse.Namespace):  # -> tuple[CleanOptions, CleanRun]
    """The flow's options and run settings from the options of clean, serve and deploy
    (folders made absolute, so a deployment does not depend on where it runs)."""
    from denoiser.choices import DEFAULT_RUNS_DIR
    from denoiser.folders.settings import CleanOptions, CleanRun

    options = CleanOptions(tones=args.tones, device=args.device, precision=args.precision,
                           batch_size=args.batch_size, overwrite=getattr(args, "overwrite", False),
                           retry_errors=args.retry_errors,
                           processes=args.processes,
                           encode_processes=args.encode_processes, png_level=args.png_level,
                           max_file_mb=args.max_file_mb, max_pixels=args.max_pixels)
    report = getattr(args, "report", None)
    run = CleanRun(model=args.model, shard_size=args.shard_size, report=report and os.path.abspath(report),
                   strict=args.strict, keep_runs=args.keep_runs, keep_days=args.keep_days, adapt=args.adapt,
                   adapt_minutes=args.adapt_minutes, rebuild_manifest=getattr(args, "rebuild_manifest", False),
                   models_dir=os.path.abspath(args.models_dir), data_dir=args.data_dir and os.path.abspath(args.data_dir),
                   runs_dir=os.path.abspath(DEFAULT_RUNS_DIR), train=args.train)
    return options, run


def clean_parameters(args: argparse.Namespace) -> dict:
    """The flow's parameters as plain JSON values, for a deployment stored on the server."""
    from dataclasses import asdict

    options, run = clean_settings(args)
    return {"in_dir": os.path.abspath(args.in_dir), "out_dir": os.path.abspath(args.out_dir),
            "options": asdict(options), "run": asdict(run)}


def clean(args: argparse.Namespace) -> int:
    import pandas as pd

    from denoiser.folders import plan, workdir
    from denoiser.folders import report as clean_report
    from denoiser.folders.manifest import Manifest
    from denoiser.models import registry
    from denoiser.models.checkpoint import load_model
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision
    from denoiser.sharing.download import model_reference

    args.model = model_reference(args.model, os.path.abspath(args.models_dir))  # a bad bundle: one line, here
    options, run = clean_settings(args)  # a wrong value is one line here
    if options.precision == "bf16":  # an unsupported bf16 fails here, not in the flow
        resolve_precision("bf16", resolve_device(options.device))
    plan.check_folders(args.in_dir, args.out_dir, args.report)  # the flow reads the tree
    chosen = registry.choose_clean_model(args.model, args.models_dir)  # a bad --model fails here
    if chosen.checkpoint is not None:  # a file that is not a checkpoint (a crafted pickle) too
        load_model(chosen.checkpoint)
    elif not args.train and not args.dry_run:  # fails fast, before any flow starts
        from denoiser.folders.model_choice import no_training

        raise no_training(os.path.abspath(args.models_dir))
    if args.dry_run:
        frame = clean_report.report_frame(plan.dry_run(plan.plan(args.in_dir, args.out_dir), in_dir=args.in_dir,
                                                       out_dir=args.out_dir, model_id=chosen.model_id,
                                                       overwrite=args.overwrite, rerun_other_models=chosen.rerun,
                                                       max_file_mb=args.max_file_mb, max_pixels=args.max_pixels))
        for row in frame.itertuples():
            print(f"{row.status:8} {printable(row.path)}" + ("" if pd.isna(row.error) else f"  ({printable(row.error)})"))
        n = frame["status"].value_counts()
        print(f"dry run: {len(frame)} files: {n.get('todo', 0)} to clean, {n.get('skipped', 0)} skipped, "
              f"{n.get('error', 0)} error; model {chosen.describe()}")
        return 0
    with workdir.open_tree(args.out_dir) as tree:  # a read-only or broken OUT_DIR is one line, here
        os.close(workdir.open_lock_file(tree))
        if not args.rebuild_manifest:  # a damaged manifest too, before the flow starts
            Manifest.of(tree, create=False).check()
    if args.adapt:
        from denoiser.data.mnist import verify_dataset

        verify_dataset(args.data_dir)  # adapting trains on MNIST's digits

    from flows.clean import clean_folder

    flow = clean_folder
    if args.task_runner == "dask":
        flow = clean_folder.with_options(task_runner=dask_task_runner(args.dask_address))
    state = flow(in_dir=os.path.abspath(args.in_dir), out_dir=os.path.abspath(args.out_dir), options=options,
                 run=run, return_state=True)
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # the flow itself broke (not a file): Prefect logged why
        raise result
    if result["status"] == "busy":  # not a failure: the run in progress does the work
        print(f"another run is cleaning into {args.out_dir}; nothing done", file=sys.stderr)
        return 0
    if result["status"] == "stopped":  # a full disk, say: what was written is recorded
        print(f"denoiser clean: error: {result['reason']}", file=sys.stderr)
        return 1
    print(f"{result['files']} files: {result['ok']} ok, {result['error']} error, "
          f"{result['skipped']} skipped, {result['ood']} flagged as unlike the training digits\n"
          f"model {result['model_why']}\n"
          + (f"report: {result['report']}" if result["report"] else
             "report: none (nothing was cleaned or failed; the run is in the folder's history)"))
    return 1 if state.is_failed() else 0  # no file cleaned, or --strict and a file failed


def dask_task_runner(address: str | None):
    """prefect-dask's runner on an existing cluster, or on a local one."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # Worker processes need a real Prefect server to report to; without one, keep the
    # workers in this process (threads) rather than start a temporary server in each.
    # Bound to this machine only, the dashboard included: to expose a cluster deliberately,
    # start one yourself (dask scheduler --host ...) and pass --dask-address.
    processes = bool(os.environ.get("PREFECT_API_URL"))
    kwargs = {"n_workers": 2, "processes": processes, "threads_per_worker": 1,
              "dashboard_address": "127.0.0.1:0", "worker_dashboard_address": "127.0.0.1:0"}
    if processes:  # worker processes talk over TCP (threads in one process do not)
        kwargs["host"] = "127.0.0.1"
    return DaskTaskRunner(cluster_kwargs=kwargs)


def check_schedule(cron: str | None) -> None:
    """A schedule needs a valid cron expression (when given) and a server to keep it."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_URL

    if cron is not None:
        try:
            CronSchedule(cron=cron)
        except ValueError:
            raise ValueError(f"--cron {cron!r} is not a cron expression (e.g. '0 * * * *': "
                             "minute hour day month weekday)") from None
    if not PREFECT_API_URL.value():
        raise ValueError(
            "schedules need a running Prefect server, and PREFECT_API_URL is not set: start one "
            "with `denoiser server start` and run `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    from flows.cli.main import check_api

    check_api(PREFECT_API_URL.value())


def serve(args: argparse.Namespace) -> int:
    from denoiser.folders import plan
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision

    resolve_precision(args.precision, resolve_device(args.device))
    plan.check_folders(args.in_dir, args.out_dir)
    check_schedule(args.cron)
    from prefect.deployments.runner import EntrypointType

    from flows.clean import clean_folder

    clean_folder.serve(
        name=args.name,
        cron=args.cron,
        interval=args.interval,
        parameters=clean_parameters(args),
        global_limit=1,
        description=f"Clean {args.in_dir} into {args.out_dir}",
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    return 0
