"""Who holds a lease, and whether that process still lives.

A lease row names its holder as ``host:pid`` (plus a tag for locks), followed by a proof of
where that pid lives: `` [<boot id>.<pid namespace>.<start time>]``. A process that shares
the boot id and the pid namespace -- the same kernel and the same view of pids, so the same
machine or container -- can tell at once whether the holder is gone: its pid no longer
exists, is a zombie, or now belongs to a process started at another time (a reused pid).
Anywhere else the answer is "unknown", and only the lease's expiry tells (see
`tasks.policy.lease`). Linux only (``/proc``); elsewhere no proof is written.
"""

from __future__ import annotations

import functools
import os
import socket


def _start_ticks(pid: int) -> str | None:
    """A process's start time (clock ticks since boot), or None when there is no such live
    process (gone, or a zombie waiting for its parent)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] in ("Z", "X", "x"):
        return None
    return fields[19] if len(fields) > 19 else None


@functools.cache
def _machine() -> str | None:
    """``<boot id>.<pid namespace inode>`` of this process, or None off Linux."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip().replace("-", "")[:12]
        namespace = os.readlink("/proc/self/ns/pid").rpartition("[")[2].rstrip("]")
    except OSError:
        return None
    return f"{boot}.{namespace}" if boot and namespace else None


def this_holder(tag: str | None = None) -> str:
    """This process as a lease holder: ``host:pid[:tag] [<proof>]`` (at most 255 characters)."""
    pid = os.getpid()
    name = f"{socket.gethostname()[:160]}:{pid}" + (f":{tag}" if tag else "")
    machine, started = _machine(), _start_ticks(pid)
    return name + (f" [{machine}.{started}]" if machine and started else "")


def shown(holder: str) -> str:
    """The holder without its proof, for messages: ``host:pid``."""
    return holder.split(" [", 1)[0]


def holder_gone(holder: str) -> bool:
    """True when `holder`'s process is known to be gone (checked on this machine); False when
    it lives, or when this process cannot tell (another machine or container, no proof)."""
    proof = holder.rpartition(" [")[2].rstrip("]") if holder.endswith("]") else ""
    machine, _, started = proof.rpartition(".")
    if not machine or machine != _machine():
        return False
    try:
        pid = int(shown(holder).split(":")[1])
    except (IndexError, ValueError):
        return False
    return _start_ticks(pid) != started
