"""The command line's option types and formatting, shared by every ``denoiser`` command."""

from __future__ import annotations

import argparse
import contextlib
import logging
from collections.abc import Iterator

from denoiser.choices import PRECISIONS
from denoiser.evaluation.baselines import BASELINES
from denoiser.models.recipe import BF16_RECIPES, RECIPES
from denoiser.noise.spec import NoiseSpec

DEFAULT_BASELINES = "gaussian,median,tv,wavelet,nlmeans"  # as typed; argparse applies baseline_list


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


def positive_float(text: str) -> float:
    """An argparse type: a number > 0, with a plain-words error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a number above 0")
    return value


def minutes_or_zero(text: str) -> float:
    """An argparse type: minutes above 0, or 0 for no limit."""
    try:
        if float(text) == 0:
            return 0.0
    except ValueError:
        pass  # positive_float says what is wrong
    return positive_float(text)


def add_precision(parser: argparse.ArgumentParser, what: str) -> None:
    """The ``--precision`` option, the same on every command that runs a model."""
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help=f"precision to {what} in: auto uses bf16 autocast where this machine "
                             "supports it and a short measurement (kept per machine) finds it faster, "
                             "float32 otherwise")


def add_retention(parser: argparse.ArgumentParser, what: str, *, keep_days: float | None = None) -> None:
    """``--keep-runs`` and ``--keep-days``: how many earlier runs' ``what`` to keep."""
    parser.add_argument("--keep-runs", type=positive_int, default=None, metavar="N",
                        help=f"keep the {what} of the newest N runs only; older ones are removed at the "
                             "end of each run (default: no limit)")
    parser.add_argument("--keep-days", type=positive_float, default=keep_days, metavar="DAYS",
                        help=f"remove the {what} of runs older than DAYS days at the end of each run"
                             + ("" if keep_days else " (default: no limit)"))


def noise_spec(text: str) -> str:
    try:
        return str(NoiseSpec.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def recipe_default(option: str) -> str:
    """'(default: the model's recipe: unet 8, conv 10)' for an option the recipes set."""
    values = {model: str(RECIPES[model][option]) for model in ("unet", "conv")}
    values = {m: v + (f" ({BF16_RECIPES[m][option]} in bf16)" if option in BF16_RECIPES.get(m, {}) else "")
              for m, v in values.items()}
    return "(default: the model's recipe: " + ", ".join(f"{m} {v}" for m, v in values.items()) + ")"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after each option's help, except where there is no default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help or ""
        if isinstance(action.default, (list, tuple)):  # as the user would type them
            return f"{action.help or ''} (default: {' '.join(map(str, action.default))})"
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """Errors in one line (no usage block), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def baseline_list(text: str) -> list[str]:
    """An argparse type: 'tv,nlmeans' -> ['tv', 'nlmeans']; 'none' -> []."""
    names = [] if text.strip() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown baseline {unknown[0]!r}; choose from {','.join(BASELINES)}")
    return names


@contextlib.contextmanager
def library_log_to_console() -> Iterator[None]:
    """The library's INFO lines on the console, bare, for the duration (before a flow's own
    handlers take over)."""
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    library_log = logging.getLogger("denoiser")
    library_log.addHandler(console)
    library_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        library_log.removeHandler(console)
