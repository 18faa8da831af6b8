"""The alert automations, created on a real (test) Prefect API."""

import pytest
from prefect.automations import Automation
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from flows import alerts


def test_the_alerts_install_against_a_notification_block_and_replace_themselves():
    block = CustomWebhookNotificationBlock(name="ops-hook", url="http://127.0.0.1:9/hook",
                                           json_data={"text": "{{subject}}: {{body}}"})
    block_id = block.save("ops", overwrite=True)
    created = alerts.install("custom-webhook/ops")
    assert sorted(a.name for a in created) == ["denoiser-drift", "denoiser-failed-run"]
    drift = next(a for a in created if a.name == "denoiser-drift")
    assert drift.trigger.expect == {"denoiser.folder.drift"}
    assert [str(a.block_document_id) for a in drift.actions] == [str(block_id)]
    failed = next(a for a in created if a.name == "denoiser-failed-run")
    assert failed.trigger.expect == {"prefect.flow-run.Failed"}

    again = alerts.install("custom-webhook/ops")  # installing again replaces, never duplicates
    for name in ("denoiser-drift", "denoiser-failed-run"):
        found = Automation.read(name=name)
        found = found if isinstance(found, list) else [found]
        assert [a.id for a in found] == [next(a.id for a in again if a.name == name)]


def test_a_missing_block_is_a_plain_error():
    with pytest.raises(alerts.AlertsError, match="no block slack-webhook/nobody"):
        alerts.install("slack-webhook/nobody")
    with pytest.raises(alerts.AlertsError, match="must be BLOCK_TYPE/BLOCK_NAME"):
        alerts.install("ops")
