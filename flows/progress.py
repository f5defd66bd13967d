"""One readable line per step: to the Prefect run log always, and to the console when asked.

Each line goes to the Prefect run logger (the run's page in the UI). The console copy is
written to stderr when the CLI turned it on (`from_cli`: commands that print a human summary,
not with ``--json``, and not with ``-v``, where Prefect's own console handler already shows
the run log) -- a flag of this module, set in the process that runs the command (so it leaves
the environment, and with it the warm process's key, alone). Without the CLI (flows called
from Python) ``REGROW_PROGRESS=1`` turns it on; ``REGROW_PROGRESS=0`` keeps it off everywhere.
Lines are plain text; the step name is coloured only when stderr is a terminal and
``NO_COLOR`` is unset.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "REGROW_PROGRESS"
_console_on: bool | None = None  # set by `from_cli`; None: the environment decides


def _env(default: bool) -> bool:
    value = os.environ.get(ENV, "").strip().lower()
    return default if not value else value in {"1", "true", "yes", "on"}


def enabled() -> bool:
    """True when step lines are also written to the console (stderr)."""
    return _env(False) if _console_on is None else _console_on


def _logger() -> logging.Logger | logging.LoggerAdapter:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("regrow")


def _colour() -> bool:
    return sys.stderr.isatty() and not os.environ.get("NO_COLOR")


def say(step: str, text: str) -> None:
    """Log ``[step] text`` on the run; echo it to the console when `enabled`."""
    _logger().info(f"[{step}] {text}")
    if enabled():
        _console(step, text)


def _console(step: str, text: str) -> None:
    tag = f"\033[36m[{step}]\033[0m" if _colour() else f"[{step}]"
    try:
        sys.stderr.write(f"{tag} {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed console never fails a run
        pass


class Done:
    """What a timed step says when it ends (set ``text`` before leaving the block)."""

    def __init__(self) -> None:
        self.text = "done"
        self.started = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds since the step started."""
        return time.perf_counter() - self.started


@contextmanager
def timed(step: str, starting: str | None = None) -> Iterator[Done]:
    """Say `starting` (with `` ...``) now and ``<seconds> s: <done.text>`` at the end.

    A step that raises says nothing more: the error is reported by whoever catches it.
    """
    if starting:
        say(step, f"{starting} ...")
    done = Done()
    yield done
    say(step, f"{done.seconds:.1f} s: {done.text}")


# Commands whose flows print step lines to the console (their summary comes at the end).
COMMANDS = ("train", "retrain", "watch", "reproduce", "score")
# Long commands that also say, before Prefect is up, where the run starts.
STARTING = ("train", "retrain", "watch")


def from_cli(command: str, as_json: bool, verbose: bool, runnable: bool = False) -> None:
    """Turn the console lines on for `command` unless ``--json`` (stdout stays pure JSON, and
    nothing extra goes to stderr either) or ``-v`` (Prefect's console handler shows the run log,
    these lines included). ``REGROW_PROGRESS=0`` in the environment keeps them off.

    For the long commands that are `runnable` (their config is valid: `valid_config`), the
    first line says where the run starts: the seconds before the first step go to imports and
    to starting Prefect. (An invalid config prints nothing here: its error is the only line.)
    """
    global _console_on
    _console_on = command in COMMANDS and not as_json and not verbose and _env(True)
    if _console_on and command in STARTING and runnable:
        api = os.environ.get("PREFECT_API_URL")
        _console("prefect", f"starting the run on {api} ..." if api else
                 "starting the run on a temporary local Prefect server ...")


def valid_config(config: str | None, overrides: list[str] | None) -> bool:
    """Whether `config` with `overrides` loads (the command itself reports why not)."""
    from regrow.configs.schema import load_config, parse_override

    try:
        load_config(config or "", dict(parse_override(o) for o in overrides or []))
    except Exception:  # noqa: BLE001 - the command reports it
        return False
    return True
