"""Folder cleaning as a library: a messy real-world tree in, a mirror tree out."""

import hashlib
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from denoiser.folders import plan, report, shard, steps, workdir
from denoiser.folders.encode import RenderPool
from denoiser.folders.manifest import Manifest
from denoiser.folders.model_choice import ModelChoice
from denoiser.folders.read import ImageError, read_image
from denoiser.folders.settings import CleanOptions
from denoiser.models import checkpoint
from denoiser.models.networks import ConvDAE
from denoiser.models.recipe import TrainConfig
from denoiser.training.loop import train
from tests.helpers import draw_digits, make_messy_tree


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its content hash (or link target) and mtime."""
    state = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            state[str(path)] = ("link", os.readlink(path))
        elif path.is_file():
            state[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns)
        else:
            state[str(path)] = ("dir",)
    return state


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A conv DAE trained briefly on drawn digits with the tutorial's noise."""
    digits = draw_digits(480, seed=11)[0]
    config = TrainConfig(model="conv", epochs=5, batch_size=16, seed=3)
    model = train(digits, config, device=torch.device("cpu"), show_progress=False).model
    store = tmp_path_factory.mktemp("trained")
    return checkpoint.save_checkpoint(store, "conv-brief", model, {"architecture": "conv"})


@pytest.fixture
def tree(tmp_path):
    expected = make_messy_tree(tmp_path / "in", tmp_path / "outside")
    return tmp_path / "in", tmp_path / "out", tmp_path / "outside", expected


def run(in_dir, out_dir, model, run_id="r", rerun=True, **options):
    entries = plan.plan(in_dir, out_dir)
    choice = replace(ModelChoice.of(model), rerun=rerun)
    rows = []
    for part in plan.shards(entries, 7):
        rows += shard.clean_shard(part, in_dir=in_dir, out_dir=out_dir, model=choice, run_id=run_id,
                                  options=CleanOptions(**options))
    return report.report_frame(rows)


def test_messy_tree_is_mirrored_exactly(tree, untrained):
    in_dir, out_dir, outside, expected = tree
    before_in, before_outside = snapshot(in_dir), snapshot(outside)
    frame = run(in_dir, out_dir, untrained)

    assert dict(zip(frame["path"], frame["status"], strict=True)) == expected
    assert frame["path"].tolist() == sorted(expected)
    errors = frame[frame["status"] == "error"].set_index("path")["error"]
    assert errors["bad/empty.png"] == "empty file (0 bytes)"
    assert errors["bad/not-an-image.png"] == "not a PNG image, as its name says"
    assert "truncated" in errors["bad/truncated.png"]
    assert errors["bad/bomb.png"] == ("decompression bomb refused: 400000000 pixels over the limit of "
                                      f"{Image.MAX_IMAGE_PIXELS} pixels")
    assert errors["bad/dangling.png"] == "dangling link"
    assert all("\n" not in e for e in errors)

    for rel, status in expected.items():
        out = out_dir / rel
        if status != "ok":
            assert not out.exists(), rel
            continue
        with Image.open(in_dir / rel) as a, Image.open(out) as b:
            assert (b.format, b.size) == (a.format, a.size), rel
            expected_mode = a.mode
            if a.mode == "I;16B":
                expected_mode = "I;16"
            assert b.mode == expected_mode, rel
    ok = frame[frame["status"] == "ok"]
    assert (ok["output_path"].map(lambda p: Path(p).is_relative_to(out_dir))).all()
    assert ok[["recon_mse", "noise_sigma_in", "noise_sigma_out", "seconds"]].notna().all().all()
    assert ok.set_index("path").loc["inverted/dark-on-light.png", "inverted"]
    assert not ok.set_index("path").loc["mnist-like.png", "inverted"]

    # IN_DIR untouched; nothing written outside OUT_DIR; hidden and skipped files not copied.
    assert snapshot(in_dir) == before_in and snapshot(outside) == before_outside
    assert sorted(p.name for p in in_dir.parent.iterdir()) == ["in", "out", "outside"]
    assert not (out_dir / ".hidden.png").exists() and not (out_dir / "link-outside.png").exists()
    assert not (out_dir / "notes.txt").exists()


def test_bit_depth_alpha_and_polarity_survive(tree, trained):
    in_dir, out_dir, _, _ = tree
    run(in_dir, out_dir, trained)
    out16 = np.asarray(Image.open(out_dir / "modes/gray16.png"))
    assert out16.dtype == np.uint16 and out16.max() > 255  # not squeezed into 8 bits
    rgba_in = np.asarray(Image.open(in_dir / "modes/rgba.png"))
    rgba_out = np.asarray(Image.open(out_dir / "modes/rgba.png"))
    np.testing.assert_array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha kept
    assert (rgba_out[..., 0] == rgba_out[..., 1]).all() and (rgba_out[..., 1] == rgba_out[..., 2]).all()
    dark_on_light = read_image(out_dir / "inverted/dark-on-light.png").pixels
    assert np.median(dark_on_light) > 0.5  # inverted for the model and back again


def test_reruns_are_incremental(tree, untrained):
    in_dir, out_dir, _, expected = tree
    run(in_dir, out_dir, untrained)
    n_ok = sum(status == "ok" for status in expected.values())

    again = run(in_dir, out_dir, untrained, run_id="r2")
    # The four files whose content is bad are skipped as known bad; a dangling link has no
    # content to remember and fails again.
    assert report.counts(again) == {"ok": 0, "error": 1, "skipped": n_ok + 1 + 4}
    reasons = again.set_index("path")["error"]
    assert reasons["bad/dangling.png"] == "dangling link"
    for name in ("empty", "not-an-image", "truncated", "bomb"):
        assert reasons[f"bad/{name}.png"].startswith(steps.KNOWN_BAD)

    changed = in_dir / "sizes/16x16.png"
    Image.fromarray(np.full((16, 16), 40, np.uint8)).save(changed)
    third = run(in_dir, out_dir, untrained, run_id="r3")
    assert third.loc[third["status"] == "ok", "path"].tolist() == ["sizes/16x16.png"]

    forced = run(in_dir, out_dir, untrained, run_id="r4", overwrite=True)
    assert report.counts(forced)["ok"] == n_ok


def test_a_new_model_redoes_everything(tree, untrained, tmp_path):
    in_dir, out_dir, _, expected = tree
    run(in_dir, out_dir, untrained)
    other = checkpoint.save_checkpoint(tmp_path / "m2", "conv-other", ConvDAE(), {"architecture": "conv"})
    assert report.counts(run(in_dir, out_dir, other))["ok"] == sum(s == "ok" for s in expected.values())


def test_a_fallback_model_leaves_what_another_model_cleaned(tree, untrained, tmp_path):
    in_dir, out_dir, _, expected = tree
    run(in_dir, out_dir, untrained)
    before = {p: p.stat().st_mtime_ns for p in out_dir.rglob("*.png") if ".denoiser" not in p.parts}
    other = checkpoint.save_checkpoint(tmp_path / "m2", "conv-other", ConvDAE(), {"architecture": "conv"})
    again = run(in_dir, out_dir, other, rerun=False)
    assert report.counts(again)["ok"] == 0
    assert report.counts(again)["skipped"] >= sum(s == "ok" for s in expected.values())
    assert {p: p.stat().st_mtime_ns for p in before} == before  # good outputs not overwritten
    dry = plan.dry_run(plan.plan(in_dir, out_dir), in_dir=in_dir, out_dir=out_dir,
                           model_id="conv-other", rerun_other_models=False)
    assert not any(r["status"] == "todo" for r in dry)


def test_folders_that_overlap_are_refused(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(ValueError, match="must not be the input folder or inside it"):
        plan.plan(tmp_path / "in", tmp_path / "in" / "out")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plan.plan(tmp_path / "missing", tmp_path / "out")


def test_dry_run_writes_nothing(tree, untrained):
    in_dir, out_dir, _, expected = tree
    rows = plan.dry_run(plan.plan(in_dir, out_dir), in_dir=in_dir, out_dir=out_dir, model_id="conv-x")
    statuses = {r["path"]: r["status"] for r in rows}
    assert statuses["bad/truncated.png"] == "error" and statuses["mnist-like.png"] == "todo"
    assert not out_dir.exists()


def test_lock_keeps_a_second_run_out(tmp_path):
    with workdir.folder_lock(tmp_path):
        with pytest.raises(workdir.FolderBusy, match="another run"):
            workdir.folder_lock(tmp_path)
    with workdir.folder_lock(tmp_path):
        pass  # released


def test_cleaning_brings_noisy_scans_closer_to_clean(tmp_path, trained):
    clean_images = {}
    rng = np.random.default_rng(0)
    for i, digit in enumerate(draw_digits(12, seed=100)[0]):
        clean = digit / 255.0
        noisy = np.clip(clean + 0.5 * rng.standard_normal(clean.shape), 0, 1)
        rel = f"scans/{i:02d}.png"
        (tmp_path / "in/scans").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8), "L").save(tmp_path / "in" / rel)
        clean_images[rel] = clean
    frame = run(tmp_path / "in", tmp_path / "out", trained)
    assert (frame["status"] == "ok").all()
    err_in = np.mean([np.mean((read_image(tmp_path / "in" / r).pixels - c) ** 2)
                      for r, c in clean_images.items()])
    err_out = np.mean([np.mean((read_image(tmp_path / "out" / r).pixels - c) ** 2)
                       for r, c in clean_images.items()])
    assert err_out < 0.7 * err_in
    assert (frame["noise_sigma_out"] < frame["noise_sigma_in"]).all()


def test_report_columns(tree, untrained):
    in_dir, out_dir, _, _ = tree
    frame = run(in_dir, out_dir, untrained)
    path = out_dir / "report.parquet"
    frame.to_parquet(path)
    back = pd.read_parquet(path)
    assert list(back.columns) == ["run_id", "path", "status", "error", "format", "mode", "width",
                                  "height", "inverted", "paper", "ink", "scale", "model_id",
                                  "model_reason", "input_sha256", "output_path",
                                  "recon_mse", "noise_sigma_in", "noise_sigma_out", "seconds", "path_bytes",
                                  "noise_level", "psnr_est", "ood", "ood_reason", "pages", "ood_score",
                                  "digit", "digit_p", "digit_in", "digit_in_p",
                                  "identity_changed"]  # added last: none moved
    ok = back[back["status"] == "ok"]
    assert ok["psnr_est"].notna().all() and ok["ood"].notna().all()
    # The untrained model's outputs are grey everywhere: no paper to measure noise on, so the
    # level is unknown (empty), not 0.0, which would say the paper is clean.
    assert back["noise_level"].dtype == "float64" and ok["noise_level"].isna().all()


def test_outputs_get_ordinary_permissions(tree, untrained):
    in_dir, out_dir, _, _ = tree
    old = os.umask(0o022)
    try:
        run(in_dir, out_dir, untrained)
    finally:
        os.umask(old)
    assert (out_dir / "mnist-like.png").stat().st_mode & 0o777 == 0o644


def test_a_shard_streams_through_in_chunks_with_the_same_outputs(tmp_path, untrained):
    """600 files in one shard are read, denoised and written in chunks of 256 by worker
    threads; the outputs equal those of a one-thread run, and the manifest has every file."""
    rng = np.random.default_rng(1)
    for i in range(600):
        folder = tmp_path / "in" / f"p{i // 100}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    entries = plan.plan(tmp_path / "in", tmp_path / "out")
    outputs = {}
    for workers in (1, 3):
        out = tmp_path / f"out{workers}"
        clock = steps.ShardTimings()
        rows = shard.clean_shard(entries, in_dir=tmp_path / "in", out_dir=out, model=untrained,
                                    run_id="r", options=CleanOptions(workers=workers, batch_size=50),
                                    timings=clock)
        assert [r["status"] for r in rows] == ["ok"] * 600
        assert [r["path"] for r in rows] == sorted(e.rel for e in entries)
        assert clock.decode > 0 and clock.model > 0 and clock.encode > 0 and clock.ended > clock.started
        assert len(Manifest(out / ".denoiser/manifest.sqlite")) == 600
        assert not list((out / ".denoiser/tmp").iterdir())
        outputs[workers] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.png")
                            if ".denoiser" not in p.parts}
    assert len(outputs[1]) == 600 and outputs[1] == outputs[3]


def test_manifest_answers_a_shard_in_one_query(tmp_path):
    manifest = Manifest(tmp_path / "m.sqlite")
    (tmp_path / "a.png").write_bytes(b"x")
    manifest.record_many([(f"f{i}.png", f"sha{i}", "model-1", str(tmp_path / "a.png")) for i in range(2000)]
                         + [("gone.png", "sha", "model-1", str(tmp_path / "missing.png"))])
    current = manifest.current([f"f{i}.png" for i in range(2000)] + ["gone.png", "new.png"], "model-1")
    assert len(current) == 2000 and current["f1999.png"] == "sha1999"  # past SQLite's 999 parameters
    assert "gone.png" not in current and "new.png" not in current  # output missing; never cleaned
    assert manifest.current(["f1.png"], "model-2") == {}
    assert Manifest(tmp_path / "absent.sqlite", create=False).current(["f1.png"], "model-1") == {}


def test_grey_paper_keeps_its_tone_or_is_normalized(tmp_path, trained):
    digits = draw_digits(6, seed=21)[0] / 255.0
    rng = np.random.default_rng(1)
    for i, digit in enumerate(digits):  # dark ink (0.3) on grey paper (0.75), a little noise
        scan = np.clip(0.75 - 0.45 * digit + 0.03 * rng.standard_normal(digit.shape), 0, 1)
        (tmp_path / "in").mkdir(exist_ok=True)
        Image.fromarray(np.round(scan * 255).astype(np.uint8), "L").save(tmp_path / f"in/{i}.png")
    kept = run(tmp_path / "in", tmp_path / "kept", trained)
    normalized = run(tmp_path / "in", tmp_path / "normalized", trained, tones="normalize")
    assert (normalized["status"] == "ok").all()
    assert kept["inverted"].all() and (kept["paper"] - 0.75).abs().max() < 0.03
    for i in range(6):
        paper_kept = np.median(read_image(tmp_path / f"kept/{i}.png").pixels)
        paper_normalized = np.median(read_image(tmp_path / f"normalized/{i}.png").pixels)
        assert abs(paper_kept - 0.75) < 0.05 and paper_normalized > 0.95
    with pytest.raises(ValueError, match="unknown tones"):
        CleanOptions(tones="vivid")


XPM = b"""/* XPM */
static char *x[] = {
"2 2 2 1",
"a c #000000",
"b c #ffffff",
"ab",
"ba"};
"""


def test_disguised_formats_and_fifos_are_error_rows_and_the_batch_goes_on(tmp_path, untrained):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(in_dir / "good.png")
    (in_dir / "xpm.png").write_bytes(XPM)  # Pillow reads XPM but cannot write it back
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(in_dir / "png.tif", format="PNG")
    os.mkfifo(in_dir / "pipe.png")  # reading it would block forever
    signal.alarm(120)  # a regression hangs here: fail instead
    try:
        frame = run(in_dir, tmp_path / "out", untrained).set_index("path")
        dry = {r["path"]: r for r in plan.dry_run(plan.plan(in_dir, tmp_path / "dry"), in_dir=in_dir,
                                                      out_dir=tmp_path / "dry", model_id="conv-test")}
    finally:
        signal.alarm(0)
    assert frame.loc["good.png", "status"] == "ok"
    assert frame.loc["xpm.png", "error"] == "not a PNG image, as its name says"
    assert frame.loc["png.tif", "error"] == "not a TIFF image, as its name says"
    assert frame.loc["pipe.png", "error"] == "not a regular file (a FIFO, device or socket)"
    assert dry["pipe.png"]["status"] == "error" and dry["xpm.png"]["status"] == "error"
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".denoiser") == ["good.png"]


def test_encoding_in_worker_processes_writes_the_same_bytes(tree):
    """Every format and mode of the messy tree, the same cleaned pixels encoded in worker
    processes or in the writing thread: byte-identical files."""
    in_dir, _, _, _ = tree
    in_processes, in_thread = RenderPool(2), RenderPool(0)
    compared = 0
    for path in sorted(p for p in in_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        try:
            image = read_image(path)
        except ImageError:
            continue  # the tree's broken files
        cleaned = np.random.default_rng(compared).random(image.pixels.shape).astype(np.float32)
        assert in_processes(image, cleaned) == in_thread(image, cleaned), path
        compared += 1
    assert compared > 5


def test_a_run_encoding_in_worker_processes_writes_what_one_in_threads_writes(tree, trained, tmp_path):
    """The same files and report rows, pixels within one step of the output's depth. Not
    bytes: which scans share a model batch depends on how fast the files are read, and the
    CPU's convolutions give an image's output last-bit differences from one batch to another
    (measured on an Intel Xeon VM, 2026-11-30: a float TIFF differed in a few bytes between
    two runs in CI)."""
    in_dir, _, _, _ = tree
    outputs, frames = {}, {}
    for processes in (0, 2):
        out = tmp_path / f"out-{processes}"
        frame = run(in_dir, out, trained, encode_processes=processes)
        assert (frame["status"] == "ok").sum() > 5
        frames[processes] = frame.drop(columns=["seconds", "output_path"]).set_index("path").sort_index()
        outputs[processes] = {p.relative_to(out): read_image(p) for p in out.rglob("*")
                              if p.is_file() and ".denoiser" not in p.parts}
    assert outputs[0].keys() == outputs[2].keys()
    for name, image in outputs[0].items():
        other = outputs[2][name]
        assert (image.format, image.mode, image.pixels.shape) == (other.format, other.mode, other.pixels.shape)
        np.testing.assert_allclose(image.pixels, other.pixels, rtol=0, atol=1 / 255 + 1e-6, err_msg=str(name))
    pd.testing.assert_frame_equal(frames[0], frames[2], rtol=1e-4)


def test_the_png_level_changes_the_bytes_not_the_pixels(tmp_path, untrained):
    in_dir = tmp_path / "in"
    in_dir.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        noisy = np.clip(rng.random((96, 96)) * 0.3 + (rng.random((96, 96)) > 0.9), 0, 1)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(in_dir / f"{i}.png")
    sizes, pixels = {}, {}
    for level in (0, 9):
        out = tmp_path / f"out-{level}"
        assert (run(in_dir, out, untrained, png_level=level)["status"] == "ok").all()
        files = sorted(out.glob("*.png"))
        sizes[level] = sum(p.stat().st_size for p in files)
        pixels[level] = [np.asarray(Image.open(p)) for p in files]
    assert sizes[0] > 1.5 * sizes[9]  # level 0 stores, 9 compresses
    for a, b in zip(pixels[0], pixels[9], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="png_level must be 0-9"):
        CleanOptions(png_level=10)


def test_a_file_that_failed_is_known_bad_until_its_content_changes_or_errors_are_retried(tmp_path, store):
    # A scheduled folder with one permanently bad file: later runs skip it as known bad
    # instead of failing it again (no error, no error rate), until it changes.
    from denoiser.folders.run import clean_folder
    from denoiser.folders.settings import CleanRun

    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for i, digit in enumerate(draw_digits(3, seed=4)[0]):
        Image.fromarray(digit).save(source / f"{i}.png")
    (source / "bad.png").write_bytes(b"not a png")
    run_settings = CleanRun(models_dir=str(store))

    def again(**options):
        done = clean_folder(str(source), str(out), CleanOptions(device="cpu", **options), run_settings)
        bad = done.frame.set_index("path").loc["bad.png"]
        return done, bad

    done, bad = again()
    assert done.totals == {"ok": 3, "error": 1, "skipped": 0} and bad["status"] == "error"
    first_error = bad["error"]
    done, bad = again()
    assert done.totals == {"ok": 0, "error": 0, "skipped": 4}
    assert bad["status"] == "skipped" and bad["error"] == f"{steps.KNOWN_BAD}: {first_error}"
    assert "4 skipped (1 known bad)" in done.message and "first error" not in done.message
    done, bad = again(retry_errors=True)  # asked to: read again, and fails again
    assert done.totals["error"] == 1 and bad["status"] == "error"
    strict = clean_folder(str(source), str(out), CleanOptions(device="cpu"), replace(run_settings, strict=True))
    # A strict run reads it again, so that the bad file fails it instead of being skipped.
    assert strict.totals["error"] == 1 and strict.frame.set_index("path").loc["bad.png", "status"] == "error"
    (source / "bad.png").write_bytes(b"still not a png, but other bytes")  # changed: tried again
    assert again()[1]["status"] == "error"
    Image.fromarray(draw_digits(1, seed=5)[0][0]).save(source / "bad.png")  # mended: cleaned
    done, bad = again()
    assert bad["status"] == "ok" and (out / "bad.png").is_file()
    with workdir.open_tree(str(out)) as tree:
        assert Manifest.of(tree).known_bad(["bad.png"]) == {}
    history = pd.read_parquet(out / ".denoiser" / "history.parquet")
    assert history["error"].tolist() == [1, 0, 1, 1, 1, 0]
