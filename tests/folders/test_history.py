"""The folder's history across runs, the drift rule, and the trend chart."""

import io

import numpy as np
import pandas as pd
from PIL import Image

from denoiser.folders import history, trend
from denoiser.folders.report import new_row, report_frame
from denoiser.out_tree import OutTree


def run_report(rng, *, files=100, noise=0.2, ood=0.0, errors=0, flagged=None, noises=None):
    """A cleaning report like a run's: ``files`` cleaned with input noise near ``noise`` (or
    file by file ``noises``), each flagged with probability ``ood`` (or exactly the first
    ``flagged`` of them)."""
    rows = [new_row("r", f"{i:04d}.png", "m", status="ok", recon_mse=float(rng.uniform(0.01, 0.02)),
                    noise_sigma_in=float(noise * rng.uniform(0.9, 1.1) if noises is None else noises[i]),
                    noise_sigma_out=0.02,
                    psnr_est=float(rng.normal(21, 0.5)),
                    ood=bool(rng.random() < ood) if flagged is None else i < flagged)
            for i in range(files)]
    rows += [new_row("r", f"bad{i}.png", "m", status="error", error="not an image") for i in range(errors)]
    return report_frame(rows)


def record(out, frame, n):
    row = history.run_row(frame, run_id=f"run{n}", model_id="m", seconds=2.0)
    with OutTree(out) as tree:
        return history.append_run(tree, row)


def test_unchanged_runs_raise_no_flag_and_doubled_noise_is_flagged_at_once(tmp_path):
    rng = np.random.default_rng(0)
    for n in range(10):
        _, reasons = record(tmp_path, run_report(rng, noise=0.2 * rng.uniform(0.95, 1.05)), n)
        assert reasons == [], n
    runs, reasons = record(tmp_path, run_report(rng, noise=0.4), 10)
    assert len(reasons) == 1 and reasons[0].startswith("median input noise 0.4")
    assert runs["drift"].notna().tolist() == [False] * 10 + [True]
    # Read back as a user would: one row per run, typed.
    kept = pd.read_parquet(tmp_path / ".denoiser" / "history.parquet")
    assert list(kept.columns) == list(history.HISTORY_COLUMNS) and len(kept) == 11
    assert kept["ok"].tolist() == [100] * 11 and kept["images_per_s"].iloc[0] == 50.0
    assert str(kept["time"].dtype) == "datetime64[us, UTC]"


def test_a_jump_in_flagged_or_failed_files_is_drift(tmp_path):
    rng = np.random.default_rng(1)
    for n in range(4):
        record(tmp_path, run_report(rng, ood=0.02), n)
    _, reasons = record(tmp_path, run_report(rng, ood=0.4, errors=30), 4)
    assert [r.split(" ")[0] for r in reasons] == ["share", "share"]
    assert "flagged" in reasons[0] and "failed" in reasons[1]


def test_a_few_flagged_files_in_a_small_batch_are_not_drift(tmp_path):
    # Earlier runs of 40 files flagged 2.5% at most; 4 flagged in the next 40 (10%, over the
    # old rule's 5-point margin) is chance, not drift; 12 in 40 is drift.
    rng = np.random.default_rng(3)
    for n in range(6):
        assert record(tmp_path, run_report(rng, files=40, flagged=n % 2), n)[1] == []
    assert record(tmp_path, run_report(rng, files=40, flagged=4), 6)[1] == []
    reasons = record(tmp_path, run_report(rng, files=40, flagged=12), 7)[1]
    assert len(reasons) == 1 and reasons[0].startswith("share flagged as unlike the training digits 30.0% (12 of 40)")


def test_twenty_unchanged_runs_of_forty_files_raise_no_drift(tmp_path):
    # Each file flagged with probability 2%, as on an unchanged folder. The earlier rule (the
    # share above the previous runs' highest by 5 points) alarmed on this very sequence.
    rng = np.random.default_rng(16)
    flagged = []
    for n in range(20):
        frame = run_report(rng, files=40, ood=0.02)
        flagged.append(int(frame["ood"].sum()))
        assert record(tmp_path, frame, n)[1] == [], (n, flagged)
    assert max(flagged) >= 3  # the sequence has a run of 7.5% or more flagged


def scanners(rng, files, *, sigma, failing=0.0):
    """Per-file input noise of scans from scanners of noise ``sigma`` (spread as real scans'
    is, about a fifth either way), the share ``failing`` of them from one with twice that."""
    noise = sigma * rng.lognormal(0.0, 0.2, files)
    noise[: int(round(failing * files))] *= 2
    return rng.permutation(noise)


def test_a_third_of_a_batch_from_a_failing_scanner_is_drift_though_the_median_barely_moves(tmp_path):
    rng = np.random.default_rng(5)
    for n in range(5):
        assert record(tmp_path, run_report(rng, files=200, noises=scanners(rng, 200, sigma=0.1)), n)[1] == []
    noises = scanners(rng, 200, sigma=0.1, failing=0.35)
    with OutTree(tmp_path) as tree:
        before = history.read_history(tree)["noise_in_median"].max()
    assert np.median(noises) < history.NOISE_RATIO * before  # the median rule alone would not see it
    reasons = record(tmp_path, run_report(rng, files=200, noises=noises), 5)[1]
    assert len(reasons) == 1 and reasons[0].startswith("input noise file by file unlike each of the previous 5 runs")


def test_a_folder_fed_by_two_scanners_on_alternate_days_is_not_drift(tmp_path):
    # Each run is like some earlier run, though unlike the mixture of them all.
    rng = np.random.default_rng(6)
    for n in range(12):
        sigma = 0.08 if n % 2 else 0.2
        assert record(tmp_path, run_report(rng, files=100, noises=scanners(rng, 100, sigma=sigma)), n)[1] == [], n


def test_small_batches_need_a_larger_gap_to_be_drift(tmp_path):
    # 40 files: a quarter from a failing scanner is within chance (the critical distance for
    # 40 against 40 is about 0.5); a whole batch from it is not.
    rng = np.random.default_rng(7)
    for n in range(5):
        record(tmp_path, run_report(rng, files=40, noises=scanners(rng, 40, sigma=0.1)), n)
    assert record(tmp_path, run_report(rng, files=40, noises=scanners(rng, 40, sigma=0.1, failing=0.25)), 5)[1] == []
    assert history.ks_critical(40, 40) > 0.49
    assert record(tmp_path, run_report(rng, files=40, noises=scanners(rng, 40, sigma=0.1, failing=1.0)), 6)[1] != []


def test_the_distance_from_quantiles_is_that_of_the_files():
    rng = np.random.default_rng(8)
    a, b = rng.normal(0, 1, 20_000), rng.normal(1, 1, 20_000)  # true distance 2*Phi(0.5)-1 = 0.383
    grid = np.sort(np.concatenate([a, b]))
    exact = np.abs(np.searchsorted(np.sort(a), grid, "right") / len(a)
                   - np.searchsorted(np.sort(b), grid, "right") / len(b)).max()
    estimate = history.ks_distance(list(np.quantile(a, history.QUANTILES)), list(np.quantile(b, history.QUANTILES)))
    assert abs(estimate - exact) < 0.03 and abs(exact - 0.383) < 0.02


def test_a_history_written_before_the_per_file_quantiles_is_read_and_judged(tmp_path):
    rng = np.random.default_rng(9)
    for n in range(4):
        record(tmp_path, run_report(rng), n)
    path = tmp_path / ".denoiser" / "history.parquet"
    old = pd.read_parquet(path).drop(columns=["noise_in_quantiles"])
    old.to_parquet(path, index=False)
    runs, reasons = record(tmp_path, run_report(rng, noise=0.5), 4)
    assert reasons and reasons[0].startswith("median input noise")  # judged as before
    assert runs["noise_in_quantiles"].isna().tolist() == [True] * 4 + [False]


def test_binomial_tail_matches_the_sum_of_its_terms():
    from math import comb

    for k, n, p in ((3, 40, 0.02), (0, 10, 0.3), (12, 40, 0.02), (41, 40, 0.5), (5, 5, 0.5)):
        exact = sum(comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(k, n + 1))
        assert abs(history.binomial_tail(k, n, p) - exact) < 1e-12 * max(1.0, exact) + 1e-300


def test_runs_too_small_or_too_few_are_not_judged(tmp_path):
    rng = np.random.default_rng(2)
    for n in range(2):
        record(tmp_path / "a", run_report(rng), n)
    assert record(tmp_path / "a", run_report(rng, noise=0.8), 2)[1] == []  # two runs before it: no band yet
    for n in range(3):
        record(tmp_path / "b", run_report(rng), n)
    assert record(tmp_path / "b", run_report(rng, files=5, noise=0.8), 3)[1] == []  # 5 new files say little
    assert record(tmp_path / "b", run_report(rng, noise=0.8), 4)[1] != []  # and are left out of the band


def test_the_trend_chart_is_a_readable_png(tmp_path):
    rng = np.random.default_rng(3)
    for n in range(6):
        runs, _ = record(tmp_path, run_report(rng, noise=0.2 if n < 5 else 0.5), n)
    image = Image.open(io.BytesIO(trend.trend_png(runs)))
    assert image.size == (2 * trend.PANEL_W, 2 * trend.PANEL_H)
    pixels = np.asarray(image.convert("RGB"))
    red = (np.abs(pixels.astype(int) - np.array(trend.ALERT)).sum(axis=-1) == 0)
    w, h = trend.PANEL_W, trend.PANEL_H
    panels = {"noise": red[:h, :w], "flagged": red[:h, w:], "failed": red[h:, :w], "psnr": red[h:, w:]}
    # The noise drifted: marked on the noise chart only, not on the three it is not about.
    assert panels["noise"].any() and not any(panels[k].any() for k in ("flagged", "failed", "psnr"))
    assert trend.time_span(runs) == tuple(pd.Timestamp(t).strftime("%m-%d %H:%M")
                                          for t in (runs["time"].iloc[0], runs["time"].iloc[-1]))
    markdown = trend.trend_markdown(runs, "/scans/out")
    assert "latest run run5: **drift**: median input noise" in markdown
    assert "data:image/png;base64," in markdown


def test_the_fleet_view_reads_a_folder_s_recent_activity_without_writing(tmp_path):
    from datetime import datetime, timedelta, timezone

    from denoiser.folders.activity import folder_activity

    now = datetime.now(timezone.utc)
    assert folder_activity(tmp_path / "nowhere", now)["problem"] == "no output folder yet"
    assert folder_activity(tmp_path, now)["problem"] == "no run has cleaned it yet"
    rng = np.random.default_rng(5)
    for n in range(4):
        record(tmp_path, run_report(rng, files=30, errors=1), n)
    record(tmp_path, run_report(rng, noise=0.6, files=30, flagged=3), 4)  # drifted
    idle = run_report(rng, files=0)  # a scheduled run that found nothing new
    record(tmp_path, idle, 5)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    seen = folder_activity(tmp_path, now)
    assert seen["problem"] is None and seen["runs"] == 6
    assert seen["last"]["ok"] == 30 and seen["last"]["error"] == 0 and seen["last"]["flagged"] == 3
    assert seen["last"]["drift"].startswith("median input noise") and seen["drift"]["why"] == seen["last"]["drift"]
    assert seen["week"] == {"runs": 6, "ok": 150, "error": 4, "flagged": 3}
    assert folder_activity(tmp_path, now + timedelta(days=8))["week"]["runs"] == 0  # out of the window
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # read only
    (tmp_path / ".denoiser" / "history.parquet").write_bytes(b"damaged")
    assert folder_activity(tmp_path, now)["problem"].startswith("history unreadable")
    assert (tmp_path / ".denoiser" / "history.parquet").read_bytes() == b"damaged"  # left for the next run
