"""Monitoring across runs: each cleaning run's row in the folder's history, the trend
artifact, and the drift event an automation turns into an alert (``automations/``)."""

from pathlib import Path

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from denoiser.folders import history, trend
from denoiser.out_tree import OutTree
from flows.logs import library_logs
from flows.policy import TASK_DEFAULTS

DRIFT_EVENT = "denoiser.folder.drift"
TREND_RUNS = 30  # runs the trend artifact shows


def folder_resource(out_dir: str) -> dict[str, str]:
    """The Prefect resource an OUT_DIR's events are about."""
    folder = str(Path(out_dir).resolve())
    return {"prefect.resource.id": f"denoiser.folder.{folder}", "prefect.resource.name": folder}


def where() -> dict[str, str | None]:
    """What an alert needs to say where: the flow run's name and UI address, its deployment,
    and the folder it cleans (None where the run has none: a run started from the command line
    has no deployment; the UI address needs PREFECT_UI_URL or a local server)."""
    from prefect.runtime import deployment, flow_run

    parameters = flow_run.parameters or {}
    return {"flow_run": flow_run.name, "url": flow_run.ui_url, "deployment": deployment.name,
            "in_dir": parameters.get("in_dir"), "out_dir": parameters.get("out_dir")}


def run_resources() -> list[dict[str, str]]:
    """The flow run (and its deployment) as related resources of an event."""
    from prefect.runtime import deployment, flow_run

    related = []
    if flow_run.id:
        related.append({"prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
                        "prefect.resource.role": "flow-run", "prefect.resource.name": flow_run.name or ""})
    if deployment.id:
        related.append({"prefect.resource.id": f"prefect.deployment.{deployment.id}",
                        "prefect.resource.role": "deployment", "prefect.resource.name": deployment.name or ""})
    return related


def tag_run(*tags: str) -> None:
    """Add ``tags`` to the current flow run, where the UI's filters and automations see them
    (``has-errors``, ``drift``): the run keeps Prefect's own state names, which the UI's
    lists filter by."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not tags or not flow_run.id:
        return
    try:
        with get_client(sync_client=True) as client:
            found = client.read_flow_run(flow_run.id)
            client.update_flow_run(flow_run.id, tags=sorted(set(found.tags) | set(tags)))
    except Exception as error:  # noqa: BLE001 - a tag is a convenience; the state message says it too
        get_run_logger().warning("could not tag the run %s: %s", ", ".join(tags), str(error).splitlines()[0])


def trend_key(out_dir: str) -> str:
    """The artifact key of a folder's trend: 'trend-' and its name in lower case and dashes
    (Prefect keys allow no other characters)."""
    name = "".join(c if c.isascii() and c.isalnum() else "-" for c in Path(out_dir).resolve().name.lower())
    return ("trend-" + "-".join(part for part in name.split("-") if part))[:60].rstrip("-")


@task(name="record-history", task_run_name="record-history", **TASK_DEFAULTS)
@library_logs
def record_history(out_dir: str, row: dict, seconds: float) -> dict:
    """Append this run's row (:func:`denoiser.folders.history.run_row`, timed at ``seconds``) to
    ``OUT_DIR/.denoiser/history.parquet``, publish the folder's trend, and where the run
    drifted from the runs before it: a WARNING and a drift event."""
    logger = get_run_logger()
    row = history.timed(row, seconds)
    run_id, model_id = row["run_id"], row["model_id"]
    with OutTree(out_dir, create=False) as tree:
        runs, reasons = history.append_run(tree, row)
    key = trend_key(out_dir)
    create_markdown_artifact(markdown=trend.trend_markdown(runs, out_dir, TREND_RUNS), key=key,
                             description=f"Trend of {out_dir} over its last runs")
    shown = runs.tail(TREND_RUNS).iloc[::-1]
    create_table_artifact(key=f"{key}-runs", table=[_readable(r) for r in shown.to_dict("records")],
                          description=f"The last runs into {out_dir}, newest first")
    if reasons:
        logger.warning("this run drifted from the previous runs into %s: %s", out_dir, "; ".join(reasons))
        emit_event(event=DRIFT_EVENT, resource=folder_resource(out_dir), related=run_resources(),
                   payload={"run_id": run_id, "reasons": reasons, "model_id": model_id, **where()})
    return {"runs": len(runs), "drift": reasons}


FIRST_COLUMNS = ("time", "drift", "files", "ok", "error", "skipped", "ood")  # on screen without scrolling
HIDDEN_COLUMNS = ("noise_in_quantiles",)  # the drift rule's data, not for reading


def _readable(row: dict) -> dict:
    """A history row for the table: time as text, figures rounded, drift and the counts first."""
    out = {}
    for name in [*FIRST_COLUMNS, *(n for n in row if n not in FIRST_COLUMNS)]:
        if name not in row or name in HIDDEN_COLUMNS:
            continue
        value = row[name]
        if name == "time":
            out[name] = pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S UTC")
        elif isinstance(value, float):
            out[name] = None if value != value else round(value, 4 if "mse" in name or "noise" in name else 2)
        else:
            out[name] = value
    return out
