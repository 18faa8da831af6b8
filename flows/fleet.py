"""The fleet view: every deployed folder on one screen (``denoiser status``).

For each deployment of the cleaning flow: its folders and schedule, its last run (Prefect's
state, how long ago, its tags), the next one, the backlog (runs due and not started), what
the folder's history says (:func:`denoiser.folders.activity.folder_activity`) and the
workers online on its pool. A folder needs a look (``alerts``) when its last run failed,
a run is *Late* (Prefect's own state for a scheduled run no worker took), an interval
schedule has had no run for 3 intervals, it drifted in its last run with files, no worker
is online on its pool, or a worker of its pool is down while others run.

A worker is down when it missed :data:`HEARTBEAT_MISSES` heartbeats (Prefect's own rule),
whatever the status the server last gave it: a killed worker stays "Online" in the UI until
the server's own check runs. Each run under a deployment reports a worker newly down as the
event ``denoiser.worker.down`` (:func:`report_down_workers`; the automation
``denoiser-worker-down`` sends it on), once per worker and last heartbeat: the ones reported
are kept in the Prefect variable ``denoiser-workers-down``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from denoiser.folders.activity import folder_activity
from flows.workers import FLOW, folder_deployments

LATE_INTERVALS = 3  # an interval schedule with no run for this many intervals is late
HEARTBEAT_MISSES = 3  # a worker that missed this many heartbeats is down (Prefect's own count)
DEFAULT_HEARTBEAT = 30.0  # seconds, where a worker did not say (Prefect's default)
#: A worker silent for longer was retired, not lost: it is left out of the view and the alerts.
FORGOTTEN_AFTER = timedelta(days=1)
DOWN_EVENT = "denoiser.worker.down"
REPORTED = "denoiser-workers-down"  # the Prefect variable of the down workers already reported


def worker_down(worker, now: datetime) -> bool:
    """Whether ``worker`` (a Prefect worker record) missed :data:`HEARTBEAT_MISSES` heartbeats."""
    last = worker.last_heartbeat_time
    if last is None:
        return True
    interval = float(worker.heartbeat_interval_seconds or DEFAULT_HEARTBEAT)
    return now - last > timedelta(seconds=HEARTBEAT_MISSES * interval)


def pool_workers(client, pool: str, now: datetime) -> tuple[int, list[Any]]:
    """How many workers of ``pool`` are online, and the workers down (silent for less than
    :data:`FORGOTTEN_AFTER`)."""
    workers = client.read_workers_for_work_pool(pool)
    down = [w for w in workers if worker_down(w, now)]
    recent = [w for w in down if w.last_heartbeat_time is not None and now - w.last_heartbeat_time < FORGOTTEN_AFTER]
    return len(workers) - len(down), recent


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


def folder_status(client, deployment, workers_online: dict[str, int], now: datetime,
                  workers_down: dict[str, list[Any]] | None = None) -> dict[str, Any]:
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
    elif pool:
        alerts += [f"worker {w.name} of the pool {pool!r} is down (last heard {ago(w.last_heartbeat_time, now)})"
                   for w in (workers_down or {}).get(pool, [])]
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
    return fleet_and_workers(now)[0]


def fleet_and_workers(now: datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, tuple[int, list[Any]]]]:
    """:func:`fleet`, and the workers of the deployments' pools as :func:`pool_workers` gives
    them (by pool), read once for both."""
    from prefect.client.orchestration import get_client

    now = now or datetime.now(timezone.utc)
    with get_client(sync_client=True) as client:
        deployments = folder_deployments(client)
        workers = {pool: pool_workers(client, pool, now)
                   for pool in {d.work_pool_name for d in deployments if d.work_pool_name}}
        online = {pool: count for pool, (count, _) in workers.items()}
        down = {pool: gone for pool, (_, gone) in workers.items()}
        folders = [folder_status(client, d, online, now, down) for d in sorted(deployments, key=lambda d: d.name)]
    return folders, workers


def report_down_workers(workers: dict[str, tuple[int, list[Any]]], now: datetime | None = None) -> list[str]:
    """Emit :data:`DOWN_EVENT` for each worker down in ``workers`` (by pool, as
    :func:`pool_workers` gives them) and not yet reported for its last heartbeat; the workers
    reported now, as ``pool/name``."""
    from prefect.events import emit_event
    from prefect.variables import Variable

    now = now or datetime.now(timezone.utc)
    reported = set(Variable.get(REPORTED, default=[]) or [])
    new = []
    for pool, (online, down) in sorted(workers.items(), key=lambda item: item[0]):
        for worker in down:
            key = f"{pool}/{worker.name}/{worker.last_heartbeat_time.isoformat()}"
            if key in reported:
                continue
            emit_event(event=DOWN_EVENT,
                       resource={"prefect.resource.id": f"denoiser.worker.{pool}.{worker.name}",
                                 "prefect.resource.name": worker.name},
                       related=[{"prefect.resource.id": f"prefect.work-pool.{worker.work_pool_id}",
                                 "prefect.resource.role": "work-pool", "prefect.resource.name": pool}],
                       payload={"pool": pool, "worker": worker.name, "online": online,
                                "last_heartbeat": worker.last_heartbeat_time.isoformat(),
                                "silent_for": ago(worker.last_heartbeat_time, now).removesuffix(" ago")})
            reported.add(key)
            new.append(f"{pool}/{worker.name}")
    if new:
        keep = sorted(k for k in reported if datetime.fromisoformat(k.rsplit("/", 1)[1]) > now - FORGOTTEN_AFTER)
        Variable.set(REPORTED, keep, overwrite=True)
    return new


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
    folders, workers = fleet_and_workers(now)
    report_down_workers(workers, now)
    rows = fleet_rows(folders, now)
    create_table_artifact(key="fleet", table=rows or [{"folder": "(none deployed)"}],
                          description=f"Every deployed folder as of {now:%Y-%m-%d %H:%M} UTC (denoiser status)")
    return len(rows)
