"""The cleaning report: one row per input file, its columns and types, the counts, the
report joined from shard reports, and the before/after strip the run publishes.

Every path in a row is in display form (:func:`denoiser.files.display_name`), so a file
name that is not UTF-8 reaches Parquet escaped; ``path_bytes`` then holds its exact bytes.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from denoiser.files import display_name, printable
from denoiser.folders.read import GrayImage, ImageError, read_image
from denoiser.folders.safe_read import read_input
from denoiser.out_tree import LinkRefused

STATUSES = ("ok", "error", "skipped")
REPORT_COLUMNS = {
    "run_id": "string", "path": "string", "status": "string", "error": "string",
    "format": "string", "mode": "string", "width": "Int64", "height": "Int64",
    "inverted": "boolean", "paper": "float64", "ink": "float64", "scale": "float64",
    "model_id": "string", "model_reason": "string", "input_sha256": "string",
    "output_path": "string", "recon_mse": "float64", "noise_sigma_in": "float64",
    "noise_sigma_out": "float64", "seconds": "float64",
    "path_bytes": "object",  # the name's exact bytes where it is not UTF-8, else null
    # quality without ground truth (denoiser.checks.quality)
    "noise_level": "float64",  # clipped-noise level in the model's look
    "psnr_est": "float64",  # estimated PSNR of the output, dB
    "ood": "boolean",  # unlike the training digits
    "ood_reason": "string",
    "pages": "Int64",  # pages or frames of the file, all cleaned (the figures are the first page's)
    # what the digit-shape model reads (denoiser.scans.batch), null without one
    "ood_score": "float64",  # the probability that the output is not a digit (the flag's graded form)
    "digit": "Int64", "digit_p": "float64",  # the digit the output reads as, and its probability
    "digit_in": "Int64", "digit_in_p": "float64",  # the same of the scan before cleaning
    "identity_changed": "boolean",  # output and scan read as different digits, both confidently
}


def new_row(run_id: str, rel: str, model_id: str, **fields: Any) -> dict[str, Any]:
    """A report row for the file at ``rel`` (unset columns are None)."""
    row: dict[str, Any] = dict.fromkeys(REPORT_COLUMNS)
    shown = display_name(rel)
    row.update(run_id=run_id, path=shown, path_bytes=None if shown == rel else os.fsencode(rel),
               model_id=model_id, **fields)
    if row["output_path"] is not None:
        row["output_path"] = display_name(row["output_path"])
    return row


#: The reason of a skipped row whose content failed to be read before (then the earlier error).
KNOWN_BAD = "known bad (the same content failed on an earlier run; --retry-errors tries it again)"


def error_line(error: BaseException) -> str:
    """The error's first line; named by its type where it is not one of ours (a KeyError
    from a codec reads as "KeyError: 'XPM'", not "'XPM'")."""
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    if not isinstance(error, (ImageError, LinkRefused, OSError)) or not line:
        line = f"{type(error).__name__}: {line}".rstrip(": ")
    return printable(line[:300])


def report_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a DataFrame with the report's columns and types, sorted by path."""
    frame = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    frame = frame.astype(REPORT_COLUMNS)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


def counts(frame: pd.DataFrame) -> dict[str, int]:
    return {status: int((frame["status"] == status).sum()) for status in STATUSES}


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as a Parquet file's bytes (written where the caller says, by descriptor)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow", index=False)
    return buffer.getvalue()


def join_reports(contents: list[bytes]) -> pd.DataFrame:
    """Shard reports (Parquet files' bytes) as one report, in order."""
    frames = [pd.read_parquet(io.BytesIO(content)) for content in contents]
    return report_frame(pd.concat(frames).to_dict("records") if frames else [])


def before_after_strip(frame: pd.DataFrame, in_dir: str, picks: list[int] | None = None, count: int = 8,
                       height: int = 64) -> str:
    """A base64 PNG: the cleaned files at the row indices ``picks`` (default: the first
    ``count``), inputs on top, outputs below; each thumbnail at most ``height`` x 4 ``height``
    pixels, whatever the image's shape."""
    done = frame[(frame["status"] == "ok") & frame["path_bytes"].isna()]
    done = done.loc[[i for i in picks if i in done.index]] if picks is not None else done.head(count)
    pairs = []
    for row in done.itertuples():
        try:  # read as the cleaner does, so 16-bit and float scans show at their real scale
            before = _thumbnail(read_image(row.path, read_input(in_dir, Path(in_dir) / row.path)), height)
            after = _thumbnail(read_image(row.output_path), height)
        except (ImageError, OSError):
            continue
        pairs.append((before, after))
    if not pairs:
        return ""
    gap = 4
    strip = Image.new("L", (sum(b.width + gap for b, _ in pairs) + gap, 2 * height + 3 * gap), 255)
    x = gap
    for before, after in pairs:
        strip.paste(before, (x, gap))
        strip.paste(after, (x, height + 2 * gap))
        x += before.width + gap
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _thumbnail(image: GrayImage, height: int) -> Image.Image:
    width = min(4 * height, max(1, round(image.width * height / image.height)))
    gray = Image.fromarray((image.pixels * 255).round().astype("uint8"), mode="L")
    return gray.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
