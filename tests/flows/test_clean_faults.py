"""The clean-folder flow when the folder, not a file, is the trouble: a full disk, a damaged
history, a damaged manifest, a link planted where the working folder keeps its runs. The
run stops or goes on with one line of explanation, and nothing outside OUT_DIR changes."""

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from denoiser.folders.settings import CleanOptions, CleanRun
from flows.clean import clean_folder
from tests.helpers import draw_digits


def write_bmps(folder: Path, count: int, side: int = 300) -> None:
    """BMP scans: their outputs take the same room whatever the model makes of them."""
    folder.mkdir(parents=True, exist_ok=True)
    digits = draw_digits(count, seed=2)[0]
    for i, digit in enumerate(digits):
        Image.fromarray(digit).resize((side, side)).save(folder / f"{i:03d}.bmp")


def run(in_dir, out, store, **settings):
    return clean_folder(in_dir=str(in_dir), out_dir=str(out), options=CleanOptions(device="cpu"),
                        run=CleanRun(models_dir=str(store), **settings), retry_delay_seconds=0, return_state=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs, grown by the test; skipped where mounting is not allowed."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_stops_the_run_in_one_line_and_the_rerun_redoes_nothing(tmp_path, store, small_disk):
    in_dir, out = tmp_path / "in", small_disk / "out"
    write_bmps(in_dir, 40)  # 40 x 270 kB of outputs on a 3 MB disk
    state = run(in_dir, out, store, shard_size=100)
    assert state.is_failed()
    assert state.message.startswith(f"no space left on {out} (") and "bytes free)" in state.message
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("*.bmp")}
    assert 0 < len(done) < 40
    for path in out.glob("*.bmp"):  # what is there is whole
        with Image.open(path) as image:
            image.load()
    assert not list((out / ".denoiser" / "tmp").glob("*"))

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = run(in_dir, out, store, shard_size=100)
    assert again.is_completed(), again.message
    result = again.result()
    assert result["skipped"] == len(done) and result["ok"] == 40 - len(done) and result["error"] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.bmp") if p.name in done} == done  # nothing redone


def test_a_damaged_history_is_set_aside_and_rebuilt_from_the_shard_reports(tmp_path, store, caplog):
    in_dir, out = tmp_path / "in", tmp_path / "out"
    write_bmps(in_dir, 6, side=28)
    assert run(in_dir, out, store).is_completed()
    write_bmps(in_dir / "more", 3, side=28)
    assert run(in_dir, out, store).is_completed()
    (out / ".denoiser" / "history.parquet").write_bytes(b"PAR1 but not really")
    write_bmps(in_dir / "later", 2, side=28)
    state = run(in_dir, out, store)
    assert state.is_completed(), state.message
    aside = list((out / ".denoiser").glob("history.parquet.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == b"PAR1 but not really"
    runs = pd.read_parquet(out / ".denoiser" / "history.parquet")
    assert runs["ok"].tolist() == [6, 3, 2]
    assert any("set aside as" in r.getMessage() for r in caplog.records)  # said in the run's log


def test_a_damaged_manifest_fails_the_run_in_one_line(tmp_path, store):
    in_dir, out = tmp_path / "in", tmp_path / "out"
    write_bmps(in_dir, 2, side=28)
    (out / ".denoiser").mkdir(parents=True)
    (out / ".denoiser" / "manifest.sqlite").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    state = run(in_dir, out, store)
    assert state.is_failed() and "is corrupt" in state.message and "\n" not in state.message
    assert not list(out.glob("*.bmp"))
    rebuilt = run(in_dir, out, store, rebuild_manifest=True)
    assert rebuilt.is_completed() and rebuilt.result()["ok"] == 2


def test_retention_through_a_planted_link_deletes_nothing_outside(tmp_path, store):
    in_dir, out, victim = tmp_path / "in", tmp_path / "out", tmp_path / "victim"
    write_bmps(in_dir, 2, side=28)
    (victim / "20200101-000000-aaaaaa").mkdir(parents=True)
    (victim / "20200101-000000-aaaaaa" / "keep.txt").write_text("the victim's")
    assert run(in_dir, out, store).is_completed()
    shutil.rmtree(out / ".denoiser" / "runs")
    (out / ".denoiser" / "runs").symlink_to(victim, target_is_directory=True)
    write_bmps(in_dir / "new", 1, side=28)
    state = run(in_dir, out, store, keep_runs=1)
    assert state.is_failed() and ".denoiser/runs is a link" in state.message
    assert sorted(p.name for p in victim.rglob("*")) == ["20200101-000000-aaaaaa", "keep.txt"]
    assert not (out / "new").exists()
