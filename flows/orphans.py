"""No temporary Prefect server outlives the command that started it.

Without ``PREFECT_API_URL`` Prefect starts a temporary API server (a uvicorn subprocess)
and stops it when the process exits normally; a ``kill -9`` gives it no chance, and the
server runs on, orphaned. Prefect offers no hook for that, so the ``denoiser`` command:

- starts a small watchdog (:func:`start_watchdog`, this module run as a script) that
  notes the command's temporary servers while it lives and stops them once it is gone;
- on start, stops orphaned temporary servers of the same ``PREFECT_HOME`` that an earlier
  command left when the watchdog was killed too (:func:`stop_orphans`);
- starts its temporary servers in a session of their own (:func:`shield_temporary_servers`),
  so that Ctrl-C or a supervisor's SIGTERM to the command's process group stops the command,
  which records how its run ended, and not first the server it records that on.

Linux only (it reads ``/proc``); elsewhere both do nothing.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

SERVER_MARK = "prefect.server.api.server:create_app"  # in a temporary server's command line


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def prefect_home_of(pid: int) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"PREFECT_HOME="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return ""


def temporary_servers() -> list[int]:
    """Pids of this user's temporary Prefect servers."""
    if not Path("/proc").is_dir():
        return []
    mine = os.getuid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and SERVER_MARK in _cmdline(int(entry.name)):
            try:
                if entry.stat().st_uid == mine:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def _stop(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL to whichever has not exited after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [pid for pid in pids if SERVER_MARK in _cmdline(pid)]  # not a reused pid
        for pid in alive:
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in alive if SERVER_MARK in _cmdline(pid)]
        if not alive:
            return


def stop_orphans() -> int:
    """Stop temporary servers of this ``PREFECT_HOME`` whose parent is gone (adopted by
    init or a subreaper, which is not a Python process). Returns how many."""
    home = os.environ.get("PREFECT_HOME", "")
    orphans = [pid for pid in temporary_servers()
               if prefect_home_of(pid) == home and "python" not in _cmdline(_parent(pid))]
    _stop(orphans)
    return len(orphans)


SERVER_MODULE = "prefect.server.api.server"  # the module whose subprocess starts the servers


def shield_temporary_servers() -> None:
    """Make Prefect start its temporary servers in a new session, out of reach of signals
    sent to the command's process group.

    Without it, Ctrl-C in a terminal (or ``timeout``, or a supervisor stopping the job) stops
    the server together with the command; the command's flow engine then spends two to three
    minutes retrying the dead API to record the run as crashed, printing tracebacks. With
    it, the run is recorded at once and the command exits; the server is stopped by
    Prefect when the command exits, or by the watchdog when it is killed. Prefect has no
    option for this, so the ``subprocess`` module its server code uses is replaced, for
    that module alone, by one whose ``Popen`` starts a new session.

    The replacement is made when Prefect imports that module, not here: importing it costs
    about 5 s on 2 cores, which a command that stops at a wrong option never needs.
    """
    if SERVER_MODULE in sys.modules:
        _shield(sys.modules[SERVER_MODULE])
    elif not any(isinstance(finder, _ShieldOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ShieldOnImport())


def _shield(server: types.ModuleType) -> None:
    if isinstance(server.subprocess, types.SimpleNamespace):
        return
    shielded = types.SimpleNamespace(**{name: getattr(subprocess, name) for name in dir(subprocess)
                                        if not name.startswith("__")})
    shielded.Popen = functools.partial(subprocess.Popen, start_new_session=True)
    server.subprocess = shielded


class _ShieldOnImport:
    """An import hook: once Prefect's server module is loaded, :func:`_shield` it."""

    def find_spec(self, name, path, target=None):
        if name != SERVER_MODULE:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self or not hasattr(finder, "find_spec") else \
                finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                load = spec.loader.exec_module

                def load_and_shield(module, load=load):
                    load(module)
                    _shield(module)

                spec.loader.exec_module = load_and_shield
                return spec
        return None


_watched = False


def start_watchdog() -> None:
    """Watch this process from a separate session (once per process); stop its temporary
    servers once it dies."""
    global _watched
    if _watched or not Path("/proc").is_dir():
        return
    _watched = True
    subprocess.Popen([sys.executable, "-m", "flows.orphans", str(os.getpid())], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     cwd=Path(__file__).resolve().parent.parent)


def watch(parent: int, every: float = 0.5) -> None:
    """Until ``parent`` exits: note its temporary servers. Then stop them."""
    servers: set[int] = set()
    while Path(f"/proc/{parent}").exists() and _cmdline(parent):
        servers.update(pid for pid in temporary_servers() if _parent(pid) == parent)
        time.sleep(every)
    _stop(sorted(servers))


if __name__ == "__main__":
    watch(int(sys.argv[1]))
