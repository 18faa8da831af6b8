"""``denoiser deploy``: a folder cleaned on a schedule by workers (:mod:`flows.workers`), the
deployment kept on the Prefect server so that it outlives this command."""

from __future__ import annotations

import argparse

from flows.cli.clean import (
    CLEAN_RECORDS,
    SERVE_KEEP_DAYS,
    add_clean_arguments,
    check_schedule,
    clean_parameters,
)
from flows.cli.options import HelpFormatter, add_retention, non_negative_int, positive_int
from flows.workers import POOL


def add_parser(commands: argparse._SubParsersAction) -> None:
    deploy = commands.add_parser(
        "deploy",
        help="put a folder on a schedule, run by workers (denoiser server start --workers N)",
        description=(
            "Register a deployment of the cleaning flow for IN_DIR -> OUT_DIR with a schedule on "
            "the work pool of the Prefect server in $PREFECT_API_URL, and return. Workers on that "
            "pool run its scheduled runs: start them with `denoiser server start --workers N` or "
            "`prefect worker start --pool denoiser`. Deploy each folder under its own --name."
        ),
        formatter_class=HelpFormatter,
    )
    add_clean_arguments(deploy)
    when = deploy.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", metavar="EXPR", help="cron schedule, e.g. '0 * * * *'")
    when.add_argument("--interval", type=positive_int, metavar="SECONDS", help="run every SECONDS seconds")
    deploy.add_argument("--name", default=None,
                        help="deployment name (default: clean- and OUT_DIR's folder name); deploying "
                             "a name again replaces that deployment")
    deploy.add_argument("--pool", default=POOL, metavar="NAME", help="the process work pool (made if missing)")
    deploy.add_argument("--concurrency", type=non_negative_int, default=1, metavar="N",
                        help="runs of this deployment at once (0: no limit; a run that finds the folder "
                             "busy does nothing)")
    deploy.add_argument("--when-busy", choices=("skip", "queue"), default="skip",
                        help="a run that comes due while --concurrency runs still run: skip it (cancelled; "
                             "the next run cleans what arrived meanwhile) or queue it")
    add_retention(deploy, CLEAN_RECORDS, keep_days=SERVE_KEEP_DAYS)


def run(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from denoiser.folders import plan
    from denoiser.models import registry
    from denoiser.models.checkpoint import load_model
    from denoiser.models.device import resolve_device
    from denoiser.models.precision import resolve_precision
    from denoiser.sharing.download import model_reference
    from flows.workers import deploy_folder, folder_clash

    resolve_precision(args.precision, resolve_device(args.device))
    plan.check_folders(args.in_dir, args.out_dir)
    # The model, checked now (a deployment that names a missing model failed on every run);
    # the store is given to the runs as an absolute path (clean_parameters).
    store = os.path.abspath(args.models_dir)
    model = model_reference(args.model, store)  # a bundle is checked here; each run fetches it on its worker
    chosen = registry.choose_clean_model(model, store)  # a missing model: one line, exit 1
    if chosen.checkpoint is not None:
        load_model(chosen.checkpoint)  # and a file that is not a checkpoint
    check_schedule(args.cron)
    name = args.name or "clean-" + (Path(args.out_dir).resolve().name or "root")
    parameters = clean_parameters(args)
    clash = folder_clash(parameters, name)
    if clash is not None:
        raise ValueError(clash)
    deployment = deploy_folder(parameters, name=name, pool=args.pool, interval=args.interval,
                               cron=args.cron, concurrency_limit=args.concurrency or None, when_busy=args.when_busy)
    print(f"deployment clean-folder/{name} ({deployment}) on the work pool {args.pool!r}: "
          f"{args.in_dir} -> {args.out_dir}, " + (f"every {args.interval} s" if args.interval else f"cron {args.cron}")
          + f"\nworkers run it: denoiser server start --workers N, or prefect worker start --pool {args.pool}")
    if chosen.checkpoint is None:
        print(f"note: {store} holds no clean model yet, so the first run trains the scan recipe's inside a "
              f"worker (about 15-25 minutes on 2 CPU cores); run `denoiser clean {args.in_dir} {args.out_dir} "
              f"--models-dir {store}` once first to train it before the schedule starts")
    else:
        print(f"model: {chosen.checkpoint.model_id} ({chosen.reason}) from {store}")
    return 0
