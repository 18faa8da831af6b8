"""Speed and memory benchmark: the product beside plain references, in one run.

    python -m bench                  # full sizes (about 15 minutes on 2 CPU cores)
    python -m bench --quick          # a few minutes
    python -m bench --json out.json  # also write the figures as JSON
    python -m bench --precision fp32 # the product in float32 (default: auto, as the commands)

Every figure is the median of several repetitions; each repetition records the load that
other processes put on the CPUs (from /proc/stat), and only the quiet ones count when
there are any. Throughputs are also shown as a fraction of the machine's limit in the
precision they ran in (:mod:`bench.machine`: the faster of a matmul and a 3x3 convolution),
with the models' FLOPs counted as direct convolutions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from bench import folder, speed
from bench.machine import conv_flops, cpu_name, limit_note, matmul_flops, median_of, model_flops
from denoiser.choices import PRECISIONS
from denoiser.models.device import resolve_device
from denoiser.models.infer import default_batch_size
from denoiser.models.networks import build_model
from denoiser.models.precision import Precision, bf16_supported, resolve_precision
from denoiser.models.recipe import DEFAULT_MODEL

SIZES = {  # images per measurement
    "full": dict(repeats=3, train=16384, infer=10240, infer_ref=2048, folders=(10000, 50000),
                 parts=5000),
    "quick": dict(repeats=3, train=4096, infer=4096, infer_ref=1024, folders=(2000, 10000),
                  parts=2000),
    "smoke": dict(repeats=1, train=256, infer=256, infer_ref=64, folders=(40, 80), parts=40),
}


def bench_machine(device: torch.device, repeats: int, chosen: Precision) -> dict:
    """Matmul and 3x3-conv FLOP/s in each precision this device runs; ``limit``: the peak in
    the precision the product runs in."""
    result = {"fp32_flops": median_of(lambda: matmul_flops(device), repeats),
              "fp32_conv_flops": median_of(lambda: conv_flops(device), repeats)}
    if bf16_supported(device):
        result["bf16_flops"] = median_of(lambda: matmul_flops(device, torch.bfloat16), repeats)
        result["bf16_conv_flops"] = median_of(lambda: conv_flops(device, torch.bfloat16), repeats)
    kernels = {"matmul": result[f"{chosen.name}_flops"]["median"],
               "conv3x3": result[f"{chosen.name}_conv_flops"]["median"]}
    kernel = max(kernels, key=kernels.get)
    result["limit"] = {"precision": chosen.name, "precision_reason": chosen.reason, "kernel": kernel,
                       "flops": kernels[kernel]}
    return result


def side_by_side(product: Callable[[str], float], reference: Callable[[], float], *, repeats: int,
                 flops: dict, limit_flops: float) -> dict:
    """The product (on the tutorial's model) and the reference, alternated so both see the same
    background; then the product on the default model. ``flops``: per image, per model."""
    runs: dict[str, list] = {"product_runs": [], "reference_runs": []}
    for _ in range(repeats):
        runs["product_runs"].append(median_of(lambda: product("conv"), 1))
        runs["reference_runs"].append(median_of(reference, 1))
    product_rate = statistics.median([r["median"] for r in runs["product_runs"]])
    reference_rate = statistics.median([r["median"] for r in runs["reference_runs"]])
    limit = limit_flops / flops["conv"]
    default = median_of(lambda: product(DEFAULT_MODEL), repeats)
    default_fraction = default["median"] * flops[DEFAULT_MODEL] / limit_flops
    return {
        "product_images_per_s": product_rate, "reference_images_per_s": reference_rate, **runs,
        "ratio": product_rate / reference_rate,
        "limit_images_per_s": limit, "limit_fraction": product_rate / limit,
        "limit_note": limit_note(product_rate / limit),
        "default_model": {"model": DEFAULT_MODEL, "images_per_s": default["median"], **default,
                          "limit_fraction": default_fraction, "limit_note": limit_note(default_fraction)},
    }


def bench_train(device: torch.device, size: dict, limit_flops: float, flops: dict, chosen: Precision) -> dict:
    images = speed.synthetic_digits(size["train"])
    measured = side_by_side(lambda model: speed.product_train(images, model, device, chosen),
                            lambda: speed.reference_train(images, device), repeats=size["repeats"],
                            flops={m: f["train_step"] for m, f in flops.items()}, limit_flops=limit_flops)
    return {"images": size["train"], "batch_size": 128, **measured}


def bench_infer(device: torch.device, size: dict, limit_flops: float, flops: dict, chosen: Precision) -> dict:
    images = speed.synthetic_digits(size["infer"], seed=1)
    few = images[: size["infer_ref"]]
    measured = side_by_side(lambda model: speed.product_denoise(images, model, device, chosen),
                            lambda: speed.reference_denoise(few, device), repeats=size["repeats"],
                            flops={m: f["forward"] for m, f in flops.items()}, limit_flops=limit_flops)
    return {"images": size["infer"], "batch_size": default_batch_size(device), **measured}


def bench_folder(size: dict, work: Path, api: str, chosen: Precision) -> dict:
    """The folder pipeline against ``api``: "server" (a ``prefect server`` started for it, and
    one more run on the ephemeral API for its start-up), "ephemeral", or the URL of a running
    Prefect API (start-up as a scheduled run on that server sees it; no ephemeral run)."""
    weights = folder.save_model(work / "models", DEFAULT_MODEL)
    small, large = size["folders"]
    in_large = folder.make_pngs(work / f"in-{large}", large)
    in_small = folder.make_pngs(work / f"in-{small}", small)
    alone = [folder.parts_alone(in_small, weights, size["parts"], chosen) for _ in range(size["repeats"])]
    rates = {name: statistics.median(a[name] for a in alone) for name in ("decode", "model", "encode")}
    slowest = min(rates, key=rates.get)
    # The processor's bound: every part's CPU time per image (the model's on all its threads)
    # shared by all the cores.
    threads = torch.get_num_threads()
    core_seconds = 1 / rates["decode"] + threads / rates["model"] + 1 / rates["encode"]
    cpu_bound = (os.cpu_count() or 1) / core_seconds
    env = {**os.environ, "PREFECT_HOME": str(work / "prefect-ephemeral"), "PREFECT_API_URL": ""}
    runs = {}
    options = ("--precision", chosen.name)
    server = api == "server"
    given = {**os.environ, "PREFECT_API_URL": api} if api not in ("server", "ephemeral") else None
    with folder.prefect_server(work / "prefect-server") if server else _nothing(given or env) as api_env:
        for count, source in ((small, in_small), (large, in_large)):
            runs[str(count)] = folder.clean_run(source, work / f"out-{count}", weights, api_env, *options)
    big = runs[str(large)]
    # With a server it started, one more (small) run measures what the ephemeral API costs to start.
    ephemeral = (folder.clean_run(in_small, work / "out-ephemeral", weights, env, *options) if server
                 else None if given else runs[str(small)])
    return {
        "model": DEFAULT_MODEL,
        "api": "prefect server" if server else f"prefect server at {api}" if given else "ephemeral",
        "precision": chosen.name,
        "parts_alone_images_per_s": rates, "slowest_part": slowest,
        "cpu_bound_images_per_s": cpu_bound,
        "runs": runs,
        "images_per_s": big["images_per_s"],
        "fraction_of_slowest_part": big["images_per_s"] / rates[slowest],
        "fraction_of_cpu_bound": big["images_per_s"] / cpu_bound,
        "prefect_overhead_fraction": big["orchestration_seconds"] / big["flow_seconds"],
        "ephemeral_api_startup_seconds": None if ephemeral is None else ephemeral["startup_seconds"],
        "server_startup_seconds": big["startup_seconds"],
    }


def api_choice(value: str) -> str:
    """--api: "server", "ephemeral" or an http(s) URL."""
    if value in ("server", "ephemeral") or value.startswith(("http://", "https://")):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither 'server', 'ephemeral' nor a URL (http://HOST:PORT/api)")


class _nothing:
    def __init__(self, value: dict) -> None:
        self.value = value

    def __enter__(self) -> dict:
        return self.value

    def __exit__(self, *exc: object) -> None:
        pass


def bench_gpu(size: dict, flops: dict) -> dict | None:
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    bf16 = median_of(lambda: matmul_flops(device, torch.bfloat16), 3)["median"]
    chosen = resolve_precision("auto", device)
    train = bench_train(device, {**size, "train": max(size["train"], 16384)}, bf16, flops, chosen)
    infer = bench_infer(device, {**size, "infer": max(size["infer"], 65536)}, bf16, flops, chosen)
    mnist_like = speed.synthetic_digits(60000)
    epoch = {m: speed.gpu_epoch_seconds(mnist_like, m, device) for m in ("conv", DEFAULT_MODEL)}
    fraction = {m: 60000 * flops[m]["train_step"] / bf16 / s for m, s in epoch.items()}
    return {"name": torch.cuda.get_device_name(), "precision": chosen.name, "precision_reason": chosen.reason,
            "bf16_flops": bf16, "train": train, "infer": infer,
            "mnist_epoch_seconds": epoch, "epoch_limit_fraction": fraction}


def table(result: dict) -> str:
    t, i, f, m = result["train"], result["infer"], result["folder"], result["machine"]

    def row(label: str, figures: dict, reference: bool = True) -> str:
        rate = figures.get("product_images_per_s", figures.get("images_per_s"))
        middle = (f"{figures['reference_images_per_s']:11,.0f}{figures['ratio']:7.2f}" if reference
                  else " " * 18)
        mark = " *" if figures.get("limit_note") else ""
        return f"{label:28}{rate:10,.0f}{middle}{figures['limit_fraction']:10.0%}{mark}"

    peaks = ", ".join(f"{p} matmul {m[f'{p}_flops']['median'] / 1e9:,.0f} / conv3x3 "
                      f"{m[f'{p}_conv_flops']['median'] / 1e9:,.0f} GFLOP/s"
                      for p in ("fp32", "bf16") if f"{p}_flops" in m)
    limit = m["limit"]
    lines = [
        f"machine: {m['cpu']} ({m['threads']} torch threads); {peaks}",
        f"product in {limit['precision']} ({limit['precision_reason']}); references in fp32; limit: "
        f"{limit['precision']} {limit['kernel']} {limit['flops'] / 1e9:,.0f} GFLOP/s, direct-conv FLOPs",
        f"{'':28}{'product':>10}{'reference':>11}{'ratio':>7}{'of limit':>10}",
        row("train conv (img/s)", t),
        row("denoise conv (img/s)", i),
        row(f"train {t['default_model']['model']} (img/s)", t["default_model"], reference=False),
        row(f"denoise {i['default_model']['model']} (img/s)", i["default_model"], reference=False),
        f"folder ({f['api']}): " + ", ".join(
            f"{n} files {r['images_per_s']:,.0f} img/s, peak RSS {r['peak_tree_rss_mb']:,.0f} MB "
            f"(largest process {r['peak_rss_mb']:,.0f})"
            for n, r in f["runs"].items()),
        "  parts alone (img/s): "
        + ", ".join(f"{k} {v:,.0f}" for k, v in f["parts_alone_images_per_s"].items())
        + f"; pipeline = {f['fraction_of_slowest_part']:.0%} of the slowest ({f['slowest_part']}), "
        f"{f['fraction_of_cpu_bound']:.0%} of the CPU bound ({f['cpu_bound_images_per_s']:,.0f})",
        f"  Prefect overhead {f['prefect_overhead_fraction']:.1%} of the largest run; start-up "
        f"{f['server_startup_seconds']:.1f} s"
        + ("" if f["ephemeral_api_startup_seconds"] is None
           else f", ephemeral API start-up {f['ephemeral_api_startup_seconds']:.1f} s"),
        f"memory: peak RSS of all its processes {result['memory']['rss_growth']:+.1%} from the small to the "
        "large folder",
    ]
    notes = {n for part in (t, i, t["default_model"], i["default_model"]) if (n := part.get("limit_note"))}
    lines += [f"* {note}" for note in sorted(notes)]
    if result.get("gpu"):
        lines.append(gpu_line(result["gpu"]))
    return "\n".join(lines)


def gpu_line(g: dict) -> str:
    epochs = ", ".join(f"{name} {s:.2f} s" for name, s in g["mnist_epoch_seconds"].items())
    return (f"GPU {g['name']} ({g['precision']}): train conv "
            f"{g['train']['product_images_per_s']:,.0f} img/s ({g['train']['ratio']:.1f}x reference), "
            f"{DEFAULT_MODEL} {g['train']['default_model']['images_per_s']:,.0f}; denoise conv "
            f"{g['infer']['product_images_per_s']:,.0f} img/s ({g['infer']['ratio']:.1f}x reference), "
            f"{DEFAULT_MODEL} {g['infer']['default_model']['images_per_s']:,.0f}; "
            f"MNIST-sized epoch (60,000 images) {epochs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a few minutes")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition: checks it runs")
    parser.add_argument("--json", metavar="PATH", help="also write the result as JSON here")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="precision of the product's training and denoising (the references stay fp32)")
    parser.add_argument("--api", type=api_choice, default="server",
                        help="run the folder pipeline against a local prefect server it starts ('server'), an "
                             "ephemeral API ('ephemeral'), or a running Prefect API (its URL)")
    parser.add_argument("--gpu-only", action="store_true",
                        help="only the GPU figures (needs CUDA): the CPU parts take most of the time")
    args = parser.parse_args()
    size = SIZES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.gpu_only:
        return _gpu_only(size, args.json)
    cpu = torch.device("cpu")
    flops = {m: model_flops(build_model(m)) for m in ("conv", DEFAULT_MODEL)}
    chosen = resolve_precision(args.precision, cpu)
    machine = bench_machine(cpu, size["repeats"], chosen)
    limit = machine["limit"]["flops"]
    result: dict = {
        "sizes": size,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(), **machine},
        "model_flops": flops,
    }
    print("measuring training ...", flush=True)
    result["train"] = bench_train(cpu, size, limit, flops, chosen)
    print("measuring denoising ...", flush=True)
    result["infer"] = bench_infer(cpu, size, limit, flops, chosen)
    print("measuring the folder pipeline ...", flush=True)
    with tempfile.TemporaryDirectory(prefix="denoiser-bench-") as work:
        result["folder"] = bench_folder(size, Path(work), args.api, chosen=chosen)
    small, large = (result["folder"]["runs"][str(n)]["peak_tree_rss_mb"] for n in size["folders"])
    result["memory"] = {"peak_tree_rss_mb_small": small, "peak_tree_rss_mb_large": large,
                        "rss_growth": large / small - 1, "folders": size["folders"]}
    result["gpu"] = bench_gpu(size, flops) if resolve_device("auto").type == "cuda" else None
    print(table(result))
    _save(result, args.json)


def _gpu_only(size: dict, json_path: str | None) -> None:
    if not torch.cuda.is_available():
        raise SystemExit("--gpu-only: no CUDA GPU is available here")
    flops = {m: model_flops(build_model(m)) for m in ("conv", DEFAULT_MODEL)}
    result = {"sizes": size, "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                                         "python": platform.python_version()},
              "model_flops": flops, "gpu": bench_gpu(size, flops)}
    print(gpu_line(result["gpu"]))
    _save(result, json_path)


def _save(result: dict, json_path: str | None) -> None:
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
