"""``denoiser server start|stop|status``: the local Prefect server (:mod:`flows.server`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.cli.options import HelpFormatter, non_negative_int, positive_int
from flows.workers import POOL


def add_parser(commands: argparse._SubParsersAction) -> None:
    command = commands.add_parser(
        "server", help="start, stop or check the local Prefect server (UI, schedules, workers)",
        description="Run a Prefect server in the background for the UI, scheduled runs and workers. "
                    "Its database is SQLite by default, a private PostgreSQL cluster with --postgres "
                    "(for several workers or schedules at once), or the PostgreSQL at --database-url.",
        formatter_class=HelpFormatter)
    command.add_argument("action", choices=("start", "stop", "status"))
    command.add_argument("--postgres", action="store_true",
                         help="keep runs in a private PostgreSQL cluster under the state folder "
                              "(needs PostgreSQL installed: apt-get install postgresql)")
    command.add_argument("--database-url", metavar="URL", default=None,
                         help="an existing PostgreSQL database instead, as "
                              "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE")
    command.add_argument("--host", default="127.0.0.1",
                         help="address the server listens on (0.0.0.0 to open it to the network)")
    command.add_argument("--port", type=positive_int, default=4200, help="the server's port")
    command.add_argument("--auth", action="store_true",
                         help="the API and the UI want a password (Prefect's basic auth): "
                              "$PREFECT_SERVER_API_AUTH_STRING (USER:PASSWORD), else one generated and kept "
                              "in STATE/api-auth (mode 0600); needed with a --host other than 127.0.0.1")
    command.add_argument("--workers", type=non_negative_int, default=0, metavar="N",
                         help="also start N workers on the process work pool (made if missing) that run "
                              "the deployments' scheduled runs (denoiser deploy); stop stops them too")
    command.add_argument("--pool", default=POOL, metavar="NAME", help="the work pool the workers serve")
    command.add_argument("--state-dir", metavar="DIR", default=None,
                         help="where the server keeps its database, logs and record (default: "
                              "$DENOISER_STATE_DIR, else $XDG_STATE_HOME/denoiser/server, i.e. "
                              "~/.local/state/denoiser/server: the same from every directory)")


def run(args: argparse.Namespace) -> int:
    from flows.server import Server, default_state

    server = Server(Path(args.state_dir).resolve() if args.state_dir else default_state())
    if args.action == "start":
        if args.postgres and args.database_url:
            raise ValueError("--postgres and --database-url are alternatives; give one")
        if args.database_url and not args.database_url.startswith("postgresql+asyncpg://"):
            raise ValueError("--database-url must start with postgresql+asyncpg://")
        found = server.start(host=args.host, port=args.port, postgres=args.postgres,
                             database_url=args.database_url, workers=args.workers, pool=args.pool,
                             auth=args.auth)
        verb = "already running" if found["already"] else "ready"
        workers = (f"; {len(found['workers'])} workers on the work pool {found['pool']!r}"
                   + (f" ({found['restarted']} of them started again: they had stopped)" if found.get("restarted")
                      else "") if found.get("workers") else "")
        print(f"Prefect server {verb} at {found['url']} (database: {found['database']}; UI: "
              f"{found['url'].removesuffix('/api')}){workers}\nexport PREFECT_API_URL={found['url']}")
        if found.get("auth"):
            print(f"export PREFECT_API_AUTH_STRING=\"$(cat {server.auth_file})\"  # its USER:PASSWORD; "
                  "the UI asks for the same")
        return 0
    if args.action == "stop":
        print("server stopped" if server.stop() else "no server was running")
        return 0
    found = server.status()
    if found is None:
        print("no server running")
        return 3
    down = len(found.get("workers", [])) - found["workers_alive"]
    workers = (f", {found['workers_alive']} of {len(found['workers'])} workers running on "
               f"{found['pool']!r}" if found.get("workers") else "")
    print(f"running at {found['url']}, pid {found['pid']}, database {found['database']}, "
          + ("password required, " if found.get("auth") else "")
          + f"{'healthy' if found['healthy'] else 'NOT answering its health check'}{workers}"
          + (f"; {down} worker{'s' if down > 1 else ''} DOWN: `denoiser server start --workers "
             f"{len(found['workers'])}` starts {'them' if down > 1 else 'it'} again" if down else ""))
    return 0 if found["healthy"] and not down else 1
