"""The Prefect UI in a real browser: a server, a small `run` and a `clean` against it, and
their pages opened in headless Chromium. What a user is meant to read must render: the task
runs, the tables, the trend chart and the before/after images (decoded, not broken).

Needs Chromium (Debian's ``chromium``; ``.ci/run`` installs it) and Python's playwright,
which drives it without downloading a browser of its own. Screenshots of a failing page go
to ``$DENOISER_UI_SCREENSHOTS`` (default: the test's temporary folder).
"""

import json
import os
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import denoiser, draw_digits, free_port, seed_prefect_home

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")]
# As the machine's probe runs it: no sandbox (root), and no background traffic to a network
# that is not there.
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update"]


def api(url: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


class Pages:
    """One headless Chromium page; every check that fails leaves a screenshot behind."""

    def __init__(self, page, ui: str, shots: Path) -> None:
        self.page, self.ui, self.shots = page, ui, shots

    def open(self, path: str, waiting_for: str) -> None:
        self.page.goto(self.ui + path)
        self.expect_text(waiting_for, path)

    def expect_text(self, text: str, where: str) -> None:
        try:
            self.page.get_by_text(text, exact=False).first.wait_for(timeout=30_000)
        except Exception as error:
            raise AssertionError(f"{text!r} not shown on {where}; screenshot {self.shot(where)}") from error

    def tab(self, name: str, where: str) -> None:
        self.page.get_by_text(name, exact=True).first.click()
        self.page.wait_for_timeout(500)

    def images(self, where: str) -> list[tuple[bool, int]]:
        """(loaded, natural width) of every image on the page, once they have settled."""
        self.page.wait_for_function("() => [...document.images].every(i => i.complete)", timeout=30_000)
        found = self.page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth])")
        if not found or not all(ok and width > 0 for ok, width in found):
            raise AssertionError(f"broken or missing images on {where} ({found}); screenshot {self.shot(where)}")
        return found

    def shot(self, where: str) -> Path:
        self.shots.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() or c in "-_" else "-" for c in where.strip("/")) or "page"
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def noisy_folder(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    for i, digit in enumerate(draw_digits(12, seed=7)[0]):
        noisy = np.clip(digit / 255 + 0.3 * rng.standard_normal(digit.shape), 0, 1)
        (folder / f"box{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(folder / f"box{i % 2}" / f"{i:02d}.png")
    (folder / "box0" / "broken.png").write_bytes(b"not a png")
    return folder


def test_the_runs_tables_trend_and_images_render_in_a_browser(tmp_path, idx_dir, untrained):
    from playwright.sync_api import sync_playwright

    state, port = tmp_path / "server", free_port()
    seed_prefect_home(state / "prefect")  # the server's database, migrated already (5 of its 12 s)
    started = denoiser("server", "start", "--state-dir", str(state), "--port", str(port), timeout=180)
    assert started.returncode == 0, started.stderr
    url, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home")}
    shots = Path(os.environ.get("DENOISER_UI_SCREENSHOTS") or tmp_path / "screenshots")
    try:
        ran = denoiser("run", "--data-dir", str(idx_dir[0]), "--dataset", "idx", "--model", "conv", "--epochs", "1",
                       "--train-limit", "256", "--test-limit", "32", "--device", "cpu",
                       "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), env=env)
        assert ran.returncode == 0, ran.stderr[-2000:]
        cleaned = denoiser("clean", str(noisy_folder(tmp_path / "scans")), str(tmp_path / "cleaned"),
                           "--model", str(untrained.weights), "--device", "cpu", env=env)
        assert cleaned.returncode == 0, cleaned.stderr[-2000:]
        runs = {run["name"]: run for run in api(url, "/flow_runs/filter", {})}
        flows = {flow["id"]: flow["name"] for flow in api(url, "/flows/filter", {})}
        by_flow = {flows[run["flow_id"]]: run for run in runs.values()}
        expected = {
            "mnist-denoise": (["ingest", "synthesize-noise", "train-or-load", "denoise", "write-report"],
                              ["denoise-summary", "denoise-report", "training-progress"]),
            "clean-folder": (["resolve-model", "clean-shard-0", "write-report", "record-history"],
                             ["clean-summary", "clean-errors", "clean-worst", "clean-report", "trend-cleaned"]),
        }
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            pages = Pages(browser.new_page(viewport={"width": 1400, "height": 1000}), ui, shots)
            for flow, (tasks, keys) in expected.items():
                run = by_flow[flow]
                where = f"/runs/flow-run/{run['id']}"
                pages.open(where, run["name"])
                pages.tab("Task Runs", where)
                for name in tasks:
                    pages.expect_text(name, f"{where} (task runs)")
                pages.tab("Artifacts", where)
                for key in keys:
                    pages.expect_text(key, f"{where} (artifacts)")
                artifacts = {a["key"]: a for a in api(url, "/artifacts/filter",
                                                      {"artifacts": {"flow_run_id": {"any_": [run["id"]]}}})}
                for key in keys:
                    artifact, page = artifacts[key], f"/artifacts/artifact/{artifacts[key]['id']}"
                    pages.open(page, key)
                    if artifact["type"] == "markdown":  # the before/after strip, the preview, the trend chart
                        assert len(pages.images(page)) >= 1
                    elif artifact["type"] == "table":
                        first_column = next(iter(json.loads(artifact["data"])[0]))
                        pages.expect_text(first_column, page)
            pages.open(f"/artifacts/artifact/{artifacts['clean-errors']['id']}", "broken.png")
            # The run with a failed file is Completed, but the runs list shows its tag.
            assert "has-errors" in by_flow["clean-folder"]["tags"]
            pages.open("/runs", by_flow["clean-folder"]["name"])
            pages.expect_text("has-errors", "/runs")
            browser.close()
    finally:
        denoiser("server", "stop", "--state-dir", str(state))
