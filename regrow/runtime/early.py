"""A command's temporary Prefect server, booted while the command imports the ML stack.

Without a Prefect server (no ``PREFECT_API_URL``, no control plane), Prefect's ephemeral mode
starts a temporary server at the first API call of a run and waits for it: it imports the
server's application in the command's own process (5-6 s of this 2-core machine's CPU, only to
launch a subprocess), then waits 2-7 s more for the subprocess to boot (12 s on a fresh
``REGROW_HOME``, where the server migrates its database). None of that overlaps the command's
own imports (scikit-learn, MLflow, Great Expectations) or MLflow's migrations.

`start` does what the ephemeral mode does, earlier and without the import: it binds a free
local port, hands the listening socket to the same server Prefect would run (``uvicorn
prefect.server.api.server:create_app`` with Prefect's ephemeral settings: no UI, no background
services) and points ``PREFECT_API_URL`` at it, so Prefect never starts a second one. Because
the socket listens before the server has booted, the first requests simply queue in the kernel
until it answers: no polling, no refused connection. The server is stopped when the command
exits (and, if the command is killed, by its lifeline, `regrow.runtime.lifeline`, whose token its
environment carries).

`flow_settings` is the Prefect settings a command's own flow runs use: without Prefect's
flow-run heartbeats, unless the user configured them (see its docstring).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys

# The commands that run a flow: the ones worth starting a server for.
COMMANDS = ("train", "retrain", "watch", "score", "reproduce", "demo")
STOP_GRACE = 5.0  # seconds the server has to shut down cleanly before it is killed
_OFF = ("0", "false", "no", "off")
HEARTBEAT_VARS = ("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_RUNNER_HEARTBEAT_FREQUENCY")
# Commands that check their input before they import Prefect: they enter `flow_settings`
# themselves, at their flow call (`checked=True`).
CHECKS_FIRST = ("reproduce", "retrain")
# Commands that ask the retrain policy before anything else: they start the server themselves,
# only when a training will run (`regrow.app.cli.cmd_retrain`).
ASKS_FIRST = ("retrain",)


def start(command: str) -> int | None:
    """Start the temporary server for `command` when it will need one; returns its port.

    Nothing is started (None) for a command that runs no flow, when a Prefect server is
    configured, or when Prefect's ephemeral mode is switched off
    (``PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=false``: Prefect then says what to set).
    """
    if command not in COMMANDS or os.environ.get("PREFECT_API_URL") \
            or os.environ.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "").lower() in _OFF:
        return None
    from regrow.runtime.prefect_home import seed_prefect_home
    from regrow.tasks.store.settings import Settings

    seed_prefect_home(Settings.from_env())  # a new home's server needs no migrations
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
           "PREFECT__SERVER_FINAL": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
         "--fd", str(listener.fileno()), "--log-level", "error", "--lifespan", "on"],
        env=env, pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL)
    listener.close()  # the server holds its own copy; connections queue until it serves
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
    atexit.register(_stop, server)
    return port


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=STOP_GRACE)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextlib.contextmanager
def flow_settings(command: str, *, checked: bool = False):
    """Run a command's flows without Prefect's flow-run heartbeats, unless configured.

    Prefect 3 sends a heartbeat event from a thread that sleeps in 1 s steps, and every flow
    run's end waits for that thread to wake: 0-1 s added to each command, 0.5 s on average
    (the runs of a command lasted whole seconds: 3.1 or 4.1 s against 2.7-3.0 s without).
    The heartbeats only feed a zombie-run automation a user may have created; regrow's own
    lease (`tasks.policy.lease`) already records a command killed mid-training as ``crashed``.
    Runs started by ``regrow serve`` or a worker keep Prefect's default, as does a command
    when ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set or the Prefect profile changes it.
    """
    if command not in COMMANDS or (command in CHECKS_FIRST and not checked) \
            or any(v in os.environ for v in HEARTBEAT_VARS):
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.settings.models.flows import FlowsSettings

    default = FlowsSettings.model_fields["heartbeat_frequency"].default
    if PREFECT_FLOWS_HEARTBEAT_FREQUENCY.value() != default:  # set in the user's profile
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
