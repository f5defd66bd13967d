"""The local control plane: `regrow up`, `regrow down`, `regrow ps`.

`up` starts, detached from the terminal, the parts of a local plane on one state directory:

- ``prefect``: ``prefect server start`` (API and UI), with ``PREFECT_HOME`` under
  ``REGROW_HOME`` (the home the temporary servers of commands use, so earlier runs show too);
- ``mlflow``: ``mlflow server`` on the tracking store commands use (``Settings.tracking_uri``)
  with the embedded artifact root, so their runs and models show in the MLflow UI (skipped when
  ``MLFLOW_TRACKING_URI`` already names an MLflow server);
- ``serve``: ``regrow serve CONFIG ...`` against that Prefect server, when configs are given;
- ``webhook``: ``regrow webhook CONFIG ...``, when configs are given and
  ``REGROW_WEBHOOK_SECRET`` is set;
- ``warm``: a process that has imported the whole stack and runs every later command in a fork
  of itself (`regrow.runtime.warm`): commands skip 8-10 s of imports.

Each part runs in its own session with its output in ``$REGROW_HOME/run/<part>.log``, its pid in
``run/<part>.pid``; ``run/plane.json`` (`tasks.store.plane_state`) lists them. The parts do not carry the
``REGROW_LIFELINE`` token of the `up` command (they outlive it) but a plane token
(``REGROW_PLANE``) that their descendants inherit, so `down` also ends the Prefect server's
workers and the flow runs of ``regrow serve``. While the Prefect part runs, every command uses
it (`tasks.store.settings.configure_process_env`).

Neither Prefect's API nor MLflow's server has a login by default, and Prefect's API creates
flow runs for anyone who reaches it. On loopback (the default ``--host 127.0.0.1``) only this
machine does; any other ``--host`` is refused unless both have one (`exposure_problem`):
``PREFECT_SERVER_API_AUTH_STRING`` (``user:password``; the parts get it as the clients'
``PREFECT_API_AUTH_STRING``) and MLflow's basic auth (``MLFLOW_AUTH_ADMIN_PASSWORD``, or
``MLFLOW_AUTH_CONFIG_PATH`` naming a ``basic_auth.ini`` with ``admin_password``; the MLflow part
then runs ``mlflow server --app-name basic-auth``).

Standard library only (configs are loaded by `up` alone): `ps` and `down` start fast.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import fcntl
import ipaddress
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regrow.runtime.prefect_home import seed_prefect_home
from regrow.tasks.store import plane_state as plane
from regrow.tasks.store.settings import Settings

PLANE_ENV = "REGROW_PLANE"
LIFELINE_ENV = "REGROW_LIFELINE"  # regrow.runtime.lifeline.ENV; not imported, to keep this module light
GRACE = 10.0  # seconds between SIGTERM and SIGKILL in `down`
ORDER = ("prefect", "mlflow", "serve", "webhook", "warm")
OPTION = {"prefect": "--prefect-port", "mlflow": "--mlflow-port", "webhook": "--webhook-port"}


class PlaneError(Exception):
    """A request `up` cannot carry out (bad input: exit 2)."""


PREFECT_SERVER_AUTH = "PREFECT_SERVER_API_AUTH_STRING"  # the server's login (user:password)
PREFECT_CLIENT_AUTH = "PREFECT_API_AUTH_STRING"  # what clients send
MLFLOW_ADMIN_PASSWORD = "MLFLOW_AUTH_ADMIN_PASSWORD"
MLFLOW_AUTH_CONFIG = "MLFLOW_AUTH_CONFIG_PATH"


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps a server to this machine (``0.0.0.0`` and ``::`` do not;
    a name counts when every address it resolves to is a loopback one)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except (OSError, UnicodeError):
        return False
    try:
        return bool(found) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback
                                   for a in found)
    except ValueError:
        return False


def mlflow_auth_configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether MLflow's basic-auth app has an admin password to start with: from
    ``MLFLOW_AUTH_ADMIN_PASSWORD``, or the ``admin_password`` of the ``basic_auth.ini`` that
    ``MLFLOW_AUTH_CONFIG_PATH`` names (MLflow ships none of its own)."""
    env = os.environ if environ is None else environ
    if env.get(MLFLOW_ADMIN_PASSWORD, "").strip():
        return True
    path = env.get(MLFLOW_AUTH_CONFIG, "").strip()
    if not path:
        return False
    ini = configparser.ConfigParser()
    try:
        ini.read(path)
    except configparser.Error:
        return False
    return bool(ini.has_section("mlflow") and ini["mlflow"].get("admin_password", "").strip())


def _starts_mlflow(settings: Settings) -> bool:
    """Whether `up` runs an MLflow server (for a local tracking store; not for a remote one)."""
    return not settings.tracking_uri.startswith(("http://", "https://", "databricks"))


def exposure_problem(host: str, settings: Settings,
                     environ: Mapping[str, str] | None = None) -> str | None:
    """Why the plane may not bind `host` as things are set, as one sentence; None when it may
    (a loopback address, or the Prefect API and the MLflow server `up` starts both have a
    login)."""
    if is_loopback(host):
        return None
    env = os.environ if environ is None else environ
    exposed, servers, missing = [], [], []
    if not env.get(PREFECT_SERVER_AUTH, "").strip():
        exposed.append("create Prefect flow runs")
        servers.append("the Prefect API")
        missing.append(f"{PREFECT_SERVER_AUTH}=<user>:<password> (the Prefect API's login; "
                       f"`up` hands it to its parts, other clients set {PREFECT_CLIENT_AUTH} "
                       "to the same value)")
    if _starts_mlflow(settings) and not mlflow_auth_configured(env):
        exposed.append("change the MLflow registry")
        servers.append("the MLflow server")
        missing.append(f"{MLFLOW_ADMIN_PASSWORD}=<password> for MLflow's basic auth (or "
                       f"{MLFLOW_AUTH_CONFIG} naming a basic_auth.ini with admin_password; the "
                       "MLflow server then runs with --app-name basic-auth)")
    if not missing:
        return None
    return (f"--host {host} would let anyone who reaches this machine {' and '.join(exposed)}, "
            f"and {'neither server has' if len(servers) > 1 else servers[0] + ' has no'} "
            f"{'a ' if len(servers) > 1 else ''}login: set {' and '.join(missing)}, then run "
            "`regrow up` again, or keep the default --host 127.0.0.1")


def _prefect_auth_header() -> dict[str, str]:
    """The Authorization header Prefect's API wants when it has a login (else none)."""
    auth = os.environ.get(PREFECT_CLIENT_AUTH) or os.environ.get(PREFECT_SERVER_AUTH)
    if not auth:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


@dataclass(frozen=True)
class Options:
    """What `regrow up` was asked for."""

    configs: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    prefect_port: int = 4200
    mlflow_port: int = 5000
    webhook_port: int = 8787
    timeout: float = 180.0


def _url_host(host: str) -> str:
    """The address clients use for a bind address (a wildcard bind answers on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as uvicorn binds: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


# --- processes ------------------------------------------------------------------------------


def _environ(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _pids() -> Iterator[int]:
    me = os.getpid()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            yield int(name)


def carriers(plane_id: str) -> set[int]:
    """Live processes whose environment carries this plane's token (its parts' descendants)."""
    mark = f"{PLANE_ENV}={plane_id}".encode()
    return {pid for pid in _pids() if mark in _environ(pid).split(b"\0")
            and plane.start_time(pid) is not None}


def _group(pgid: int) -> set[int]:
    """Live members of a process group."""
    found = set()
    for pid in _pids():
        try:
            if os.getpgid(pid) == pgid and plane.start_time(pid) is not None:
                found.add(pid)
        except OSError:
            continue
    return found


def _is_watchdog(pid: int) -> bool:
    """A command's lifeline watchdog: it ignores SIGTERM and ends once its command is gone."""
    argv = plane.cmdline(pid) or []
    return "regrow.runtime.lifeline" in argv


def _signal(pids: set[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, sig)


def _wait_gone(pids: set[int], seconds: float) -> set[int]:
    """Wait up to `seconds` for the processes to end; returns those still alive."""
    deadline = time.monotonic() + seconds
    left = {p for p in pids if plane.start_time(p) is not None}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if plane.start_time(p) is not None}
    return left


def _terminate(parts: list[dict[str, Any]], plane_id: str | None, grace: float = GRACE) -> int:
    """End the live parts, their process groups and every process carrying the plane's token;
    returns how many processes ended.

    Clients first: ``regrow serve`` pauses its deployments through the Prefect API when it stops
    (and would retry against a server already gone), so `serve` and `webhook` get SIGTERM and up
    to `grace` seconds before the servers get theirs. What is left `grace` seconds after that
    (and any watchdog of a part's command, which ignores SIGTERM) gets SIGKILL.
    """
    everyone: set[int] = set()
    for stage in (("serve", "webhook", "warm"), ("prefect", "mlflow")):
        targets: set[int] = set()
        for part in parts:
            if part.get("name") in stage and plane.part_alive(part):
                targets |= {part["pid"]} | _group(part["pid"])
        if stage[0] == "prefect" and plane_id:
            targets |= carriers(plane_id)
        targets -= everyone
        everyone |= targets
        _signal({p for p in targets if not _is_watchdog(p)}, signal.SIGTERM)
        _wait_gone({p for p in targets if not _is_watchdog(p)}, grace)
    # watchdogs end on their own once their command is gone; give them a moment
    left = _wait_gone(everyone, 2.0)
    if plane_id:
        left |= carriers(plane_id)
    everyone |= left
    _signal(left, signal.SIGKILL)
    _wait_gone(left, 5.0)
    return len(everyone)


# --- health ---------------------------------------------------------------------------------


def _deployments_served(api_url: str, names: list[str], timeout: float = 2.0) -> bool:
    """Whether the Prefect API lists every deployment name of ``regrow serve``."""
    body = json.dumps({"deployments": {"name": {"any_": names}}}).encode()
    req = urllib.request.Request(f"{api_url}/deployments/filter", data=body, method="POST",
                                 headers={"Content-Type": "application/json",
                                          **_prefect_auth_header()})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - our own http URL
            found = {d.get("name") for d in json.load(r)}
    except (OSError, ValueError, urllib.error.URLError):
        return False
    return set(names) <= found


def _warm_ready(part: dict[str, Any]) -> bool:
    """Whether the warm process listens: its state file names its pid and its socket exists."""
    try:
        state = json.loads((Path(part["socket"]).parent / "warm.json").read_text())
    except (OSError, ValueError):
        return False
    return state.get("pid") == part.get("pid") and Path(part["socket"]).exists()


def answers(part: dict[str, Any], timeout: float = 2.0) -> bool:
    """Whether a part answers: its health URL, (``serve``) its deployments on the API, or
    (``warm``) its socket."""
    if part.get("socket"):
        return _warm_ready(part)
    if part.get("deployments"):
        return _deployments_served(part["api_url"], part["deployments"], timeout)
    return plane.http_ok(part["health_url"], timeout)


def health(part: dict[str, Any]) -> str:
    """``up``, ``not answering`` (the process runs, its check fails) or ``stopped``."""
    if not plane.part_alive(part):
        return "stopped"
    return "up" if answers(part, timeout=1.5) else "not answering"


# --- the plane --------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(run_dir: Path) -> Iterator[None]:
    """One `up` or `down` at a time per state directory."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "plane.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _live(state: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [p for p in (state or {}).get("parts", []) if plane.part_alive(p)]


def _cleanup(run_dir: Path, state: dict[str, Any] | None) -> None:
    for part in (state or {}).get("parts", []):
        with contextlib.suppress(OSError, KeyError, TypeError):
            Path(part["pid_file"]).unlink(missing_ok=True)
    for stray in run_dir.glob("*.pid"):
        stray.unlink(missing_ok=True)
    for name in ("warm.sock", "warm.json"):  # the warm part's socket and state (regrow.runtime.warm)
        (run_dir / name).unlink(missing_ok=True)
    plane.state_path(run_dir).unlink(missing_ok=True)


def _tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _plan(opts: Options, settings: Settings, models: list[str]) -> list[dict[str, Any]]:
    """The parts to start, with their command lines, URLs and files (not started yet)."""
    py, host, url_host = sys.executable, opts.host, _url_host(opts.host)
    run = settings.run_dir
    prefect_url = f"http://{url_host}:{opts.prefect_port}"
    api = f"{prefect_url}/api"
    configs = [str(Path(c).resolve()) for c in opts.configs]

    def part(name: str, argv: list[str], url: str, health_url: str | None, port: int | None,
             **extra: Any) -> dict[str, Any]:
        return {"name": name, "argv": argv, "url": url, "health_url": health_url, "port": port,
                "api_url": api, "log": str(run / f"{name}.log"),
                "pid_file": str(run / f"{name}.pid"), **extra}

    parts = [part("prefect", [py, "-m", "prefect", "server", "start", "--host", host,
                              "--port", str(opts.prefect_port)],
                  prefect_url, f"{api}/health", opts.prefect_port)]
    if _starts_mlflow(settings):
        login = ["--app-name", "basic-auth"] if mlflow_auth_configured() else []
        parts.append(part("mlflow", [
            py, "-m", "mlflow", "server", "--backend-store-uri", settings.tracking_uri,
            "--default-artifact-root", settings.artifact_root.as_uri(), "--no-serve-artifacts",
            "--host", host, "--port", str(opts.mlflow_port), "--workers", "1", *login],
            f"http://{url_host}:{opts.mlflow_port}", f"http://{url_host}:{opts.mlflow_port}/health",
            opts.mlflow_port))
    if configs:
        parts.append(part("serve", [py, "-m", "regrow.app.cli", "-v", "serve", *configs],
                          f"{prefect_url}/deployments", None, None,
                          deployments=[f"train-{m}" for m in models], configs=configs))
    if configs and os.environ.get("REGROW_WEBHOOK_SECRET"):
        wh = f"http://{url_host}:{opts.webhook_port}"
        parts.append(part("webhook", [py, "-m", "regrow.app.cli", "webhook", *configs, "--host", host,
                                      "--port", str(opts.webhook_port)],
                          wh, f"{wh}/healthz", opts.webhook_port, configs=configs))
    sock = run / "warm.sock"
    parts.append(part("warm", [py, "-m", "regrow.app.warm_main", str(sock)], f"unix:{sock}", None, None,
                      socket=str(sock)))
    return parts


def _spawn(part: dict[str, Any], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    with open(part["log"], "ab") as log:
        proc = subprocess.Popen(part["argv"], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, close_fds=True,
                                start_new_session=True)  # its own group, away from the terminal
    part["pid"] = proc.pid
    part["starttime"] = plane.start_time(proc.pid)
    Path(part["pid_file"]).write_text(f"{proc.pid}\n")
    return proc


def _ended(proc: subprocess.Popen) -> str | None:
    """How a part `up` started has ended (``exited with code 1``, ``was killed by signal 9``),
    or None while it runs."""
    code = proc.poll()
    if code is None:
        return None
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def _check_ports(parts: list[dict[str, Any]], host: str) -> None:
    seen: dict[int, str] = {}
    for part in parts:
        port = part.get("port")
        if port is None:
            continue
        if port in seen:
            raise PlaneError(f"{OPTION[part['name']]} and {OPTION[seen[port]]} are both {port}; "
                             "give each part its own port")
        seen[port] = part["name"]
        if not port_free(host, port):
            raise PlaneError(f"port {port} ({part['name']}) is already in use on {host}; choose "
                             f"another with {OPTION[part['name']]}")


def _line(part: dict[str, Any], took: float) -> str:
    return f"{part['name']:<8} {part['url']:<40} up after {took:.1f} s"


def up(opts: Options, models: list[str], out=print) -> int:
    """Start the plane (see the module docstring); returns the exit code.

    Raises:
        PlaneError: a host other than loopback without the servers' logins set
            (`exposure_problem`; nothing is started), a port that is taken or given twice.
    """
    settings = Settings.from_env()
    refused = exposure_problem(opts.host, settings)
    if refused is not None:
        raise PlaneError(refused)
    run_dir = settings.run_dir
    t0 = time.monotonic()
    with _locked(run_dir):
        state = plane.read_state(run_dir)
        if _live(state):
            info = status(state)
            out(f"the control plane of {settings.home} is already up:")
            out(render(info))
            stopped = [p["name"] for p in info["parts"] if p["health"] == "stopped"]
            out(f"{', '.join(stopped)} stopped: `regrow down`, then `regrow up`, starts it again"
                if stopped else "(`regrow down` stops it)")
            return 0
        if state:  # nothing of it runs any more
            _terminate(state.get("parts", []), state.get("id"), grace=2)
            _cleanup(run_dir, state)
        parts = _plan(opts, settings, models)
        _check_ports(parts, opts.host)
        if os.environ.get("PREFECT_API_URL"):  # set by the user: it wins over the plane's
            out(f"note: PREFECT_API_URL is set ({os.environ['PREFECT_API_URL']}); commands run "
                "with it use that server, not the plane's")
        plane_id = uuid.uuid4().hex
        state = {"id": plane_id, "home": str(settings.home), "host": opts.host, "ready": False,
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "parts": []}
        env = {k: v for k, v in os.environ.items()
               if k not in (LIFELINE_ENV, "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL")}
        env.update({PLANE_ENV: plane_id, "PREFECT_API_URL": parts[0]["api_url"],
                    "REGROW_HOME": str(settings.home), "PYTHONUNBUFFERED": "1",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
        if env.get(PREFECT_SERVER_AUTH) and not env.get(PREFECT_CLIENT_AUTH):
            env[PREFECT_CLIENT_AUTH] = env[PREFECT_SERVER_AUTH]  # serve, webhook, warm log in
        # MLflow's job runner (GenAI jobs: trace roll-ups, prompt optimisation) starts seven
        # worker processes; regrow uses none of it.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        if mlflow_auth_configured(env) and not env.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
            # MLflow's login app will not start without a key for its sessions: one per plane
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(32)
        for part in parts:
            Path(part["log"]).unlink(missing_ok=True)  # each plane writes fresh logs
        seed_prefect_home(settings)  # a new home's server starts without migrations
        try:
            ok = _start(parts, state, env, settings, opts.timeout, t0, out)
        except BaseException:
            _terminate(state["parts"], plane_id, grace=3)
            _cleanup(run_dir, state)
            raise
        if not ok:
            _terminate(state["parts"], plane_id, grace=3)
            _cleanup(run_dir, state)
            out("stopped the parts already started; nothing of the plane is left running")
            return 1
        state["ready"] = True
        plane.write_state(run_dir, state)
    out(f"control plane up in {time.monotonic() - t0:.1f} s: regrow commands on {settings.home} "
        f"now use this Prefect server; logs and pids in {run_dir}; `regrow down` stops it")
    return 0


def _start(parts: list[dict[str, Any]], state: dict[str, Any], env: dict[str, str],
           settings: Settings, timeout: float, t0: float, out) -> bool:
    """Start the parts (Prefect and MLflow first, the rest once Prefect answers) and wait for
    each to answer; False, after printing why, when one exits or does not answer in time."""
    first = [p for p in parts if p["name"] in ("prefect", "mlflow")]
    later = [p for p in parts if p not in first]
    waiting: list[dict[str, Any]] = []
    procs: dict[str, subprocess.Popen] = {}  # our own children: poll() says how one ended

    def start(group: list[dict[str, Any]]) -> None:
        for part in group:
            procs[part["name"]] = _spawn(part, env, settings.home)
            state["parts"].append(part)
            plane.write_state(settings.run_dir, state)  # `down` can clean up a broken `up`
            waiting.append(part)

    try:
        start(first)
        deadline = time.monotonic() + timeout
        while waiting:
            for part in list(waiting):
                ended = _ended(procs[part["name"]])
                if ended is not None:
                    out(f"error: {part['name']} ({' '.join(part['argv'][1:5])} ...) {ended} "
                        f"before it answered; the end of {part['log']}:\n{_tail(part['log'])}")
                    return False
                if answers(part):
                    out(_line(part, time.monotonic() - t0))
                    waiting.remove(part)
                    if part["name"] == "prefect":
                        start(later)
            if waiting and time.monotonic() > deadline:
                part = waiting[0]
                out(f"error: {part['name']} did not answer at {part['health_url'] or part['url']}"
                    f" within {timeout:.0f} s; the end of {part['log']}:\n{_tail(part['log'])}")
                return False
            if waiting:
                time.sleep(0.25)
        return True
    finally:
        for proc in procs.values():
            if proc.returncode is None:
                proc.returncode = 0  # detached: `up` never waits for it (no ResourceWarning)


def down(out=print) -> int:
    """Stop every part of the plane; idempotent. Returns the exit code (0)."""
    settings = Settings.from_env()
    run_dir = settings.run_dir
    with _locked(run_dir):
        state = plane.read_state(run_dir)
        if state is None:
            strays = list(run_dir.glob("*.pid"))
            for stray in strays:  # unverifiable without the state file: removed, never signalled
                stray.unlink(missing_ok=True)
            out("the control plane is not up; nothing to stop"
                + (f" (removed {len(strays)} stale pid file(s))" if strays else ""))
            return 0
        parts = state.get("parts", [])
        live = {p["name"] for p in parts if plane.part_alive(p)}
        ended = _terminate(parts, state.get("id"))
        _cleanup(run_dir, state)
    for part in parts:
        if part["name"] in live:
            out(f"stopped {part['name']:<8} (pid {part['pid']}) {part['url']}")
        else:
            out(f"{part['name']:<8} (pid {part.get('pid')}) was not running; stale pid removed")
    extra = ended - len(live)
    out(f"control plane down: {len(live)} part(s) stopped"
        + (f", with {extra} child process(es)" if extra > 0 else "")
        + f"; logs kept in {run_dir}")
    return 0


def status(state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each part with its pid, URL, port, log and health; ``up`` when any part runs."""
    if state is None:
        state = plane.read_state(Settings.from_env().run_dir)
    parts = [{"name": p.get("name"), "pid": p.get("pid"), "url": p.get("url"),
              "port": p.get("port"), "health": health(p), "log": p.get("log")}
             for p in (state or {}).get("parts", [])]
    return {"up": any(p["health"] != "stopped" for p in parts),
            "started": (state or {}).get("started"), "parts": parts}


def render(info: dict[str, Any]) -> str:
    """The plain-text table of `regrow ps`."""
    if not info["parts"]:
        return "the control plane is not up (`regrow up [CONFIG ...]` starts it)"
    rows = [("PART", "PID", "URL", "HEALTH")] + [
        (p["name"], str(p["pid"]), p["url"], p["health"]) for p in info["parts"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}"
                     for r in rows)
