"""No orphans: the helper processes a command starts die with it, even after ``kill -9``.

Prefect 3.8's ephemeral mode starts its temporary server (``python -m uvicorn ...
prefect.server.api.server:create_app``) with a plain ``subprocess.Popen`` from whichever thread
first needs the API (the flow engine, the events worker, the log worker), and stops it only
from an ``atexit`` hook, which a SIGKILL skips: the server is reparented to init and runs on.
Prefect has no setting for this, and ``PR_SET_PDEATHSIG`` would fire when the *thread* that
started the server ends, not the process.

So every ``regrow`` command holds a lifeline (`hold`): a small watchdog process (``python -m
regrow.runtime.lifeline``, standard library only) reads a pipe whose write end only the command holds,
and the command marks its environment with a token (``REGROW_LIFELINE``) that its
descendants inherit (Prefect hands ``os.environ`` to its server, runners to their flow runs).
When the command ends, however it ends, the pipe closes; the watchdog sends SIGTERM to every
process still carrying the token, SIGKILL to those alive ``GRACE`` seconds later, and exits.
Linux only (it reads ``/proc``); elsewhere `hold` does nothing.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid

ENV = "REGROW_LIFELINE"
GRACE = 5.0
_held: int | None = None  # the pid that holds a lifeline (a fork must not reuse its pipe)


def hold() -> None:
    """Start this process's watchdog and mark the environment (once per process; Linux only)."""
    global _held
    if _held == os.getpid() or not sys.platform.startswith("linux"):
        return
    token = uuid.uuid4().hex
    read_end, write_end = os.pipe()  # both close-on-exec: no child inherits the write end
    watchdog = subprocess.Popen([sys.executable, "-m", "regrow.runtime.lifeline", token, str(os.getpid())],
                     stdin=read_end, stdout=subprocess.DEVNULL, close_fds=True,
                     start_new_session=True)  # out of the terminal's Ctrl-C group
    os.close(read_end)
    _keep.extend([write_end, watchdog])  # the write end stays open until this process is gone
    outer = os.environ.get(ENV)
    os.environ[ENV] = f"{outer}:{token}" if outer else token  # nested commands: both apply
    _held = os.getpid()


_keep: list = []


def carriers(token: str) -> list[int]:
    """Pids of live processes whose environment carries `token` (this one excluded)."""
    found, mark = [], token.encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read()
        except OSError:  # gone, or not ours
            continue
        if any(v.startswith(ENV.encode() + b"=") and mark in v for v in env.split(b"\0")):
            found.append(int(name))
    return found


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def watch(token: str, parent: int) -> None:
    """Wait until the parent is gone, then end every process carrying `token`."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only the parent's end releases the watchdog
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
        # EOF: every copy of the write end is closed. The parent pid check covers a forked
        # child that kept a copy open after the parent died.
        if (ready and not os.read(sys.stdin.fileno(), 4096)) or os.getppid() != parent:
            break
    pids = carriers(token)
    _signal_all(pids, signal.SIGTERM)
    deadline = time.monotonic() + GRACE
    while pids and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [p for p in pids if os.path.exists(f"/proc/{p}") and _alive(p)]
    _signal_all(pids, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is already dead
    except OSError:
        return False


if __name__ == "__main__":
    watch(sys.argv[1], int(sys.argv[2]))
