"""Reliability under kills and memory under hostile folders, measured on the real command.

    python -m bench.faults soak --kills 20      # kill -9 `denoiser clean` at random moments
    python -m bench.faults memory               # peak RSS: a 4 GiB junk file and 2000x2000 scans

``soak`` cleans a folder of digits, kills the command with SIGKILL at a random moment
``--kills`` times, and after each kill checks: no partial output (every output decodes
whole), no temporary file outside ``.denoiser/tmp``, no temporary Prefect server left
running. A final run completes; it must redo none of the files the manifest recorded as
done. ``memory`` reports the command's peak resident memory (the largest process).
Both pass ``--model`` through (default: the store's default model for clean).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from flows.orphans import prefect_home_of, temporary_servers

ROOT = Path(__file__).resolve().parent.parent


def digits(folder: Path, count: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(count):
        path = folder / f"part{i // 500}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(path)


def command(in_dir: Path, out_dir: Path, model: str | None) -> list[str]:
    extra = ["--model", model] if model else []
    return [sys.executable, "-m", "flows.cli", "clean", str(in_dir), str(out_dir), "--device", "cpu", *extra]


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": ""}


def done_rows(out_dir: Path) -> dict[str, str]:
    path = out_dir / ".denoiser" / "manifest.sqlite"
    if not path.is_file():
        return {}
    with sqlite3.connect(path) as db:
        return {os.fsdecode(p) if isinstance(p, bytes) else p: sha
                for p, sha in db.execute("SELECT path, input_sha256 FROM files")}


def partial_outputs(out_dir: Path) -> list[str]:
    """Outputs that do not decode whole, and temporary files outside .denoiser/tmp."""
    bad = []
    for path in out_dir.rglob("*"):
        rel = path.relative_to(out_dir)
        if rel.parts[0] == ".denoiser":
            if path.name.endswith(".part") and rel.parts[:2] != (".denoiser", "tmp"):
                bad.append(str(rel))
            continue
        if path.is_file():
            try:
                with Image.open(path) as image:
                    image.load()
            except Exception:  # noqa: BLE001 - any failure to decode is a partial file
                bad.append(str(rel))
    return bad


def soak(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    in_dir, out_dir, home = work / "in", work / "out", work / "prefect-home"
    digits(in_dir, args.files)
    rng = random.Random(args.seed)
    kills: list[dict] = []
    interrupted: Path | None = None
    def servers() -> set[int]:  # this soak's own, not those of other commands on the machine
        return {pid for pid in temporary_servers() if prefect_home_of(pid) == str(home)}

    def output_times(folder: Path) -> dict[str, int]:  # outputs the manifest records as done
        return {rel: (folder / rel).stat().st_mtime_ns for rel in done_rows(folder)
                if (folder / rel).is_file()}

    redone = 0
    for k in range(args.kills):
        before = servers()
        done_before = output_times(out_dir)
        process = subprocess.Popen(command(in_dir, out_dir, args.model), env=environment(home), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(args.min_seconds, args.max_seconds)
        time.sleep(delay)
        finished = process.poll() is not None
        process.kill()
        process.wait()
        time.sleep(args.settle)  # the watchdog stops the orphaned server (SIGKILL after 5 s)
        orphans = sorted(servers() - before)
        after = output_times(out_dir)
        rewritten = sum(after.get(rel, stamp) != stamp for rel, stamp in done_before.items())
        redone += rewritten
        kills.append({"kill": k + 1, "after_s": round(delay, 1), "had_finished": finished,
                      "recorded_done": len(done_rows(out_dir)), "redone": rewritten,
                      "partial": partial_outputs(out_dir),
                      "orphaned_servers": len(orphans)})
        print(json.dumps(kills[-1]), flush=True)
        if 0 < kills[-1]["recorded_done"] < args.files:
            interrupted = out_dir  # a run killed midway: the final run must redo none of its done files
        if finished or kills[-1]["recorded_done"] == args.files:  # all done: kill the next
            out_dir = work / f"out{k}"                                 # run on a fresh folder
    out_dir = interrupted or out_dir
    recorded = done_rows(out_dir)
    report = work / "final.parquet"
    final = subprocess.run(command(in_dir, out_dir, args.model) + ["--report", str(report)], cwd=ROOT,
                           env=environment(home), capture_output=True, text=True)
    frame = pd.read_parquet(report)
    final_redone = frame[(frame["status"] == "ok") & frame["path"].isin(list(recorded))]
    return {"kills": len(kills), "partial_files": sum(len(k["partial"]) for k in kills),
            "orphaned_servers": sum(k["orphaned_servers"] for k in kills),
            "final_exit": final.returncode, "final_ok": int((frame["status"] == "ok").sum()),
            "final_skipped": int((frame["status"] == "skipped").sum()),
            "recorded_done_before_final": len(recorded),
            "redone_that_were_recorded_done": redone + len(final_redone),
            "final_partial": partial_outputs(out_dir)}


def memory(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="memory-"))
    in_dir = work / "in"
    digits(in_dir, args.files)
    rng = np.random.default_rng(1)
    for i in range(args.large):
        page = np.clip(0.85 + 0.1 * rng.standard_normal((2000, 2000)), 0, 1)
        Image.fromarray((page * 255).astype(np.uint8)).save(in_dir / f"page{i:02d}.png")
    with open(in_dir / "junk.png", "wb") as handle:  # 4 GiB of random-looking bytes
        block = os.urandom(1 << 24)
        for _ in range(256):
            handle.write(block)
    started = time.time()
    result = subprocess.run(command(in_dir, work / "out", args.model), env=environment(work / "home"),
                            cwd=ROOT, capture_output=True, text=True)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (in_dir / "junk.png").unlink()
    return {"exit": result.returncode, "summary": result.stdout.strip().splitlines()[:1],
            "seconds": round(time.time() - started, 1), "peak_rss_mb": round(peak_mb),
            "files": args.files + args.large + 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("soak", "memory"))
    parser.add_argument("--model", default=None, help="model id or .pt path (default: the store's)")
    parser.add_argument("--files", type=int, default=6000, help="28x28 digits in the folder")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--large", type=int, default=20, help="2000x2000 scans (memory)")
    parser.add_argument("--min-seconds", type=float, default=4.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=6.0, help="seconds after a kill before checking")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    result = soak(args) if args.what == "soak" else memory(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
