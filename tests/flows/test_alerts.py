"""The alert automations, created on a real (test) Prefect API, and their notifications
delivered to a local webhook when a folder drifts and when a run fails."""

import time

import numpy as np
import pytest
from PIL import Image
from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client

from flows import alerts
from tests.helpers import draw_digits, webhook_server


def test_the_alerts_install_against_a_notification_block_and_replace_themselves():
    block = CustomWebhookNotificationBlock(name="ops-hook", url="http://127.0.0.1:9/hook",
                                           json_data={"text": "{{subject}}: {{body}}"})
    block_id = block.save("ops", overwrite=True)
    created = alerts.install("custom-webhook/ops")
    assert sorted(a.name for a in created) == ["denoiser-drift", "denoiser-failed-run", "denoiser-late-run",
                                               "denoiser-no-workers", "denoiser-worker-down"]
    drift = next(a for a in created if a.name == "denoiser-drift")
    assert drift.trigger.expect == {"denoiser.folder.drift"}
    assert [str(a.block_document_id) for a in drift.actions] == [str(block_id)]
    failed = next(a for a in created if a.name == "denoiser-failed-run")
    assert failed.trigger.expect == {"prefect.flow-run.Failed"}

    again = alerts.install("custom-webhook/ops")  # installing again replaces, never duplicates
    for name in ("denoiser-drift", "denoiser-failed-run", "denoiser-late-run", "denoiser-no-workers",
                 "denoiser-worker-down"):
        found = Automation.read(name=name)
        found = found if isinstance(found, list) else [found]
        assert [a.id for a in found] == [next(a.id for a in again if a.name == name)]


def test_a_missing_block_is_a_plain_error():
    with pytest.raises(alerts.AlertsError, match="no block slack-webhook/nobody"):
        alerts.install("slack-webhook/nobody")
    with pytest.raises(alerts.AlertsError, match="must be BLOCK_TYPE/BLOCK_NAME"):
        alerts.install("ops")


@pytest.fixture
def webhook():
    """A local HTTP endpoint that keeps what is posted to it, and a notification block for it."""
    with webhook_server() as (url, posted):
        CustomWebhookNotificationBlock(name="ops-hook", url=url,
                                       json_data={"text": "{{subject}}\n{{body}}"}).save("delivered", overwrite=True)
        yield posted


def wait_for(posted, text, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = [p["text"] for p in posted if text in p["text"]]
        if found:
            return found[0]
        time.sleep(0.5)
    raise AssertionError(f"no notification with {text!r} in {seconds} s; got {posted}")


def test_a_drifting_folder_and_a_failed_run_reach_the_notification_block(webhook, tmp_path, store):
    from denoiser.folders.settings import CleanOptions, CleanRun
    from flows.clean import clean_folder

    alerts.install("custom-webhook/delivered")

    def scans(noise):
        rng = np.random.default_rng(int(noise * 100))
        for i, digit in enumerate(draw_digits(24, seed=5)[0]):
            noisy = np.clip(digit / 255 + noise * rng.standard_normal(digit.shape), 0, 1)
            (tmp_path / "in").mkdir(exist_ok=True)
            Image.fromarray(np.round(noisy * 255).astype(np.uint8)).save(tmp_path / "in" / f"{i:02d}.png")

    params = dict(in_dir=str(tmp_path / "in"), out_dir=str(tmp_path / "out"),
                  options=CleanOptions(device="cpu", overwrite=True), retry_delay_seconds=0)
    for noise in (0.15, 0.15, 0.15, 0.3):  # the scanner's noise doubles on the fourth run
        scans(noise)
        state = clean_folder(**params, run=CleanRun(models_dir=str(store)), return_state=True)
    assert state.is_completed() and "drift: median input noise" in state.message
    with get_client(sync_client=True) as client:  # the UI's run list can filter drifted runs by tag
        assert "drift" in client.read_flow_run(state.state_details.flow_run_id).tags
    drift = wait_for(webhook, "Scans drifted")
    assert str(tmp_path / "out") in drift and "median input noise" in drift
    assert f"of {tmp_path / 'in'} into" in drift and "flow run " in drift  # where, and which run

    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    state = clean_folder(**params, run=CleanRun(models_dir=str(store), strict=True), return_state=True)
    assert state.is_failed()
    failed = wait_for(webhook, "Failed: clean-folder")
    assert "broken.png" in failed  # the run's state message names the file
    assert f"Folder: {tmp_path / 'in'} -> {tmp_path / 'out'}" in failed  # and the folder



def test_a_worker_that_stops_its_heartbeats_is_down_once_in_the_fleet_and_in_a_notification(webhook):
    # Two workers of a pool say they beat every second (as Prefect workers do, through the
    # same API); one goes on, one goes silent, as a killed worker does.
    from datetime import datetime, timezone

    from prefect.client.schemas.actions import WorkPoolCreate

    from flows import fleet

    alerts.install("custom-webhook/delivered")
    pool = "fleet-down-test"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool, type="process"), overwrite=True)
        for name in ("worker-alive", "worker-killed"):
            client.send_worker_heartbeat(pool, name, heartbeat_interval_seconds=1)
        deadline = time.time() + 4
        while time.time() < deadline:  # the killed one's 3 missed beats
            client.send_worker_heartbeat(pool, "worker-alive", heartbeat_interval_seconds=1)
            time.sleep(0.5)
        online, down = fleet.pool_workers(client, pool, datetime.now(timezone.utc))
    assert online == 1 and [w.name for w in down] == ["worker-killed"]
    assert fleet.report_down_workers({pool: (online, down)}) == [f"{pool}/worker-killed"]
    # Once per worker and last heartbeat, not once a run.
    assert fleet.report_down_workers({pool: (online, down)}) == []
    message = wait_for(webhook, "Worker down: worker-killed")
    assert f"on work pool {pool}" in message and "1 worker(s) of the pool still run" in message
