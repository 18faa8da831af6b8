"""The folder's trend at a glance: four small line charts of its last runs (input noise,
share flagged, share failed, estimated PSNR) over time, a drifted run marked in red on the
chart its drift is about, as a PNG.

Drawn with Pillow, so the UI artifact needs no plotting library.
"""

from __future__ import annotations

import base64
import io
import math

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

#: (column, title, format, the words of a drift reason about it). A drifted run is marked red
#: only on the chart its reason is about. The noise axis starts at 0 and the PSNR axis spans
#: at least MIN_DB_SPAN: a wiggle of 0.272-0.278 drawn full height looked like a cliff.
PANELS = (("noise_in_median", "median input noise", "{:.3f}", "input noise"),
          ("ood_share", "share flagged (unlike digits)", "{:.0%}", "flagged"),
          ("error_rate", "share failed", "{:.0%}", "failed"),
          ("psnr_est_median", "median estimated PSNR (dB)", "{:.1f}", None))
MIN_DB_SPAN = 3.0
PANEL_W, PANEL_H, MARGIN = 300, 150, 36
INK, GRID, LINE, ALERT = (30, 30, 30), (220, 220, 220), (40, 90, 200), (210, 40, 40)


def trend_png(history: pd.DataFrame, last: int = 30) -> bytes:
    """A PNG of the last ``last`` runs of ``history`` (oldest left)."""
    runs = history.tail(last).reset_index(drop=True)
    canvas = Image.new("RGB", (2 * PANEL_W, 2 * PANEL_H), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    for k, (column, title, fmt, about) in enumerate(PANELS):
        left, top = (k % 2) * PANEL_W, (k // 2) * PANEL_H
        drifted = [isinstance(why, str) and about is not None and about in why for why in runs["drift"]]
        _panel(draw, font, runs, column, title, fmt, left, top, drifted)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def trend_markdown(history: pd.DataFrame, folder: str, last: int = 30) -> str:
    """The trend artifact: the chart and one line on the latest run."""
    latest = history.iloc[-1]
    status = f"**drift**: {latest['drift']}" if isinstance(latest["drift"], str) else "no drift"
    png = base64.b64encode(trend_png(history, last)).decode()
    return (f"# Trend of {folder}\n\nThe last {min(last, len(history))} of {len(history)} runs; "
            f"latest run {latest['run_id']}: {status}.\n\n![trend](data:image/png;base64,{png})\n")


def time_span(runs: pd.DataFrame) -> tuple[str, str]:
    """The first and the last run's time, as the charts' time axis shows them (UTC)."""
    times = pd.to_datetime(runs["time"], utc=True)
    return tuple(t.strftime("%m-%d %H:%M") for t in (times.iloc[0], times.iloc[-1]))  # type: ignore[return-value]


def _panel(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, runs: pd.DataFrame, column: str, title: str,
           fmt: str, left: int, top: int, drifted: list[bool]) -> None:
    values = [float(v) for v in runs[column]]
    latest = f", latest {fmt.format(values[-1])}" if values and math.isfinite(values[-1]) else ""
    draw.text((left + MARGIN, top + 4), title + latest, fill=INK, font=font)
    x0, y0, x1, y1 = left + MARGIN, top + 22, left + PANEL_W - 12, top + PANEL_H - 20
    draw.rectangle((x0, y0, x1, y1), outline=GRID)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        draw.text((x0 + 8, y0 + 8), "no data", fill=INK, font=font)
        return
    low, high = min(finite), max(finite)
    if fmt.endswith("%}"):  # a share: from 0, and at least to 10%, so a few flagged files look few
        low, high = 0.0, max(high, 0.1)
    elif column == "noise_in_median":  # from 0: a change shows against the noise itself
        low, high = 0.0, max(high * 1.1, 1e-3)
    elif column == "psnr_est_median" and high - low < MIN_DB_SPAN:
        middle = (high + low) / 2
        low, high = middle - MIN_DB_SPAN / 2, middle + MIN_DB_SPAN / 2
    elif high - low < 1e-9:
        low, high = low - 0.5 * abs(low or 1) * 0.1, high + 0.5 * abs(high or 1) * 0.1
    draw.text((left + 2, y0 - 2), fmt.format(high), fill=INK, font=font)
    draw.text((left + 2, y1 - 12), fmt.format(low), fill=INK, font=font)
    step = (x1 - x0 - 12) / max(1, len(values) - 1)
    points = []
    for i, value in enumerate(values):
        if math.isfinite(value):
            points.append((x0 + 6 + i * step, y1 - 6 - (value - low) / (high - low) * (y1 - y0 - 12), i))
    if len(points) > 1:
        draw.line([(x, y) for x, y, _ in points], fill=LINE, width=2)
    for x, y, i in points:
        colour = ALERT if drifted[i] else LINE
        radius = 4 if drifted[i] else 2
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    first, last = time_span(runs)  # the time axis: the first and the last run (UTC)
    runs_text = "1 run" if len(values) == 1 else f"{len(values)} runs"
    draw.text((x0, y1 + 4), first, fill=INK, font=font)
    draw.text(((x0 + x1) / 2, y1 + 4), runs_text, fill=INK, font=font, anchor="ma")
    draw.text((x1, y1 + 4), last + " UTC", fill=INK, font=font, anchor="ra")
