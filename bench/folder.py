"""The folder pipeline end to end: ``denoiser clean`` on generated PNG folders.

Each run is a fresh ``denoiser clean`` process against a Prefect server that this module
starts (or an ephemeral API), so its wall time, peak RSS and the split the flow records in
``OUT_DIR/.denoiser/runs/<run>/timings.json`` are those a user gets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from denoiser.files import read_json
from denoiser.folders import plan
from denoiser.folders.steps import FileSteps, PixelBudget, ShardTimings
from denoiser.folders.workdir import TMP, open_tree
from denoiser.models import checkpoint
from denoiser.models.networks import build_model
from denoiser.models.precision import FP32, Precision
from denoiser.scans.batch import BatchTimings, clean_batch

PER_FOLDER = 1000
BATCH = 256  # files a shard sends to the model together (28x28 scans)


def make_pngs(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` noisy 28x28 grayscale PNGs, a thousand per subfolder."""
    rng = np.random.default_rng(seed)
    base = np.zeros((28, 28))
    base[6:22, 12:16] = 1.0  # a plain stroke; the content does not change the speed
    for i in range(count):
        noisy = np.clip(base + 0.5 * rng.standard_normal((28, 28)), 0, 1)
        sub = folder / f"part-{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray((noisy * 255).astype(np.uint8), "L").save(sub / f"{i:06d}.png")
    return folder


def save_model(models_dir: Path, model: str) -> str:
    """An untrained model in a store of its own (speed does not depend on the weights)."""
    saved = checkpoint.save_checkpoint(models_dir, f"{model}-bench", build_model(model),
                                       {"architecture": model})
    return str(saved.weights)


def parts_alone(folder: Path, weights: str, limit: int, precision: Precision = FP32) -> dict[str, float]:
    """Images/s of each part of the pipeline run by itself, with the product's own steps
    (:class:`denoiser.folders.steps.FileSteps`, :func:`denoiser.scans.batch.clean_batch`):
    decode (the safe read, hash and decode on one thread, then the batch's tones and scale),
    the model (both passes, on all cores, in ``precision``), encode (the map back and the
    report figures for the batch, then encoding and the atomic write on one thread)."""
    out = folder.parent / "parts-alone"
    entries = plan.plan(folder, out)[:limit]
    found = checkpoint.resolve_checkpoint(weights, Path(weights).parent)
    tree = open_tree(out)
    steps = FileSteps(in_dir=folder, tree=tree, tmp_dir=TMP,
                      checkpoint=found, run_id="bench", current={}, clock=ShardTimings(),
                      reason=None, max_bytes=10**8, budget=PixelBudget(2**40))
    model = checkpoint.load_model(found, device="cpu")
    clean_batch(model, [np.zeros((28, 28), np.float32)] * 64, headroom=steps.headroom,
                precision=precision)  # warm-up
    start = time.perf_counter()
    pending = [steps.read(entry) for entry in entries]
    read_seconds = time.perf_counter() - start
    clock, results = BatchTimings(), []
    for first in range(0, len(pending), BATCH):
        chunk = pending[first : first + BATCH]
        results += clean_batch(model, [p.image.pixels for p in chunk], headroom=steps.headroom,
                               precision=precision, timings=clock)
    start = time.perf_counter()
    for item, result in zip(pending, results, strict=True):
        steps.write(item, [result], 0.0)
    write_seconds = time.perf_counter() - start
    tree.close()
    shutil.rmtree(out)
    n = len(entries)
    return {"decode": n / (read_seconds + clock.prepare), "model": n / clock.model,
            "encode": n / (clock.finish + write_seconds)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[dict[str, str]]:
    """A ``prefect server`` on a free local port for as long as the block runs: its env."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the Prefect server did not start") from None
                time.sleep(0.5)
        yield {**env, "PREFECT_API_URL": url}
    finally:
        server.terminate()
        server.wait(timeout=30)


def clean_run(in_dir: Path, out_dir: Path, weights: str, env: dict[str, str], *options: str) -> dict:
    """One ``denoiser clean`` process (with ``options``): wall seconds, peak RSS and the
    flow's own timings."""
    command = [str(Path(sys.executable).parent / "denoiser"), "clean", str(in_dir), str(out_dir),
               "--model", weights, "--device", "cpu", *options]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with TreeMemory(process.pid) as tree:
        stderr = process.stderr.read()  # type: ignore[union-attr]
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"denoiser clean failed: {stderr.decode()[-2000:]}")
    (run,) = (out_dir / ".denoiser" / "runs").iterdir()
    timings = read_json(run / "timings.json")
    files = timings["files"]
    return {
        "files": files,
        "wall_seconds": round(wall, 3),
        "images_per_s": round(files / timings["flow_seconds"], 1),
        "images_per_s_with_startup": round(files / wall, 1),
        "startup_seconds": round(wall - timings["flow_seconds"], 3),  # imports, API, flow start
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # the largest process's (Linux reports KiB)
        "peak_tree_rss_mb": round(tree.peak / 2**20, 1),  # the command and its worker processes together
        **timings,
    }


class TreeMemory:
    """The peak of the summed resident memory of a process and its descendants (the
    worker processes of a run), sampled every quarter second from ``/proc``."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        self.pid, self.every, self.peak = pid, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="tree-memory", daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, sum(_rss(pid) for pid in _tree(self.pid)))


def _tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def _rss(pid: int) -> int:
    """Resident bytes of ``pid`` (0 once it has ended)."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")
