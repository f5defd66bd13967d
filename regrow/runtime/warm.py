"""Warm commands: while the control plane is up, a ``regrow`` command runs in a fork of a
process that has already imported Prefect, MLflow, scikit-learn, Great Expectations and
Evidently (8-10 s of imports on 2 cores), instead of importing them all again.

The warm process (``python -m regrow.app.warm_main SOCKET``, a part of ``regrow up``) imports the stack,
then listens on a Unix socket under ``REGROW_HOME``. A command that finds the socket
(`forward`) sends its arguments, environment and working directory, and hands over its stdin,
stdout and stderr as file descriptors (``SCM_RIGHTS``). The warm process forks a session
process for it, which forks the command itself: it takes over the descriptors, runs
the command line's ``main`` exactly as the command line would and the session reports its exit code.
Output goes straight to the caller's terminal (colour and TTY detection included). When the
caller goes away (Ctrl-C, ``kill -9``) the session ends the command's process group; the
command holds its own lifeline (`regrow.runtime.lifeline`) for anything it started.

A command runs warm only when it would behave the same: the variables that configure
regrow, Prefect and MLflow (``REGROW_*``, ``PREFECT_*``, ``MLFLOW_*``) equal the warm process's,
and it is neither a server (serve, webhook), a control-plane command nor verbose (``-v``,
which changes Prefect's logging at import). Otherwise, and whenever the socket does not
answer, the command runs in its own process as before. Linux only.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

SOCKET_NAME = "warm.sock"
STATE_NAME = "warm.json"
ENV_PREFIXES = ("REGROW_", "PREFECT_", "MLFLOW_")
LOCAL_ONLY = {"serve", "webhook", "predict-server", "up", "down", "ps", "worker"}
# Variables that mark a process (lifeline and plane tokens) or configure only the plane's
# servers: they do not change what a command does.
PROCESS_ONLY = {"REGROW_LIFELINE", "REGROW_WARM", "REGROW_PLANE",
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}
GRACE = 5.0


def run_dir(home: Path) -> Path:
    """Where the control plane keeps sockets, pid and state files."""
    return home / "run"


def env_key(environ: Mapping[str, str] | None = None) -> str:
    """A digest of the variables that configure regrow, Prefect and MLflow (lifeline tokens
    and the warm process's own marker excluded)."""
    environ = os.environ if environ is None else environ
    items = sorted((k, v) for k, v in environ.items()
                   if k.startswith(ENV_PREFIXES) and k not in PROCESS_ONLY)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def env_digests(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Each variable `env_key` covers -> a digest of its value: enough to name the variable
    a caller's environment differs in, without writing any value (a secret) to the state
    file."""
    environ = os.environ if environ is None else environ
    return {k: hashlib.sha256(v.encode()).hexdigest()[:16] for k, v in environ.items()
            if k.startswith(ENV_PREFIXES) and k not in PROCESS_ONLY}


def differing(theirs: Mapping[str, str], ours: Mapping[str, str]) -> list[str]:
    """The variables set differently (or only on one side), as phrases for a person."""
    out = []
    for name in sorted(set(theirs) | set(ours)):
        if name not in ours:
            out.append(f"{name} is not set here")
        elif name not in theirs:
            out.append(f"{name} is set here only")
        elif theirs[name] != ours[name]:
            out.append(f"{name} differs")
    return out


def _say_cold(state: dict) -> None:
    """One line on stderr: why this command does not run warm, naming the variables."""
    why = differing(state.get("vars") or {}, env_digests())
    print("note: running without the control plane's warm process (8-10 s of imports): "
          + ("; ".join(why[:5]) + (f" (and {len(why) - 5} more)" if len(why) > 5 else "")
             if why else "the environment differs")
          + " compared with `regrow up`'s; export the same values (or restart `regrow up`) "
            "to run warm", file=sys.stderr)


# ----------------------------------------------------------------------------- the caller


def forward(argv: list[str], home: Path) -> int | None:
    """Run the command in the warm process; its exit code, or None to run it here.

    The caller's environment must already carry `configure_process_env`'s defaults.
    """
    if not sys.platform.startswith("linux") or os.environ.get("REGROW_WARM") == "off":
        return None
    state_path, sock_path = run_dir(home) / STATE_NAME, run_dir(home) / SOCKET_NAME
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("env") != env_key():
        _say_cold(state)
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(str(sock_path))
        payload = json.dumps({"argv": argv, "env": dict(os.environ),
                              "cwd": os.getcwd()}).encode()
        socket.send_fds(sock, [struct.pack("!Q", len(payload)) + payload], [0, 1, 2])
    except OSError:
        sock.close()
        return None
    sock.settimeout(None)
    try:
        got = _recv_exact(sock, 4)
    except KeyboardInterrupt:
        sock.close()  # the session sees the caller go and ends the command
        return 130
    finally:
        sock.close()
    if got is None:  # the warm process died under the command
        print("error: the warm command process went away; run the command again (or "
              "`regrow down` / `regrow up`)", file=sys.stderr)
        return 1
    return struct.unpack("!i", got)[0]


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


# ----------------------------------------------------------------------------- the warm process


def serve(sock_path: Path, command: Callable[[list[str]], int], preload: Sequence[str]) -> None:
    """Import the stack, then answer commands until terminated.

    Args:
        sock_path: the Unix socket to listen on.
        command: runs one command line (its arguments) in this process; returns its exit code.
        preload: the modules to import before answering (everything a command may need).
    """
    from regrow.tasks.store.settings import configure_process_env

    configure_process_env(verbose=False)
    os.environ["REGROW_WARM"] = "1"
    t0 = time.perf_counter()
    import importlib

    for name in preload:
        importlib.import_module(name)
    from regrow.tasks.registry.mlflow_registry import warm_up
    from regrow.tasks.store.settings import Settings

    warm_up(Settings.from_env())  # no connection stays open across fork()
    print(f"warm: imported the stack in {time.perf_counter() - t0:.1f} s", flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # sessions are reaped by the kernel
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    if sock_path.exists():
        sock_path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    server.listen(16)
    state = sock_path.parent / STATE_NAME
    tmp = state.with_suffix(".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "socket": str(sock_path), "env": env_key(),
                               "vars": env_digests()}))
    tmp.replace(state)
    print(f"warm: listening on {sock_path}", flush=True)
    while True:
        conn, _ = server.accept()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
            server.close()
            try:
                _session(conn, command)
            finally:
                os._exit(0)
        conn.close()


def _session(conn: socket.socket, command: Callable[[list[str]], int]) -> None:
    """One command: receive it, fork it, wait for it or for the caller to go."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    if len(data) < 8 or len(fds) != 3:
        return
    size = struct.unpack("!Q", data[:8])[0]
    body = data[8:]
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            return
        body += chunk
    request = json.loads(body)
    child = os.fork()
    if child == 0:
        conn.close()
        _command(request, fds, command)
    for fd in fds:
        os.close(fd)
    t0 = time.perf_counter()
    code = _wait(child, conn)
    print(f"warm: pid {child} ran `regrow {' '.join(request['argv'])[:200]}` -> "
          + ("caller went away, ended" if code is None else f"exit {code}")
          + f" in {time.perf_counter() - t0:.2f} s", flush=True)
    if code is not None:
        try:
            conn.sendall(struct.pack("!i", code))
        except OSError:
            pass


def _wait(child: int, conn: socket.socket) -> int | None:
    """The command's exit code; None when the caller went away first (the command is ended)."""
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid == child:
            return os.waitstatus_to_exitcode(status) if status else 0
        ready, _, _ = select.select([conn], [], [], 0.2)
        if ready and not conn.recv(1, socket.MSG_PEEK):
            _end_group(child)
            return None


def _end_group(child: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(child, sig)
        except OSError:
            return
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline:
            if os.waitpid(child, os.WNOHANG)[0] == child:
                return
            time.sleep(0.1)


def _die_with_parent() -> None:
    """SIGTERM this process when its session process dies (e.g. `regrow down` mid-command)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _command(request: dict, fds: list[int], command: Callable[[list[str]], int]) -> None:
    """In the forked command process: become the caller's command, then exit with its code."""
    code = 1
    try:
        os.setpgid(0, 0)
        _die_with_parent()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace",  # noqa: SIM115
                          closefd=False)
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace",  # noqa: SIM115
                          closefd=False)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = ["regrow", *request["argv"]]
        code = command(request["argv"])
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:  # noqa: BLE001 - shown to the caller as the command line would
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
