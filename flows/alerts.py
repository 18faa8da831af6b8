"""Alerts: the automations in ``automations/alerts.yaml``, pointed at a notification block
and created on the Prefect server in ``$PREFECT_API_URL``."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import httpx
import yaml
from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

DEFINITIONS = Path(__file__).resolve().parents[1] / "automations" / "alerts.yaml"
PLACEHOLDER = "BLOCK_ID"


class AlertsError(ValueError):
    """A block that does not exist, or a definition the server refuses."""


def block_id(block: str) -> UUID:
    """The id of the notification block named ``TYPE/NAME`` (e.g. ``slack-webhook/ops``)."""
    slug, _, name = block.partition("/")
    if not slug or not name:
        raise AlertsError(f"--block {block!r} must be BLOCK_TYPE/BLOCK_NAME, e.g. slack-webhook/ops")
    with get_client(sync_client=True) as client:
        try:
            found = client.read_block_document_by_name(name=name, block_type_slug=slug)
        except ObjectNotFound:
            raise AlertsError(f"no block {block} on the Prefect server (make it under Blocks in the UI, "
                              f"or with `prefect block create {slug}`)") from None
        except httpx.HTTPError as error:
            raise AlertsError(f"cannot reach the Prefect server at {client.api_url}: {error}") from None
    return found.id


def definitions(block: UUID, path: Path = DEFINITIONS) -> list[dict]:
    """The automations of ``path`` with their notification block set to ``block``."""
    automations = yaml.safe_load(path.read_text())["automations"]
    for automation in automations:
        for action in automation["actions"]:
            if action.get("block_document_id") == PLACEHOLDER:
                action["block_document_id"] = str(block)
    return automations


def install(block: str, path: Path = DEFINITIONS) -> list[Automation]:
    """Create the alerts (replacing automations of the same names); the created automations."""
    target = block_id(block)
    created = []
    for spec in definitions(target, path):
        for old in _named(spec["name"]):
            old.delete()
        created.append(Automation.model_validate(spec).create())
    return created


def _named(name: str) -> list[Automation]:
    try:
        found = Automation.read(name=name)
    except ValueError:  # none of that name
        return []
    return found if isinstance(found, list) else [found]
