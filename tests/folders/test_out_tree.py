"""Nothing outside OUT_DIR, ever: links planted in the working folder or swapped in during a
run, retention, loops and unreadable folders in IN_DIR, pixel bombs, pages and frames,
float ranges. Each case ends as an error row, a correct output or one refusing line, and
a victim folder outside OUT_DIR is never created, changed or deleted in."""

import io
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from denoiser import runs
from denoiser.files import printable, write_parquet
from denoiser.folders import history, plan, report, retention, shard, workdir
from denoiser.folders.encode import write_like
from denoiser.folders.read import read_image
from denoiser.folders.report import new_row, report_frame
from denoiser.folders.settings import CleanOptions
from denoiser.out_tree import LinkRefused, OutTree
from denoiser.pipeline.record import read_stage
from tests.helpers import ROOT, WITHOUT_ROOT_OVERRIDE, digit_png


def clean(in_dir, out_dir, model, **options):
    rows = shard.clean_shard(plan.plan(in_dir, out_dir), in_dir=in_dir, out_dir=out_dir,
                                model=model, run_id="out-dir", options=CleanOptions(**options))
    return report.report_frame(rows).set_index("path")


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` with its kind, size, content and modification time."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        found[str(path.relative_to(folder))] = (info.st_mode, info.st_size, info.st_mtime_ns, content)
    return found


@pytest.fixture
def victim(tmp_path):
    """A folder outside OUT_DIR that looks like a working folder: run-named entries, a
    manifest, a history, temporaries."""
    root = tmp_path / "victim"
    (root / "20200101-000000-aaaaaa").mkdir(parents=True)
    (root / "20200101-000000-aaaaaa" / "shard-00000.parquet").write_bytes(b"precious")
    (root / "20200101-000000-aaaaaa.parquet").write_bytes(b"precious too")
    (root / ".x.png.0123abcd.part").write_bytes(b"not ours")
    (root / "file.txt").write_bytes(b"the victim's own file")
    return root


def test_the_tree_follows_no_link_below_out_dir(tmp_path, victim):
    out = tmp_path / "out"
    (out / "real").mkdir(parents=True)
    (out / "sub").symlink_to(victim, target_is_directory=True)
    (out / "file-link").symlink_to(victim / "file.txt")
    before = snapshot(victim)
    with OutTree(out) as tree:
        tree.write_bytes("real/a.bin", b"ok")
        with pytest.raises(LinkRefused, match="sub is a link"):
            tree.write_bytes("sub/b.bin", b"no")
        with pytest.raises(LinkRefused, match="is a link"):
            tree.read_bytes("file-link")
        with pytest.raises(LinkRefused, match="is a link"):
            tree.remove_tree("sub")
        with pytest.raises(LinkRefused):
            tree.remove_tree("sub/20200101-000000-aaaaaa")
        tree.write_bytes("file-link", b"replaces the link itself")  # never written through
        with pytest.raises(ValueError, match="plain relative path"):
            tree.write_bytes("../escape.bin", b"no")
    assert (out / "real" / "a.bin").read_bytes() == b"ok"
    assert (out / "file-link").read_bytes() == b"replaces the link itself" and not (out / "file-link").is_symlink()
    assert snapshot(victim) == before


@pytest.mark.parametrize("planted", [".denoiser", ".denoiser/runs", ".denoiser/reports", ".denoiser/tmp",
                                     ".denoiser/manifest.sqlite", ".denoiser/manifest.sqlite-wal",
                                     ".denoiser/history.parquet", ".denoiser/ledger.txt", ".denoiser/reserve"])
def test_a_link_planted_in_the_working_folder_is_refused_before_anything_is_written(tmp_path, victim, untrained,
                                                                                      planted):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    digit_png().save(root / "x.png")
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    folder = planted in (".denoiser", ".denoiser/runs", ".denoiser/reports", ".denoiser/tmp")
    (out / planted).symlink_to(victim if folder else victim / "file.txt", target_is_directory=folder)
    before = snapshot(victim)
    with pytest.raises(workdir.OutputFolderError, match="is a link"):
        clean(root, out, untrained)
    assert snapshot(victim) == before
    assert not (out / "x.png").exists()


def test_retention_deletes_nothing_through_a_link_and_only_runs_it_recorded(tmp_path, victim):
    out = tmp_path / "out"
    work = out / ".denoiser"
    frame = report_frame([new_row("r", "a.png", "m", status="ok", recon_mse=0.01)])
    ids = [runs.new_run_id() for _ in range(3)]
    with OutTree(out) as tree:
        for age, run in zip((3, 2, 1), ids, strict=True):
            when = datetime.fromtimestamp(time.time() - age * 86400, timezone.utc)
            history.append_run(tree, history.run_row(frame, run_id=run, model_id="m", seconds=1.0, when=when))
            write_parquet(frame, work / "reports" / f"{run}.parquet")
            write_parquet(frame, work / "runs" / run / "shard-00000.parquet")
    # A run-named folder nobody recorded (a user's, or another tool's): never removed.
    (work / "runs" / "20190101-000000-bbbbbb").mkdir()
    # Links in place of a run's folder and of the runs folder itself.
    os.rename(work / "runs" / ids[0], tmp_path / "moved-run")
    (work / "runs" / ids[0]).symlink_to(victim / "20200101-000000-aaaaaa", target_is_directory=True)
    before = snapshot(victim)
    with OutTree(out) as tree:
        gone = retention.prune_clean_runs(tree, runs.Retention(keep_runs=1), current=ids[2])
    assert gone == sorted(ids[:2])
    assert snapshot(victim) == before
    assert (work / "runs" / "20190101-000000-bbbbbb").is_dir()
    assert not (work / "runs" / ids[1]).exists() and (work / "runs" / ids[2]).is_dir()

    os.rename(work / "runs", tmp_path / "runs-moved")
    (work / "runs").symlink_to(victim, target_is_directory=True)
    with OutTree(out) as tree:
        tree.write_bytes(workdir.LEDGER, f"20200101-000000-aaaaaa {time.time() - 9 * 86400:.0f}\n".encode())
        retention.prune_clean_runs(tree, runs.Retention(keep_days=1), current=ids[2])
    assert snapshot(victim) == before


def test_a_folder_swapped_for_a_link_during_a_run_gets_nothing_written_outside(tmp_path, victim, untrained,
                                                                                monkeypatch):
    root, out = tmp_path / "in", tmp_path / "out"
    (root / "sub").mkdir(parents=True)
    for i in range(300):
        digit_png(seed=i % 7).save(root / "sub" / f"{i:03d}.png")
    (out / "sub").mkdir(parents=True)
    monkeypatch.setattr(shard, "BATCH_PIXELS", 16 * 28 * 28)  # many small batches: many writes
    before = snapshot(victim)
    stop, flips = threading.Event(), []

    def flip() -> None:  # the real folder and a link to the victim take turns at OUT/sub
        while not stop.is_set():
            real = out / f"sub-real-{len(flips)}"
            os.rename(out / "sub", real)
            (out / "sub").symlink_to(victim, target_is_directory=True)
            time.sleep(0.001)
            (out / "sub").unlink()
            try:
                os.rename(real, out / "sub")
            except OSError:  # the run made a new OUT/sub meanwhile: the old one stays aside
                pass
            flips.append(1)
            time.sleep(0.001)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        frame = clean(root, out, untrained)
    finally:
        stop.set()
        flipper.join()
    assert len(flips) > 20
    assert snapshot(victim) == before  # 0 files outside
    written = [p for p in out.rglob("*.png") if ".denoiser" not in p.parts]  # in sub or set aside
    ok, error = (frame["status"] == "ok").sum(), (frame["status"] == "error").sum()
    assert ok + error == 300 and len(written) == ok
    errors = set(frame.loc[frame["status"] == "error", "error"])
    assert all("is a link; refusing to write through it" in e or "keeps changing" in e for e in errors), errors


def test_a_loop_of_links_and_an_unreadable_folder_are_error_rows_and_the_rest_is_cleaned(tmp_path, untrained):
    root = tmp_path / "in"
    (root / "locked").mkdir(parents=True)
    digit_png().save(root / "good.png")
    digit_png().save(root / "locked" / "hidden.png")
    (root / "self.png").symlink_to("self.png")
    (root / "a.png").symlink_to("b.png")
    (root / "b.png").symlink_to("a.png")
    os.chmod(root / "locked", 0)
    try:  # as a user without root's override, who cannot read the folder
        rows, _ = clean_apart(root, tmp_path / "out", untrained.weights, as_user=True)
    finally:
        os.chmod(root / "locked", 0o755)
    assert rows["good.png"][0] == "ok"
    for name in ("self.png", "a.png", "b.png"):
        assert rows[name][0] == "error" and "loop of links" in rows[name][1]
    assert rows["locked"][0] == "error" and "folder cannot be read: Permission denied" in rows["locked"][1]


def clean_apart(root: Path, out: Path, weights: Path, *, as_user: bool = False) -> tuple[dict, int]:
    """Clean ``root`` in a process of its own (``as_user``: without root's override):
    ``{path: (status, error)}`` and the process's peak resident memory in kB."""
    script = ("import json, sys; import pandas as pd; from tests.folders.test_out_tree import clean, peak_kb;"
              "from denoiser.models import checkpoint;"
              "f = clean(sys.argv[1], sys.argv[2], checkpoint.resolve_checkpoint(sys.argv[3], None));"
              "print(json.dumps({p: [s, None if pd.isna(e) else e] for p, s, e in zip(f.index, f['status'], f['error'])}));"
              "print(peak_kb())")
    command = [*(WITHOUT_ROOT_OVERRIDE if as_user else []), sys.executable, "-c", script, str(root), str(out),
               str(weights)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    rows, peak = result.stdout.strip().splitlines()
    return {path: tuple(row) for path, row in json.loads(rows).items()}, int(peak)


def test_a_pixel_bomb_is_refused_with_both_numbers_and_memory_stays_under_a_gigabyte(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    Image.new("L", (9400, 9400), 255).save(root / "bomb.png")  # a few kB on disk, 88 M pixels
    assert (root / "bomb.png").stat().st_size < 200_000
    digit_png().save(root / "small.png")
    rows, peak = clean_apart(root, tmp_path / "out", untrained.weights)
    assert rows["bomb.png"] == ("error", "9400x9400 is 88,360,000 pixels, over the limit of 16,777,216 decoded "
                                         "pixels per file")
    assert rows["small.png"][0] == "ok"
    assert peak < 1024 * 1024


def test_a_large_scan_under_the_limit_is_cleaned_within_a_gigabyte(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    page = Image.new("L", (4000, 4000), 230)
    page.paste(digit_png().resize((400, 400)), (1800, 1800))
    page.save(root / "page.png")
    rows, peak = clean_apart(root, tmp_path / "out", untrained.weights)
    assert rows["page.png"][0] == "ok" and peak < 1024 * 1024


def peak_kb() -> int:
    """This process's peak resident memory (kB) since it started: VmHWM, which exec resets
    (ru_maxrss does not: a child started from a large test worker inherits its figure)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def frames(seed: int, count: int = 3) -> list[Image.Image]:
    return [digit_png(seed + k) for k in range(count)]


def test_every_page_of_a_tiff_and_every_frame_of_a_gif_is_cleaned_and_kept(tmp_path, untrained):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    tiff = frames(1)
    tiff[0].save(root / "pages.tif", save_all=True, append_images=tiff[1:], compression="tiff_lzw")
    gif = frames(5)
    gif[0].save(root / "anim.gif", save_all=True, append_images=gif[1:], duration=[100, 200, 300], loop=0)
    frame = clean(root, out, untrained)
    assert frame["status"].tolist() == ["ok", "ok"] and frame["pages"].tolist() == [3, 3]
    for name, sources in (("pages.tif", tiff), ("anim.gif", gif)):
        with Image.open(out / name) as cleaned:
            assert cleaned.n_frames == 3, name
            durations = []
            for k in range(3):
                cleaned.seek(k)
                page = np.asarray(cleaned.convert("L"), dtype=np.float32)
                assert page.shape == (28, 28)
                assert np.abs(page - np.asarray(sources[k], dtype=np.float32)).mean() > 1  # cleaned, not copied
                durations.append(cleaned.info.get("duration"))
        if name == "anim.gif":
            assert durations == [100, 200, 300]


def test_a_multi_page_file_a_format_cannot_keep_is_an_error_row(tmp_path, untrained):
    root = tmp_path / "in"
    root.mkdir()
    pages = frames(2)
    pages[0].save(root / "pages.tif", save_all=True, append_images=pages[1:])
    (root / "pages.jpg").write_bytes((root / "pages.tif").read_bytes())  # a TIFF named .jpg
    frame = clean(root, tmp_path / "out", untrained)
    assert frame.loc["pages.tif", "status"] == "ok"
    assert frame.loc["pages.jpg", "status"] == "error"


def test_a_float_image_keeps_its_full_range_and_nan_is_refused(tmp_path, untrained):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    values = np.asarray(digit_png(), dtype=np.float32) / 255 * 3.0 - 1.0  # -1 .. 2
    Image.fromarray(values, mode="F").save(root / "signed.tif")
    image = read_image(root / "signed.tif")
    assert image.pixels.min() == 0.0 and image.pixels.max() == 1.0  # the model sees [0, 1] ...
    buffer = io.BytesIO()
    write_like(image, image.pixels, buffer)
    with Image.open(buffer) as back:  # ... and the file gets its own range back, negatives included
        np.testing.assert_allclose(np.asarray(back), values, atol=1e-6)
    broken = values.copy()
    broken[3, 3] = np.nan
    Image.fromarray(broken, mode="F").save(root / "nan.tif")
    frame = clean(root, out, untrained)
    assert frame.loc["signed.tif", "status"] == "ok"
    with Image.open(out / "signed.tif") as cleaned:
        result = np.asarray(cleaned, dtype=np.float32)
    assert -1.0 <= result.min() and result.max() <= 2.0
    assert frame.loc["nan.tif", "status"] == "error" and "NaN" in frame.loc["nan.tif", "error"]


def test_names_print_on_one_line():
    assert printable("two\nlines.png") == "two\\nlines.png"
    assert printable(os.fsdecode(b"caf\xe9.png")) == "caf\\xe9.png"
    assert printable("plain é.png") == "plain é.png"


def test_a_damaged_stage_record_names_its_file(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"stages/report.json is not valid JSON .*remove it"):
        read_stage(tmp_path, "report")
