"""``denoiser status``: every deployed folder on one screen (:mod:`flows.fleet`)."""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timezone

from flows.cli.options import HelpFormatter


def add_parser(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "status", help="every deployed folder: last and next run, backlog, files, drift, workers",
        description="The fleet view: for each folder deployed on the Prefect server (denoiser deploy), its last "
                    "run and how long ago, the next one, runs due and not started, the last run's files "
                    "(ok, failed, flagged) and the last 7 days', drift, the model and the workers online. "
                    "Exit status 0 when no folder needs a look, 1 when one does (a failed or late run, "
                    "drift, no worker online), 3 when no server runs.",
        formatter_class=HelpFormatter)
    command.add_argument("--json", action="store_true", help="print the view as JSON")


def _api() -> tuple[str | None, str | None]:
    """(URL, "user:password" or None): PREFECT_API_URL and PREFECT_API_AUTH_STRING, else the
    local server `denoiser server start` runs, with its password if it wants one."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"], os.environ.get("PREFECT_API_AUTH_STRING")
    from flows.server import Server, default_state

    server = Server(default_state())
    found = server.status()
    if not (found and found.get("healthy")):
        return None, None
    return found["url"], os.environ.get("PREFECT_API_AUTH_STRING") or server.auth_string(found)


def run(args: argparse.Namespace) -> int:
    url, auth = _api()
    if url is None:
        print("no server running: start one with `denoiser server start`, or set PREFECT_API_URL")
        return 3
    from prefect.settings import temporary_settings

    from flows.cli.main import check_api
    from flows.fleet import ago, fleet
    from flows.server import api_settings

    check_api(url, auth=auth)
    now = datetime.now(timezone.utc)
    with temporary_settings(updates=api_settings(url, auth)):
        folders = fleet(now)
    if args.json:
        print(json.dumps(folders, default=str, indent=1))
        return 1 if any(f["alerts"] for f in folders) else 0
    if not folders:
        print(f"no folder is deployed on {url}: `denoiser deploy IN_DIR OUT_DIR --interval S` deploys one")
        return 0
    for f in folders:
        last, activity = f["last_run"], f["activity"] or {}
        ran = ("no run yet" if last is None else
               f"last run {last['state']} {ago(last['started'], now)}" + (f" [{', '.join(last['tags'])}]"
                                                                          if last["tags"] else ""))
        files = activity.get("last")
        week = activity.get("week") or {}
        print(f"{f['name']}: {f['in_dir']} -> {f['out_dir']}, {f['schedule']}" + (" (PAUSED)" if f["paused"] else ""))
        print(f"  {ran}; next {ago(f['next_run'], now) if f['next_run'] else 'none scheduled'}; "
              f"backlog {f['backlog']}; {f['workers_online']} worker(s) online on {f['pool']!r}")
        print("  " + (f"last files: {files['ok']} ok, {files['error']} failed, {files['flagged']} flagged "
                      f"({ago(files['time'], now)}, model {files['model_id']})" if files
                      else activity.get("problem") or "no files cleaned yet")
              + f"; 7 days: {week.get('runs', 0)} runs, {week.get('ok', 0)} ok, {week.get('error', 0)} failed, "
                f"{week.get('flagged', 0)} flagged"
              + (f"; last drift {ago(activity['drift']['time'], now)}" if activity.get("drift") else ""))
        for alert in f["alerts"]:
            print(f"  NEEDS A LOOK: {alert}")
    needing = sum(bool(f["alerts"]) for f in folders)
    print(f"{len(folders)} folder(s), {needing} needing a look")
    return 1 if needing else 0
