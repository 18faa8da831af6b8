"""The fault corpus: files and folder states a hostile folder or a careless operator makes,
generated here. Each must end as an error row or a correct output, with a one-line
reason, while the rest of the batch goes on, and nothing is written outside OUT_DIR."""

import io
import os
import signal
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from denoiser.folders import manifest, plan, report, shard, workdir
from denoiser.folders.read import read_image
from denoiser.folders.safe_read import read_input
from denoiser.folders.settings import CleanOptions
from denoiser.folders.steps import KNOWN_BAD, PixelBudget
from denoiser.out_tree import OutTree
from denoiser.scans import batch
from tests.helpers import ROOT, WITHOUT_ROOT_OVERRIDE, digit_png

XPM = b'/* XPM */\nstatic char *x[] = {\n"2 2 2 1",\n"a c #000000",\n"b c #ffffff",\n"ab",\n"ba"};\n'


def sun_raster(width: int = 4, height: int = 4) -> bytes:
    header = struct.pack(">8I", 0x59A66A95, width, height, 8, width * height, 1, 0, 0)
    return header + bytes(range(width * height))


def clean(in_dir, out_dir, model, **options):
    rows = shard.clean_shard(plan.plan(in_dir, out_dir), in_dir=in_dir, out_dir=out_dir,
                                model=model, run_id="faults", options=CleanOptions(**options))
    return report.report_frame(rows).set_index("path")


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def corpus(tmp_path):
    """An input folder holding two good scans and every kind of bad file."""
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    digit_png().save(root / "good.png")
    digit_png().save(root / "good-too.png")
    (root / "xpm-as.png").write_bytes(XPM)
    (root / "sun-as.tif").write_bytes(sun_raster())
    eps = io.BytesIO()
    digit_png().save(eps, format="EPS")
    (root / "eps-as.png").write_bytes(eps.getvalue())
    os.mkfifo(root / "pipe.png")
    digit_png().save(root / os.fsdecode(b"caf\xe9.png"))
    digit_png().save(root / ("n" * 251 + ".png"))
    return root, outside


def test_every_bad_file_is_its_own_error_row_and_the_batch_goes_on(corpus, tmp_path, untrained):
    root, outside = corpus
    out = tmp_path / "out"
    signal.alarm(120)  # a FIFO that blocks would hang here: fail instead
    try:
        frame = clean(root, out, untrained)
    finally:
        signal.alarm(0)
    status = frame["status"].to_dict()
    assert status["good.png"] == status["good-too.png"] == "ok"
    for disguised in ("xpm-as.png", "eps-as.png"):
        assert status[disguised] == "error"
        assert frame.loc[disguised, "error"] == "not a PNG image, as its name says"
    assert frame.loc["sun-as.tif", "error"] == "not a TIFF image, as its name says"
    assert frame.loc["pipe.png", "error"] == "not a regular file (a FIFO, device or socket)"
    assert all("\n" not in e for e in frame["error"].dropna())
    # A name that is not UTF-8: cleaned, reported escaped, its bytes kept exactly.
    assert status["caf\\xe9.png"] == "ok"
    assert frame.loc["caf\\xe9.png", "path_bytes"] == b"caf\xe9.png"
    assert (out / os.fsdecode(b"caf\xe9.png")).is_file()
    # A 255-byte name: its temporary name must still fit the file system's limit.
    assert status["n" * 251 + ".png"] == "ok"
    assert not list(outside.iterdir())
    saved = tmp_path / "report.parquet"
    frame.reset_index().to_parquet(saved)
    back = pd.read_parquet(saved)
    assert set(back["path_bytes"].dropna()) == {b"caf\xe9.png"}
    # The manifest keeps the raw name: a rerun skips every file it cleaned.
    # (and the files whose content failed are skipped as known bad, the rest fail again).
    again = clean(root, out, untrained)
    skipped = again[again["status"] == "skipped"]
    known_bad = skipped["error"].fillna("").str.startswith(KNOWN_BAD)
    assert (~known_bad).sum() == (frame["status"] == "ok").sum()
    assert set(skipped.index[known_bad]) | set(again.index[again["status"] == "error"]) == set(
        frame.index[frame["status"] == "error"])


def test_a_link_swapped_in_after_the_scan_is_not_followed(tmp_path, untrained):
    root, outside = tmp_path / "in", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    digit_png().save(root / "a.png")
    digit_png().save(root / "b.png")
    digit_png().save(outside / "secret.png")
    entries = plan.plan(root, tmp_path / "out")
    (root / "b.png").unlink()
    (root / "b.png").symlink_to(outside / "secret.png")  # after the scan, before the read
    rows = shard.clean_shard(entries, in_dir=root, out_dir=tmp_path / "out", model=untrained,
                                run_id="r")
    by_path = {r["path"]: r for r in rows}
    assert by_path["a.png"]["status"] == "ok"
    assert by_path["b.png"]["status"] == "error"
    assert "outside the input folder" in by_path["b.png"]["error"]
    assert not (tmp_path / "out" / "b.png").exists()


def test_a_folder_link_planted_in_out_dir_gets_nothing_written_through_it(tmp_path, untrained):
    root, outside, out = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    (root / "sub" / "deeper").mkdir(parents=True)
    outside.mkdir()
    digit_png().save(root / "sub" / "deeper" / "x.png")
    digit_png().save(root / "top.png")
    out.mkdir()
    (out / "sub").symlink_to(outside, target_is_directory=True)
    frame = clean(root, out, untrained)
    assert frame.loc["top.png", "status"] == "ok"
    assert frame.loc["sub/deeper/x.png", "status"] == "error"
    assert "is a link; refusing to write through it" in frame.loc["sub/deeper/x.png", "error"]
    assert not list(outside.iterdir())  # not even the folder 'deeper'
    with pytest.raises(ValueError, match="is a link"), OutTree(out) as tree:
        tree.make_folder("sub/deeper")


def test_a_planted_work_folder_link_is_refused_before_anything_is_written(tmp_path, untrained):
    root, outside, out = tmp_path / "in", tmp_path / "outside", tmp_path / "out"
    root.mkdir()
    outside.mkdir()
    out.mkdir()
    digit_png().save(root / "x.png")
    (out / ".denoiser").symlink_to(outside, target_is_directory=True)
    with pytest.raises(workdir.OutputFolderError, match="is a link"):
        clean(root, out, untrained)
    assert not list(outside.iterdir())


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    digit_png().save(root / "small.png")
    with open(root / "huge.png", "wb") as handle:  # sparse: 4 GiB on paper, nothing on disk
        handle.truncate(4 * 2**30)
    frame = clean(root, tmp_path / "out", untrained, max_file_mb=1)
    assert frame.loc["small.png", "status"] == "ok"
    assert frame.loc["huge.png", "error"] == "file of 4295 MB is over the size limit of 1 MB"


def test_exif_orientation_and_palette_transparency_are_kept(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90 degrees clockwise to display"
    digit_png().save(root / "rotated.jpg", exif=exif.tobytes(), quality=95)
    index = np.zeros((28, 28), np.uint8)
    index[:, 14:] = 1
    index[10:18, 2:10] = 2
    palette = Image.fromarray(index, "P")
    palette.putpalette([0, 0, 0, 255, 255, 255, 128, 128, 128] + [0] * 759)
    palette.save(root / "palette.png", transparency=0)
    frame = clean(root, tmp_path / "out", untrained)
    assert (frame["status"] == "ok").all()
    with Image.open(tmp_path / "out" / "rotated.jpg") as rotated:
        assert rotated.getexif().get(274) == 6 and rotated.size == (28, 28)
    with Image.open(tmp_path / "out" / "palette.png") as cleaned:
        assert cleaned.mode == "P" and "transparency" in cleaned.info
        alpha = np.asarray(cleaned.convert("RGBA"))[..., 3]
    np.testing.assert_array_equal(alpha, np.where(index == 0, 0, 255))


def test_a_corrupt_manifest_is_rebuilt_from_the_run_reports(tmp_path, untrained):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        digit_png().save(root / name)
    first = clean(root, out, untrained)
    shard = workdir.work_dir(out) / "runs" / "faults" / "shard-00000.parquet"
    shard.parent.mkdir(parents=True)
    first.reset_index().to_parquet(shard)
    path = workdir.work_dir(out) / "manifest.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    with pytest.raises(manifest.ManifestError, match="corrupt or not a manifest"):
        clean(root, out, untrained)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(root / "b.png")  # changed since it was cleaned
    with OutTree(out) as tree:
        kept = manifest.rebuild(tree, root, [".denoiser/runs/faults/shard-00000.parquet"], max_bytes=10**6)
    assert kept == 2  # a.png and c.png; b.png's input no longer has the recorded hash
    assert list(path.parent.glob("manifest.sqlite.corrupt-*"))
    again = clean(root, out, untrained)
    assert again["status"].to_dict() == {"a.png": "skipped", "b.png": "ok", "c.png": "skipped"}


def test_read_input_refuses_links_fifos_and_escapes(tmp_path):
    root = tmp_path / "in"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.png").write_bytes(b"x")
    (root / "link.png").symlink_to(root / "d" / "f.png")
    assert read_input(root, root / "link.png") == b"x"  # a link inside the folder is fine
    (tmp_path / "elsewhere").mkdir()
    (root / "d2").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "g.png").write_bytes(b"y")
    with pytest.raises(ValueError, match="outside the input folder"):
        read_input(root, root / "d2" / "g.png")


def test_decoded_images_read_the_same_through_read_input(tmp_path):
    path = tmp_path / "x.png"
    digit_png().save(path)
    safely = read_image(path, read_input(tmp_path, path))
    np.testing.assert_array_equal(read_image(path).pixels, safely.pixels)


def test_manifest_schema_reads_a_text_and_a_bytes_key_apart(tmp_path):
    db = manifest.Manifest(tmp_path / "m.sqlite")
    name = os.fsdecode(b"caf\xe9.png")
    (tmp_path / "o1").write_bytes(b"")
    (tmp_path / "o2").write_bytes(b"")
    db.record_many([(name, "h1", "m", str(tmp_path / "o1")),
                    ("caf\\xe9.png", "h2", "m", str(tmp_path / "o2"))])
    assert db.current([name, "caf\\xe9.png"], "m") == {name: "h1", "caf\\xe9.png": "h2"}
    with sqlite3.connect(tmp_path / "m.sqlite") as raw:
        assert {type(k) for (k,) in raw.execute("SELECT path FROM files")} == {str, bytes}


def test_a_shard_that_fails_midway_keeps_and_then_skips_what_it_finished(tmp_path, untrained, monkeypatch):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    for i in range(40):
        digit_png().save(root / f"{i:02d}.png")
    monkeypatch.setattr(shard, "BATCH_PIXELS", 8 * 28 * 28)  # batches of 8 files
    monkeypatch.setattr(shard, "COMMIT_EVERY", 8)
    original, calls = batch.denoise_images, []

    def fails_on_the_fourth_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 7:  # two calls a batch: clean it, then the quality estimate's check pass
            raise RuntimeError("the model's device went away")
        return original(*args, **kwargs)

    monkeypatch.setattr(batch, "denoise_images", fails_on_the_fourth_batch)
    real_wait = shard.wait

    def one_at_a_time(futures, **kwargs):  # batches of exactly 8, however fast the reads are
        done, pending = real_wait(futures, **kwargs)
        first = set(list(done)[:1])
        return first, (done - first) | pending

    monkeypatch.setattr(shard, "wait", one_at_a_time)
    with pytest.raises(RuntimeError, match="went away"):
        clean(root, out, untrained)
    finished = len(manifest.Manifest(workdir.work_dir(out) / "manifest.sqlite"))
    assert finished >= 16  # at least the batches before the failure were recorded
    assert not list((workdir.work_dir(out) / "tmp").iterdir())
    retried = clean(root, out, untrained)
    assert (retried["status"] == "skipped").sum() == finished
    assert (retried["status"] == "ok").sum() == 40 - finished


def test_every_temporary_a_killed_run_leaves_is_swept_and_nothing_else(tmp_path):
    out, reports = tmp_path / "out", tmp_path / "reports"
    (out / ".denoiser" / "tmp").mkdir(parents=True)
    (out / ".denoiser" / "reports").mkdir()
    reports.mkdir()
    left = [out / ".denoiser" / "tmp" / ".a.png.0123abcd.part",
            out / ".denoiser" / "reports" / ".r1.parquet.0123abcd.part",
            reports / ".mine.parquet.0123abcd.part"]
    kept = [reports / ".someone-elses.parquet.0123abcd.part", reports / "mine.parquet"]
    for path in left + kept:
        path.write_bytes(b"x")
    with OutTree(out) as tree:
        assert workdir.remove_stale_temporaries(tree, reports / "mine.parquet") == 3
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)


def test_an_unreadable_file_is_an_error_row_even_for_root(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    digit_png().save(root / "fine.png")
    digit_png().save(root / "locked.png")
    (root / "locked.png").chmod(0)
    code = ("import sys; from denoiser.folders import plan\n"
            "rows = plan.dry_run(plan.plan(sys.argv[1], sys.argv[2]), in_dir=sys.argv[1],"
            " out_dir=sys.argv[2], model_id=None)\n"
            "print({r['path']: r['error'] or r['status'] for r in rows})")
    command = WITHOUT_ROOT_OVERRIDE + [sys.executable, "-c", code, str(root), str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert eval(result.stdout) == {"fine.png": "todo", "locked.png": "permission denied"}  # noqa: S307


def test_the_before_after_strip_stays_small_for_an_extreme_shape(tmp_path, untrained):
    import base64

    from denoiser.folders.report import before_after_strip

    root = tmp_path / "in"
    root.mkdir()
    Image.fromarray(np.full((1, 100_000), 200, np.uint8)).save(root / "line.png")
    digit_png().save(root / "digit.png")
    frame = clean(root, tmp_path / "out", untrained).reset_index()
    strip = Image.open(io.BytesIO(base64.b64decode(before_after_strip(frame, str(root)))))
    assert strip.height == 2 * 64 + 3 * 4 and strip.width <= 2 * (4 * 64 + 4) + 4


def test_shards_share_one_pixel_budget_and_give_it_all_back(tmp_path, untrained, monkeypatch):
    root = tmp_path / "in"
    root.mkdir()
    for i in range(6):
        Image.fromarray(np.full((200, 300), 40 * i, np.uint8)).save(root / f"{i}.png")
    budget = PixelBudget(2 * 200 * 300)  # two of these images at a time, in all
    peak = []
    original = budget.reserve

    def reserve(pixels):
        original(pixels)
        peak.append(budget.held)

    monkeypatch.setattr(budget, "reserve", reserve)
    monkeypatch.setattr(shard, "_BUDGET", budget)
    entries = plan.plan(root, tmp_path / "out")
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:  # two shards at once, as the flow runs them
        parts = [pool.submit(shard.clean_shard, part, in_dir=root, out_dir=tmp_path / "out",
                             model=untrained, run_id="r") for part in plan.shards(entries, 3)]
        rows = [row for part in parts for row in part.result()]
    assert [r["status"] for r in rows] == ["ok"] * 6
    assert max(peak) <= 2 * 200 * 300 and budget.held == 0
