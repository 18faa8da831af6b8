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
import time
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
        """Open the page's tab ``name`` (a tab, not the sidebar's link of the same name)."""
        tabs = self.page.locator("[role=tablist] li").get_by_text(name, exact=True)
        try:
            tabs.first.click(timeout=30_000)
        except Exception as error:
            raise AssertionError(f"no tab {name!r} on {where}; screenshot {self.shot(where)}") from error
        self.page.wait_for_timeout(500)
        assert where.split("?")[0] in self.page.url, f"the {name!r} tab left {where} for {self.page.url}"

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


def arrive(folder: Path, batch: int, noise: float, bad: bool = False) -> None:
    """A batch of 24 new scans arriving in ``folder`` (new names), at ``noise``; ``bad``: and a
    file that is not an image."""
    rng = np.random.default_rng(batch)
    for i, digit in enumerate(draw_digits(24, seed=7)[0]):
        noisy = np.clip(digit / 255 + noise * rng.standard_normal(digit.shape), 0, 1)
        (folder / f"box{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(folder / f"box{i % 2}" / f"b{batch}-{i:02d}.png")
    if bad:
        (folder / "box0" / f"b{batch}-broken.png").write_bytes(b"not a png")


def run_deployment_to_the_end(url: str, name: str) -> dict:
    """One run of the deployment ``name``, taken by the server's worker; its flow run once final."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        flow_run = run_deployment(name, timeout=0)
        deadline = time.time() + 240
        with get_client(sync_client=True) as client:
            while not (found := client.read_flow_run(flow_run.id)).state.is_final():
                assert time.time() < deadline, f"the worker did not finish {flow_run.name} in 4 minutes"
                time.sleep(0.5)
    return api(url, "/flow_runs/filter", {"flow_runs": {"id": {"any_": [str(found.id)]}}})[0]


def test_the_runs_tables_trend_images_deployment_and_fleet_render_in_a_browser(tmp_path, idx_dir, untrained):
    """A server with one worker; a small `run`, and a deployed folder whose fourth batch has a
    bad file and doubled noise. The operator's pages: each run's task runs and artifacts, the
    deployment's Runs tab listing its run with errors and drift, the fleet table naming the
    folder that needs a look and why, and the drifted run's tags and state message. (The
    first three batches are cleaned by the deployment's flow with its parameters in this
    process, 8 s faster each than through the worker; the fourth by the worker.)"""
    from playwright.sync_api import sync_playwright
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.clean import clean_folder

    state, port = tmp_path / "server", free_port()
    seed_prefect_home(state / "prefect")  # the server's database, migrated already (5 of its 12 s)
    # The worker inherits this environment: it asks for due runs every second, not every 10.
    started = denoiser("server", "start", "--state-dir", str(state), "--port", str(port), "--workers", "1",
                       env={"PREFECT_WORKER_QUERY_SECONDS": "1"}, timeout=180)
    assert started.returncode == 0, started.stderr
    url, ui = f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{port}"
    env = {"PREFECT_API_URL": url, "PREFECT_HOME": str(tmp_path / "home")}
    shots = Path(os.environ.get("DENOISER_UI_SCREENSHOTS") or tmp_path / "screenshots")
    try:
        # Asking the running server for a password does not pass for having one.
        secured = denoiser("server", "start", "--state-dir", str(state), "--port", str(port), "--auth")
        assert secured.returncode == 1 and "has no password: stop it" in secured.stderr, secured.stderr
        ran = denoiser("run", "--data-dir", str(idx_dir[0]), "--dataset", "idx", "--model", "conv", "--epochs", "1",
                       "--train-limit", "256", "--test-limit", "32", "--device", "cpu",
                       "--runs-dir", str(tmp_path / "runs"), "--models-dir", str(tmp_path / "models"), env=env)
        assert ran.returncode == 0, ran.stderr[-2000:]
        scans = tmp_path / "scans"
        arrive(scans, 0, 0.15)
        deployed = denoiser("deploy", str(scans), str(tmp_path / "cleaned"), "--interval", "3600", "--model",
                            str(untrained.weights), "--device", "cpu", "--name", "ui-folder", env=env, timeout=180)
        assert deployed.returncode == 0, deployed.stderr
        deployment = next(d for d in api(url, "/deployments/filter", {}) if d["name"] == "ui-folder")
        with temporary_settings(updates={PREFECT_API_URL: url}):
            for batch in range(3):  # batches 0-2 at the scanner's usual noise: the folder's history
                if batch:
                    arrive(scans, batch, 0.15)
                earlier = clean_folder(**deployment["parameters"], return_state=True)
                assert earlier.is_completed() and "drift" not in earlier.message, earlier.message
        arrive(scans, 3, 0.3, bad=True)  # the scanner's noise doubles, and one file is broken
        last = run_deployment_to_the_end(url, "clean-folder/ui-folder")
        # Prefect's own state: Completed, tagged, and its message says why.
        assert last["state_type"] == "COMPLETED", last["state"]
        assert {"has-errors", "drift"} <= set(last["tags"]), last["tags"]
        assert "drift: median input noise" in last["state"]["message"], last["state"]
        runs = {run["name"]: run for run in api(url, "/flow_runs/filter", {})}
        flows = {flow["id"]: flow["name"] for flow in api(url, "/flows/filter", {})}
        by_flow = {flows[run["flow_id"]]: run for run in runs.values() if flows[run["flow_id"]] != "clean-folder"}
        by_flow["clean-folder"] = last
        expected = {
            "mnist-denoise": (["ingest", "synthesize-noise", "train-or-load", "denoise", "write-report"],
                              ["denoise-summary", "denoise-report", "training-progress"]),
            "clean-folder": (["resolve-model", "clean-shard-0", "write-report", "record-history"],
                             ["clean-summary", "clean-errors", "clean-worst", "clean-report", "trend-cleaned",
                              "fleet"]),
        }
        last_artifacts = {a["key"]: a for a in api(url, "/artifacts/filter",
                                                   {"artifacts": {"flow_run_id": {"any_": [last["id"]]}}})}
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
            # The drifted run with a broken file: its tags on its own page, the broken file in its errors.
            where = f"/runs/flow-run/{last['id']}"
            pages.open(where, last["name"])
            for tag in ("has-errors", "drift"):
                pages.expect_text(tag, where)
            pages.open(f"/artifacts/artifact/{last_artifacts['clean-errors']['id']}", "b3-broken.png")
            # The fleet view: the folder needs a look, and the table says why.
            fleet = last_artifacts["fleet"]
            rows = json.loads(fleet["data"])
            assert [r["folder"] for r in rows] == ["clean-folder/ui-folder"] and rows[0]["failed"] == 1, rows
            assert rows[0]["needs a look"].startswith("drift: median input noise"), rows
            pages.open(f"/artifacts/artifact/{fleet['id']}", "clean-folder/ui-folder")
            pages.expect_text("drift: median input noise", "the fleet artifact")
            # The deployment's Runs tab lists its run with errors and drift (it used to show none).
            where = f"/deployments/deployment/{deployment['id']}"
            pages.open(where, "ui-folder")
            pages.tab("Runs", where)
            pages.expect_text("1 Flow run", f"{where} (runs)")
            pages.expect_text(last["name"], f"{where} (runs)")
            # And the runs list shows the tags an operator filters by.
            pages.open("/runs", last["name"])
            pages.expect_text("has-errors", "/runs")
            browser.close()
    finally:
        denoiser("server", "stop", "--state-dir", str(state))
