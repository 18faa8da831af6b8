"""What a cleaning run shows in the Prefect UI: its tables (counts, the files changed most,
the failures, the flagged files), the before/after strip and the quality distributions; its
failures also as WARNING lines in the run's log."""

import pandas as pd
from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from denoiser.folders import summary
from denoiser.folders.report import before_after_strip


def publish_artifacts(frame: pd.DataFrame, totals: dict, run_id: str, in_dir: str, model: str) -> None:
    """The run's tables and its before/after strip, in the UI; its failures also as WARNING lines."""
    logger = get_run_logger()
    ok = frame[frame["status"] == "ok"]
    flagged = ok[ok["ood"].fillna(False).astype(bool)]
    create_table_artifact(table=summary.count_table(totals, len(flagged)), key="clean-summary",
                          description=f"Run {run_id}, model {model}: files by outcome")
    worst = summary.worst_table(frame)
    create_table_artifact(table=worst or [{"path": "(no file cleaned)"}], key="clean-worst",
                          description=f"Run {run_id}: the {len(worst)} cleaned files the model changed most "
                                      "(highest recon_mse): look at these first")
    failed = summary.failures(frame, limit=50)
    create_table_artifact(table=failed or [{"path": "(none)", "error": None}], key="clean-errors",
                          description=f"Run {run_id}: files that failed ({totals['error']}), with why"
                                      + (" (the first 50)" if totals["error"] > 50 else ""))
    for failure in failed[: summary.FAILURES_SHOWN]:
        logger.warning("failed: %s: %s", failure["path"], failure["error"])
    if totals["error"] > summary.FAILURES_SHOWN:
        logger.warning("... and %d more failed files (all in the report and the clean-errors artifact)",
                       totals["error"] - summary.FAILURES_SHOWN)
    listed = [{"path": row.path, "reason": row.ood_reason, "psnr_est_db": round(float(row.psnr_est), 1)}
              for row in flagged.head(50).itertuples()]
    listed = listed or [{"path": "(none)", "reason": None, "psnr_est_db": None}]
    create_table_artifact(table=listed, key="clean-ood",
                          description=f"Run {run_id}: {len(flagged)} files unlike the training digits "
                                      "(the first 50)")
    picks = summary.strip_picks(frame)
    strip = before_after_strip(frame, in_dir, picks=[index for index, _ in picks])
    markdown = (f"# Cleaning run {run_id}\n\nModel {model}.\n\n" +
                " · ".join(f"**{n}** {status}" for status, n in totals.items()) +
                f" · **{len(flagged)}** flagged as unlike the training digits\n\n" + quality_table(ok) + "\n")
    if strip:
        shown = ", ".join(f"{n}. {frame.at[index, 'path']} ({why})"
                          for n, (index, why) in enumerate(picks, 1))
        markdown += (f"Before (top) and after (bottom), cleaned by {model.split(':')[0]}: {shown}\n\n"
                     f"![strip](data:image/png;base64,{strip})\n")
    create_markdown_artifact(markdown=markdown, key="clean-report",
                             description=f"Before/after strip of run {run_id}")


def quality_table(ok: pd.DataFrame) -> str:
    """The distributions of estimated PSNR and noise level, as a markdown table of quantiles."""
    if ok.empty or ok["psnr_est"].isna().all():
        return ""
    lines = ["| | 10% | 50% | 90% |", "|---|---|---|---|"]
    for column, label in (("psnr_est", "estimated PSNR (dB)"), ("noise_level", "noise level (model's look)")):
        q = ok[column].quantile([0.1, 0.5, 0.9])  # NaN (a scan with too little paper to say) left out
        cells = ["unknown" if pd.isna(v) else f"{v:.2f}" for v in q]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
