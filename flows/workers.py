"""Workers and deployments: folders cleaned on a schedule by worker processes.

A *process* work pool (``denoiser`` by default) holds the scheduled runs; each worker
(``prefect worker start --pool denoiser``) takes runs from it and runs each one as a child
process. A deployment per folder (:func:`deploy_folder`) puts that folder's runs on the
pool with its schedule; several folders and several workers share one server, which is
where PostgreSQL pays (SQLite serialises every write).

    denoiser server start --postgres --workers 2
    denoiser deploy scans/a cleaned/a --interval 600
    denoiser deploy scans/b cleaned/b --cron "0 * * * *"
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

POOL = "denoiser"
FLOW = "clean-folder"  # the cleaning flow's name: every folder's deployment is one of it
#: Where the flow's code is: the worker runs ``flows/clean.py:clean_folder`` from here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def ensure_pool(name: str = POOL) -> bool:
    """Create the process work pool ``name`` on the server in ``PREFECT_API_URL`` unless it
    exists; whether it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(
                name=name, type="process", base_job_template=ProcessWorker.get_default_base_job_template(),
                description="Folders of scans cleaned by denoiser's deployments"))
            return True
    if pool.type != "process":
        raise ValueError(f"work pool {name!r} exists with type {pool.type!r}; the denoiser's deployments "
                         "need a process pool: choose another name")
    return False


def start_workers(count: int, *, state: Path, api_url: str, pool: str = POOL,
                  numbers: list[int] | None = None, auth: str | None = None) -> list[int]:
    """Start ``count`` workers on ``pool`` in the background (each in its own session, its log
    in ``state/worker-N.log``), numbered 1 to ``count`` or ``numbers``; their process ids.
    ``auth``: the server's "user:password" (the workers' runs inherit it too)."""
    env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_HOME": str((state / "prefect").resolve())}
    env.pop("PREFECT_SERVER_API_AUTH_STRING", None)  # the server's setting, not a client's
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    pids = []
    for n in numbers or range(1, count + 1):
        log = open(state / f"worker-{n}.log", "ab")  # noqa: SIM115 - the child keeps it open
        worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                                   "--name", f"{pool}-worker-{n}", "--type", "process"],
                                  env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                  cwd=PROJECT_ROOT)
        log.close()
        pids.append(worker.pid)
    return pids


def deploy_folder(parameters: dict[str, Any], *, name: str, pool: str = POOL, interval: float | None = None,
                  cron: str | None = None, concurrency_limit: int | None = 1, when_busy: str = "skip") -> str:
    """A deployment of the cleaning flow on ``pool`` with ``parameters`` (the folders and the
    options) and a schedule; made again if ``name`` exists. Its id. A run that comes due while
    ``concurrency_limit`` runs are running is cancelled (``when_busy="skip"``: the next run
    cleans whatever arrived meanwhile) or waits its turn (``"queue"``: runs pile up when an
    interval is shorter than a run, and keep running after the schedule is paused)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.flows import Flow

    if when_busy not in ("skip", "queue"):
        raise ValueError(f"when_busy is skip or queue, not {when_busy!r}")
    limit = None if not concurrency_limit else ConcurrencyLimitConfig(
        limit=concurrency_limit, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW if when_busy == "skip"
        else ConcurrencyLimitStrategy.ENQUEUE)

    ensure_pool(pool)
    flow = Flow.from_source(source=str(PROJECT_ROOT), entrypoint="flows/clean.py:clean_folder")
    with contextlib.redirect_stdout(io.StringIO()):  # Prefect's table and its advice to use .serve
        deployment_id = flow.deploy(
            name=name, work_pool_name=pool, parameters=parameters, interval=interval, cron=cron,
            concurrency_limit=limit, print_next_steps=False, ignore_warnings=True,
            description=f"Clean {parameters['in_dir']} into {parameters['out_dir']}")
    return str(deployment_id)


def folder_deployments(client) -> list:
    """Every deployment of the cleaning flow on the server ``client`` talks to: the folders."""
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    return client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW])))


def folder_clash(parameters: dict[str, Any], name: str) -> str | None:
    """Why deploying ``parameters`` under ``name`` would clash with another folder's deployment
    (the same input folder cleaned twice, or two deployments writing one output folder), in
    one line; None where it does not. Deploying under the same name replaces."""
    from prefect.client.orchestration import get_client

    mine = {key: os.path.realpath(parameters[key]) for key in ("in_dir", "out_dir")}
    with get_client(sync_client=True) as client:
        deployments = folder_deployments(client)
    for other in deployments:
        theirs = {key: os.path.realpath(value) for key in ("in_dir", "out_dir")
                  if isinstance(value := (other.parameters or {}).get(key), str)}
        if other.name == name or not theirs:
            continue
        for key, what in (("in_dir", "the input folder"), ("out_dir", "the output folder")):
            if theirs.get(key) == mine[key]:
                return (f"{what} {parameters[key]} is already deployed as {FLOW}/{other.name} "
                        f"({theirs.get('in_dir')} -> {theirs.get('out_dir')}): deploy under --name {other.name} "
                        f"to replace it, or remove it first (prefect deployment delete {FLOW}/{other.name})")
    return None
