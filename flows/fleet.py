"""The fleet view: every deployed folder on one screen (``denoiser status``).

For each deployment of the cleaning flow: its folders and schedule, its last run (Prefect's
state, how long ago, its tags), the next one, the backlog (runs due and not started), what
the folder's history says (:func:`denoiser.folders.activity.folder_activity`) and the
workers online on its pool. A folder needs a look (``alerts``) when its last run failed,
a run is *Late* (Prefect's own state for a scheduled run no worker took), an interval
schedule has had no run for 3 intervals, it drifted in its last run with files, or no
worker is online on its pool.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from denoiser.folders.activity import folder_activity
from flows.workers import FLOW, folder_deployments

LATE_INTERVALS = 3  # an interval schedule with no run for this many intervals is late


def _schedule(deployment) -> tuple[str, timedelta | None]:
    """('every 600 s' | 'cron 0 * * * *' | 'no schedule', the interval or None)."""
    for item in deployment.schedules or []:
        schedule = item.schedule
        interval = getattr(schedule, "interval", None)
        if interval is not None:
            return f"every {int(interval.total_seconds())} s", interval
        if getattr(schedule, "cron", None):
            return f"cron {schedule.cron}", None
    return "no schedule", None


def folder_status(client, deployment, workers_online: dict[str, int], now: datetime) -> dict[str, Any]:
    """One deployment's line of the fleet view (see the module's docstring)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                                 sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=200)
    started = [r for r in runs if r.start_time is not None]
    last = max(started, key=lambda r: r.start_time) if started else None
    upcoming = [r for r in runs if r.state_type is not None and r.state_type.value == "SCHEDULED"
                and r.expected_start_time and r.expected_start_time > now]
    due = [r for r in runs if r.state is not None and (r.state.name == "Late" or (
        r.state_type.value in ("SCHEDULED", "PENDING") and r.expected_start_time and r.expected_start_time <= now))]
    schedule, interval = _schedule(deployment)
    # Paused: the deployment, or every schedule of it (`prefect deployment schedule pause`).
    paused = bool(deployment.paused) or bool(deployment.schedules) and not any(
        item.active for item in deployment.schedules)
    parameters = deployment.parameters or {}
    out_dir = parameters.get("out_dir")
    activity = folder_activity(out_dir, now) if out_dir else None
    pool = deployment.work_pool_name
    alerts = []
    if last is not None and last.state is not None and last.state.type.value in ("FAILED", "CRASHED"):
        alerts.append(f"last run {last.state.name.lower()}")
    if any(r.state is not None and r.state.name == "Late" for r in runs):
        alerts.append("late: a scheduled run was not taken by a worker")
    elif interval is not None and not paused:
        since = last.start_time if last is not None else deployment.created
        if since is not None and now - since > LATE_INTERVALS * interval:
            alerts.append(f"late: no run for {int((now - since).total_seconds())} s ({LATE_INTERVALS} intervals)")
    if activity and activity["last"] and activity["last"]["drift"]:
        alerts.append("drift: " + activity["last"]["drift"])
    if pool and not workers_online.get(pool):
        alerts.append(f"no worker online on the pool {pool!r}")
    return {"name": f"{FLOW}/{deployment.name}", "in_dir": parameters.get("in_dir"), "out_dir": out_dir,
            "schedule": schedule, "paused": paused, "pool": pool,
            "workers_online": workers_online.get(pool, 0) if pool else 0,
            "last_run": None if last is None else {
                "name": last.name, "state": last.state.name if last.state else None,
                "started": last.start_time, "tags": sorted(set(last.tags or []) & {"has-errors", "drift"}),
                "message": (last.state.message or "") if last.state else ""},
            "next_run": min((r.expected_start_time for r in upcoming), default=None),
            "backlog": len(due), "activity": activity, "alerts": alerts}


def fleet(now: datetime | None = None) -> list[dict[str, Any]]:
    """The fleet view of every deployment of the cleaning flow on the server in
    ``PREFECT_API_URL``, by name."""
    from prefect.client.orchestration import get_client

    now = now or datetime.now(timezone.utc)
    with get_client(sync_client=True) as client:
        deployments = folder_deployments(client)
        online: dict[str, int] = {}
        for pool in {d.work_pool_name for d in deployments if d.work_pool_name}:
            workers = client.read_workers_for_work_pool(pool)
            online[pool] = sum(1 for w in workers if str(getattr(w.status, "value", w.status)).upper() == "ONLINE")
        return [folder_status(client, d, online, now) for d in sorted(deployments, key=lambda d: d.name)]


def ago(when: datetime | None, now: datetime) -> str:
    """``when`` as people say it: '12 s ago', '5 min ago', 'in 3 h', 'never'."""
    if when is None:
        return "never"
    seconds = (now - when).total_seconds()
    size = abs(seconds)
    text = (f"{size:.0f} s" if size < 120 else f"{size / 60:.0f} min" if size < 7200
            else f"{size / 3600:.0f} h" if size < 172800 else f"{size / 86400:.0f} days")
    return f"in {text}" if seconds < 0 else f"{text} ago"


def fleet_rows(folders: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """The fleet view as table rows: what needs a look first, then the counts."""
    rows = []
    for f in folders:
        activity, last = f["activity"] or {}, f["last_run"]
        files, week = activity.get("last") or {}, activity.get("week") or {}
        rows.append({"folder": f["name"], "needs a look": "; ".join(f["alerts"]) or None,
                     "last run": None if last is None else f"{last['state']} {ago(last['started'], now)}",
                     "next run": None if f["next_run"] is None else ago(f["next_run"], now),
                     "backlog": f["backlog"], "ok": files.get("ok"), "failed": files.get("error"),
                     "flagged": files.get("flagged"), "7 days ok": week.get("ok"), "7 days failed": week.get("error"),
                     "model": files.get("model_id"), "paused": f["paused"], "workers online": f["workers_online"],
                     "in": f["in_dir"], "out": f["out_dir"]})
    return sorted(rows, key=lambda r: (r["needs a look"] is None, r["folder"]))


def publish_fleet() -> int:
    """The fleet view as the table artifact ``fleet`` (each run adds a version; the Artifacts
    page shows the latest), from inside a run; the folders shown."""
    from prefect.artifacts import create_table_artifact

    now = datetime.now(timezone.utc)
    rows = fleet_rows(fleet(now), now)
    create_table_artifact(key="fleet", table=rows or [{"folder": "(none deployed)"}],
                          description=f"Every deployed folder as of {now:%Y-%m-%d %H:%M} UTC (denoiser status)")
    return len(rows)
