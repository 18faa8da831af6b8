"""Regenerate the README's screenshots of the Prefect UI (``docs/*.png``).

    .venv/bin/python docs/screenshots.py          # about 4 minutes on two CPU cores

Everything shown is synthetic: digits typed in Pillow's font (no MNIST, nothing derived from
it), a small U-Net trained on them for a few minutes, and a folder cleaned by ``denoiser clean``
against a local server, run after run, until its scanner's noise doubles (a drift). Needs
Chromium (``apt-get install chromium``) and the test extras (playwright).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from denoiser.models import checkpoint
from denoiser.models.recipe import TrainConfig
from denoiser.training.loop import train

DOCS = ROOT / "docs"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update"]


def typed_digits(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28): digits in Pillow's font, of random size, place and slant."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        size = int(rng.integers(18, 25))
        canvas = Image.new("L", (28, 28), 0)
        ImageDraw.Draw(canvas).text((14, 14), str(rng.integers(10)), fill=255, anchor="mm",
                                    font=ImageFont.load_default(size=size))
        out[i] = np.asarray(canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR))
    return out


def write_scans(folder: Path, noise: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for i, digit in enumerate(typed_digits(120, seed=1000)):
        noisy = np.clip(digit / 255 + noise * rng.standard_normal(digit.shape), 0, 1)
        path = folder / f"batch{i // 40}" / f"scan{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(path)
    Image.fromarray(np.full((28, 28), 30, np.uint8)).save(folder / "batch0" / "blank-page.png")
    (folder / "batch1" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")


def api(url: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def main() -> None:
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="denoiser-docs-"))
    torch.manual_seed(0)
    result = train(typed_digits(12000, seed=0), TrainConfig.recipe("unet", noise="gaussian:0.1-0.6", epochs=5),
                   device=torch.device("cpu"), show_progress=False)
    saved = checkpoint.save_checkpoint(work / "models", "unet-typed-digits", result.model,
                                       {"architecture": "unet", "noise": "gaussian:0.1-0.6"})
    denoiser = str(Path(sys.executable).with_name("denoiser"))
    port = 4397
    subprocess.run([denoiser, "server", "start", "--state-dir", str(work / "server"), "--port", str(port)],
                   check=True)
    url, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    env = {**os.environ, "PREFECT_API_URL": url, "PREFECT_HOME": str(work / "home")}
    scans, cleaned = work / "scans", work / "cleaned"
    try:
        for run, noise in enumerate([0.25, 0.26, 0.24, 0.25, 0.27, 0.25, 0.5]):  # the scanner degrades
            shutil.rmtree(scans, ignore_errors=True)
            write_scans(scans, noise, seed=run)
            subprocess.run([denoiser, "clean", str(scans), str(cleaned), "--model", str(saved.weights),
                            "--overwrite", "--device", "cpu"], env=env, check=False, capture_output=True)
        last = api(url, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 1})[0]
        artifacts = {a["key"]: a["id"] for a in api(url, "/artifacts/filter",
                                                    {"artifacts": {"flow_run_id": {"any_": [last["id"]]}}})}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})

            def shoot(path: str, name: str, tab: str | None = None) -> None:
                page.goto(ui + path)
                page.wait_for_timeout(2500)
                if tab:
                    page.get_by_text(tab, exact=True).first.click()
                    page.wait_for_timeout(1500)
                page.screenshot(path=str(DOCS / name))
                print("wrote", DOCS / name)

            shoot("/runs", "ui-runs.png")
            shoot(f"/runs/flow-run/{last['id']}", "ui-run-artifacts.png", tab="Artifacts")
            shoot(f"/artifacts/artifact/{artifacts['trend-cleaned']}", "ui-trend.png")
            shoot(f"/artifacts/artifact/{artifacts['clean-report']}", "ui-before-after.png")
            shoot(f"/artifacts/artifact/{artifacts['clean-errors']}", "ui-errors.png")
            browser.close()
    finally:
        subprocess.run([denoiser, "server", "stop", "--state-dir", str(work / "server")], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
