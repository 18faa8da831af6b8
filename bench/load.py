"""Training on a busy machine: the default recipe's training rate alone and beside competing
busy processes, with torch's fixed thread count (the behaviour before
:mod:`denoiser.threads`) and with the threads the training loop now yields to the others.

    python -m bench.load                        # 1 competitor, 2 repeats (about 3 minutes)
    python -m bench.load --competitors 1 3 --repeats 3 --json load.json

Each figure is a separate training process (so the thread settings start fresh), on
synthetic digits, the conditions interleaved so a slow spell of the machine hits all of them.
The target (issue 33): with one competing busy process, training keeps >= 40% of its idle rate.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.machine import cpu_name

CHILD = """
import json, sys, torch
from bench.speed import synthetic_digits
from denoiser.models.precision import resolve_precision
from denoiser.models.recipe import TrainConfig
from denoiser.training.loop import train
device = torch.device("cpu")
chosen = resolve_precision("auto", device)
config = TrainConfig.recipe("unet", bf16=chosen.name == "bf16", epochs=2, val_fraction=0.02, max_minutes=None)
result = train(synthetic_digits(int(sys.argv[1])), config, device=device, precision=chosen, show_progress=False)
print(json.dumps({"images_per_second": sum(e.images_per_second for e in result.history) / len(result.history),
                  "precision": chosen.name, "threads_at_start": torch.get_num_threads()}))
"""
BUSY = "while True: pass"


def train_rate(images: int, fixed: int | None, competitors: int) -> dict:
    """One training process's images/s with ``competitors`` busy processes beside it."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "DENOISER_THREADS")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    if fixed is not None:
        env["DENOISER_THREADS"] = str(fixed)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(competitors)]
    try:
        done = subprocess.run([sys.executable, "-c", CHILD, str(images)], env=env, capture_output=True,
                              text=True, check=True)
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--competitors", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--images", type=int, default=5000, help="training images per epoch (2 epochs)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    import torch

    torch_threads = torch.get_num_threads()
    load = os.getloadavg()
    conditions = [(mode, n) for n in [0, *args.competitors] for mode in ("fixed", "yields")]
    rates: dict[str, list[float]] = {f"{mode}, {n} busy": [] for mode, n in conditions}
    for repeat in range(args.repeats):
        for mode, n in conditions:
            got = train_rate(args.images, torch_threads if mode == "fixed" else None, n)
            rates[f"{mode}, {n} busy"].append(round(got["images_per_second"], 1))
            print(f"repeat {repeat + 1}: {mode:6} threads, {n} busy: {got['images_per_second']:7.1f} images/s "
                  f"({got['precision']})", flush=True)
    median = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
    result = {"date": time.strftime("%Y-%m-%d"), "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
              "torch_threads": torch_threads, "load_before": [round(x, 2) for x in load]},
              "images_per_second": rates, "median": median, "share_of_idle": {}}
    print(f"\nmedian images/s (load before: {load[0]:.2f}); share of the same mode's idle rate:")
    for mode, n in conditions:
        share = median[f"{mode}, {n} busy"] / median[f"{mode}, 0 busy"]
        result["share_of_idle"][f"{mode}, {n} busy"] = round(share, 3)
        print(f"  {mode:6} threads, {n} busy: {median[f'{mode}, {n} busy']:7.1f}  {share:6.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
