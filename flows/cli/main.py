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
from denoiser.data.mnist import DataError
from denoiser.folders.workdir import OutputFolderError
from flows import interrupt, orphans
from flows.cli import adapt as cli_adapt
from flows.cli import alerts as cli_alerts
from flows.cli import clean as cli_clean
from flows.cli import deploy as cli_deploy
from flows.cli import evaluate as cli_evaluate
from flows.cli import models as cli_models
from flows.cli import run as cli_run
from flows.cli import server as cli_server
from flows.cli import status as cli_status
from flows.cli.options import (
    ArgumentParser,
    HelpFormatter,
)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="denoiser",
        description="Clean digit images with a convolutional denoising autoencoder.",
        formatter_class=HelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_run.add_parser(commands)
    cli_clean.add_parsers(commands)
    cli_evaluate.add_parser(commands)
    cli_adapt.add_parser(commands)
    cli_models.add_parser(commands)
    cli_alerts.add_parser(commands)
    cli_server.add_parser(commands)
    cli_deploy.add_parser(commands)
    cli_status.add_parser(commands)
    return parser


#: Commands that talk to the Prefect API (the one in $PREFECT_API_URL, else a temporary one).
USES_API = ("run", "clean", "serve", "evaluate", "adapt", "deploy", "alerts")


class ApiUnreachable(OSError):
    """PREFECT_API_URL names a server that does not answer."""


def check_api(url: str, timeout: float = 5.0, auth: str | None = None) -> None:
    """Raise :class:`ApiUnreachable` (one line) unless the Prefect API at ``url`` answers its
    health check and lets this client in: a server that wants a password (Prefect's basic
    auth) gets ``auth``, else ``$PREFECT_API_AUTH_STRING``."""
    import base64
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as answer:
            why = None if answer.status == 200 else f"HTTP {answer.status}"
    except urllib.error.HTTPError as error:
        why = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        why = str(getattr(error, "reason", error))
    if why is not None:
        raise ApiUnreachable(f"no Prefect server answers at {url} (PREFECT_API_URL; {why}): start one with "
                             "`denoiser server start`, or unset PREFECT_API_URL to use a temporary local one")
    auth = auth or os.environ.get("PREFECT_API_AUTH_STRING")
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:  # /health is open to all; the rest of the API is behind the password, if it has one
        urllib.request.urlopen(urllib.request.Request(url.rstrip("/") + "/admin/version", headers=headers),
                               timeout=timeout).close()
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise ApiUnreachable(
                f"the Prefect server at {url} wants a password{' and refused the one given' if auth else ''}: "
                "set PREFECT_API_AUTH_STRING to its USER:PASSWORD (a server started with `denoiser server "
                "start --auth` keeps it in the file api-auth of its state folder)") from None
    except (urllib.error.URLError, OSError, ValueError):
        pass  # it answered its health check: the command's own calls will say what is wrong


def main(argv: Sequence[str] | None = None) -> int:
    interrupt.install()
    parser = build_parser()
    args = parser.parse_args(argv)
    commands = {"run": cli_run.run, "clean": cli_clean.clean, "serve": cli_clean.serve,
                "evaluate": cli_evaluate.evaluate, "adapt": cli_adapt.adapt, "models": cli_models.run,
                "alerts": cli_alerts.run, "server": cli_server.run, "deploy": cli_deploy.run,
                "status": cli_status.run}
    try:  # serve and deploy check their schedule first, then the server (flows.cli.clean.check_schedule)
        if args.command in USES_API and args.command not in ("serve", "deploy") and os.environ.get("PREFECT_API_URL"):
            check_api(os.environ["PREFECT_API_URL"])
        if args.command in ("run", "clean", "evaluate", "adapt") and not os.environ.get("PREFECT_API_URL"):
            orphans.stop_orphans()  # temporary servers a killed command left behind
            orphans.start_watchdog()
            orphans.shield_temporary_servers()
        return commands[args.command](args)
    except (ValueError, OSError) as error:
        if not interrupt.requested.is_set():
            return _user_error(args.command, error)
    except KeyboardInterrupt:
        pass
    # Ctrl-C, also where a library caught the KeyboardInterrupt and raised its own error
    # (pydantic's serializer wraps it in a ValueError: "Error calling function `_ser_model`").
    print(f"denoiser {args.command}: interrupted", file=sys.stderr)
    return 130


def _user_error(command: str, error: ValueError | OSError) -> int:
    """Print a user's mistake or bad input in one line; exit status 1 for bad data or files,
    2 for a wrong value."""
    if _is(error, "denoiser.models.registry", "PromotionRefused"):
        print(f"denoiser models: {error}", file=sys.stderr)
        return 1
    if _is(error, "denoiser.folders.manifest", "ManifestError"):
        print(f"denoiser {command}: error: {error}: rerun with --rebuild-manifest", file=sys.stderr)
        return 1
    print(f"denoiser {command}: error: {_one_line(error)}", file=sys.stderr)
    bad_input = isinstance(error, (DataError, OSError, OutputFolderError))
    return 1 if bad_input or _is(error, "denoiser.models.checkpoint", "CheckpointError") \
        or _is(error, "denoiser.sharing.bundle", "BundleError") else 2


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

