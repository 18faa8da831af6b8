"""Production soak: a PostgreSQL-backed server, two workers, two folders on schedules firing
every 10 s, new scans arriving all along; then what the database, the outputs and the
history say.

    python -m bench.production                    # 5 minutes, as the README reports
    python -m bench.production --minutes 1 --json production.json

Each folder is deployed as `denoiser deploy` does by default (one run at a time, a run due
while one runs is skipped) with ``--keep-runs 3``. Folder b's scanner doubles its noise
after ``--drift-after`` of the time. Reported: database errors in the server's and the
workers' logs, the flow runs by final state, the most runs at once (in all, and per folder),
inputs without an output or whose output does not match its recorded input (lost), files
cleaned by more than one run (duplicated), runs that cleaned or failed files but are
missing from the folder's history (unrecorded), and each folder's drift: the runs flagged,
and for b whether the first run with the noisier scans was. The model is an untrained
U-Net: the soak is about orchestration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from bench.folder import save_model
from flows.server import Server

DB_ERRORS = re.compile(r"database is locked|OperationalError|DBAPIError|DeadlockDetected|IntegrityError|"
                       r"could not serialize access|too many connections")


def add_scans(folder: Path, start: int, count: int, seed: int, noise: float = 0.2) -> None:
    """``count`` digit-like scans (two or three strokes, bright on black) with Gaussian noise of
    σ ``noise``. (Random specks instead of strokes hide a doubled noise from the estimate.)"""
    rng = np.random.default_rng(seed)
    for i in range(start, start + count):
        path = folder / f"part{i // 200}" / f"{i:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas = Image.new("L", (28, 28), 0)
        for _ in range(int(rng.integers(2, 4))):
            x0, y0, x1, y1 = (int(v) for v in rng.integers(5, 23, size=4))
            ImageDraw.Draw(canvas).line([(x0, y0), (x1, y1)], fill=255, width=int(rng.integers(2, 4)))
        image = np.clip(np.asarray(canvas) / 255 + noise * rng.standard_normal((28, 28)), 0, 1)
        tmp = path.with_name(f".{path.name}.part")  # a scanner writes, then renames
        Image.fromarray(np.round(image * 255).astype(np.uint8)).save(tmp, format="PNG")
        os.replace(tmp, path)


def denoiser(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("denoiser")), *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed: {done.stderr[-2000:]}")
    return done


def flow_runs(url: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        runs, offset = [], 0
        while batch := client.read_flow_runs(limit=200, offset=offset):
            runs += [{"id": str(r.id), "state": r.state_type.value if r.state_type else None,
                      "name": r.state_name, "message": r.state.message if r.state else None,
                      "deployment": str(r.deployment_id),
                      "start": r.start_time.timestamp() if r.start_time else None,
                      "end": r.end_time.timestamp() if r.end_time else None} for r in batch]
            offset += len(batch)
    return runs


def deployment_ids(url: str, names: dict[str, str]) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        return {key: str(client.read_deployment_by_name(name).id) for key, name in names.items()}


def pause(url: str, deployments: list[str]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        for name in deployments:
            client.pause_deployment(client.read_deployment_by_name(name).id)


def drift(out_dir: Path, noisier_since: float | None) -> dict:
    """The folder's runs with data, those flagged as drifted, and (``noisier_since``: when the
    noise doubled) whether the first run holding the noisier scans was flagged."""
    history = pd.read_parquet(out_dir / ".denoiser" / "history.parquet")
    with_data = history[history["ok"] > 0]
    flagged = with_data[with_data["drift"].notna()]
    found = {"runs_with_data": len(with_data), "flagged": len(flagged),
             "reasons": [str(r)[:160] for r in flagged["drift"]][:3]}
    if noisier_since is not None:
        # A run's time is when it started; the first to start after the change holds noisier scans.
        started = [t.timestamp() for t in with_data["time"]]
        after = [d for t, d in zip(started, with_data["drift"], strict=True) if t > noisier_since]
        found["runs_with_data_after_the_change"] = len(after)
        found["first_noisier_run_flagged"] = bool(after and pd.notna(after[0]))
        found["flagged_before_the_change"] = sum(1 for t, d in zip(started, with_data["drift"], strict=True)
                                                 if t <= noisier_since and pd.notna(d))
    return found


def overlap(runs: list[dict]) -> dict:
    """The most flow runs that ran at once, and the runs' median duration."""
    spans = [(r["start"], r["end"]) for r in runs if r["start"] and r["end"]]
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    durations = sorted(end - start for start, end in spans)
    return {"most_at_once": most, "median_seconds": round(durations[len(durations) // 2], 1) if durations else None}


def check_folder(in_dir: Path, out_dir: Path) -> dict:
    """Lost, duplicated and unrecorded, from the outputs, the manifest, the reports and the
    history of one folder."""
    inputs = {p.relative_to(in_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in in_dir.rglob("*.png")}
    with sqlite3.connect(out_dir / ".denoiser" / "manifest.sqlite") as db:
        recorded = dict(db.execute("SELECT path, input_sha256 FROM files").fetchall())
    lost = [rel for rel, digest in inputs.items()
            if recorded.get(rel) != digest or not (out_dir / rel).is_file()]
    reports = sorted((out_dir / ".denoiser" / "reports").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(p) for p in reports]) if reports else pd.DataFrame(columns=["status"])
    cleaned = frame[frame["status"] == "ok"]
    duplicated = int(cleaned.duplicated(["path", "input_sha256"]).sum())
    history = pd.read_parquet(out_dir / ".denoiser" / "history.parquet")
    working = {p.stem for p in reports}
    unrecorded = sorted(working - set(history["run_id"]))
    return {"inputs": len(inputs), "lost": len(lost), "lost_examples": lost[:5], "duplicated": duplicated,
            "runs_with_reports": len(working), "history_rows": int(len(history)),
            "unrecorded_runs": unrecorded, "errors_in_reports": int((frame["status"] == "error").sum())}


def soak(work: Path, minutes: float, interval: int, arrivals: int, drift_after: float) -> dict:
    state = work / "server"
    models = save_model(work / "models", "unet")
    started = time.time()
    server = Server(state).start(port=int(os.environ.get("BENCH_PORT", "4390")), postgres=True, workers=2)
    ready_seconds = time.time() - started
    env = {**os.environ, "PREFECT_API_URL": server["url"], "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str(work / "client")}
    folders = {name: (work / f"in-{name}", work / f"out-{name}") for name in ("a", "b")}
    counts = {name: 200 for name in folders}
    for n, (name, (source, _)) in enumerate(folders.items()):
        add_scans(source, 0, counts[name], seed=n)
    try:
        for name, (source, out) in folders.items():
            denoiser("deploy", str(source), str(out), "--interval", str(interval), "--keep-runs", "3",
                     "--model", models, "--device", "cpu", "--name", f"soak-{name}", "--shard-size", "500",
                     env=env)
        stop = threading.Event()
        soak_started, noisier = time.time(), {"since": None}

        def arrive() -> None:  # new scans every few seconds, into both folders; b's get noisier
            while not stop.wait(5):
                late = time.time() - soak_started > drift_after * minutes * 60
                if late and noisier["since"] is None:
                    noisier["since"] = time.time()
                for n, (name, (source, _)) in enumerate(folders.items()):
                    add_scans(source, counts[name], arrivals, seed=100 + counts[name] + n,
                              noise=0.4 if late and name == "b" else 0.2)
                    counts[name] += arrivals

        feeder = threading.Thread(target=arrive, daemon=True)
        feeder.start()
        time.sleep(minutes * 60)
        stop.set()
        feeder.join()
        # Stop the schedules, let the runs in flight (or waiting for a slot) end, then one more
        # run per folder cleans the last arrivals.
        pause(server["url"], [f"clean-folder/soak-{name}" for name in folders])
        deadline = time.time() + 300
        while any(r["state"] in ("RUNNING", "PENDING") or r["name"] in ("AwaitingConcurrencySlot", "Late")
                  for r in flow_runs(server["url"])):
            if time.time() > deadline:
                break
            time.sleep(3)
        for name, (source, out) in folders.items():
            denoiser("clean", str(source), str(out), "--model", models, "--device", "cpu", env=env)
        runs = flow_runs(server["url"])
        deployments = deployment_ids(server["url"], {name: f"clean-folder/soak-{name}" for name in folders})
        logs = {p.name: p.read_text(errors="replace") for p in state.glob("*.log")}
    finally:
        Server(state).stop()
    by_state: dict[str, int] = {}
    for run in runs:
        by_state[run["name"] or str(run["state"])] = by_state.get(run["name"] or str(run["state"]), 0) + 1
    errors = {name: DB_ERRORS.findall(text) for name, text in logs.items()}
    busy = sum(1 for r in runs if r["message"] and "another run is cleaning" in r["message"])
    return {
        "minutes": minutes, "interval_seconds": interval, "server_ready_seconds": round(ready_seconds, 1),
        "flow_runs": len(runs), "flow_runs_by_state": by_state, "busy_runs": busy, "concurrency": overlap(runs),
        "concurrency_per_folder": {name: overlap([r for r in runs if r["deployment"] == deployments.get(name)])
                                   for name in folders},
        "drift": {name: drift(out, noisier["since"] if name == "b" else None) for name, (_, out) in folders.items()},
        "database_errors": sum(len(v) for v in errors.values()),
        "database_error_examples": sorted({e for v in errors.values() for e in v})[:5],
        "folders": {name: check_folder(source, out) for name, (source, out) in folders.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="how long the schedules fire")
    parser.add_argument("--interval", type=int, default=10, help="seconds between a folder's scheduled runs")
    parser.add_argument("--arrivals", type=int, default=100, help="new scans per folder every 5 seconds")
    parser.add_argument("--drift-after", type=float, default=0.6,
                        help="after this share of the time, folder b's new scans have twice the noise")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="denoiser-production-"))
    work.chmod(0o755)  # as root, PostgreSQL runs as the user postgres, who must reach its folder
    load, date = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result = {"date": date, "load_before": [round(x, 2) for x in load],
              **soak(work, args.minutes, args.interval, args.arrivals, args.drift_after)}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
