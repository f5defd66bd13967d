"""Warm served runs: the flow runs of `regrow serve` start as forks of a process that has
imported Prefect and the ML stack once, instead of as fresh processes that import it all again
(2-3 s before a run shows Running and 3-4 s more before its first step, on 2 cores).

Linux only; ``REGROW_WARM=off`` keeps Prefect's fresh processes. Imported by `regrow serve` only,
so commands do not pay for `multiprocessing`'s import.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.context
import os
import sys
import threading

# What a deployment run of `regrow serve` imports, before it shows Running and in its steps.
RUN_IMPORTS = ("prefect.flow_engine", "prefect.task_engine", "regrow.flows.serve",
               "regrow.flows.monitoring", "regrow.flows.training", "regrow.tasks.monitoring.drift",
               "regrow.tasks.data.validate", "great_expectations", "evidently", "mlflow.sklearn",
               "skops.io", "sklearn.ensemble", "sklearn.linear_model", "pyarrow.parquet")


def start_runs_warm() -> bool:
    """Start the flow runs of this process's Prefect runner as forks of a process that has
    imported Prefect and the ML stack once (a ``forkserver``) instead of as fresh ``spawn``
    processes that import it all again. Returns whether it is on.

    Prefect's runner asks `multiprocessing` for a ``spawn`` context when it starts a run
    (`prefect.flow_engine.run_flow_in_subprocess`); this hands it a fork-server context. The
    run process still gets the runner's environment plus Prefect's variables, and leaves
    through the interpreter's exit steps, so Prefect's log and event workers drain. Linux
    only; ``REGROW_WARM=off`` keeps Prefect's spawn.
    """
    if not sys.platform.startswith("linux") or os.environ.get("REGROW_WARM") == "off":
        return False
    from prefect import flow_engine

    warm_context()
    # the engine only calls get_context and module attributes, which the stand-in forwards
    flow_engine.multiprocessing = _SpawnServedWarm()  # type: ignore[assignment]
    return True


def warm_context() -> _WarmContext:
    """A `multiprocessing` context whose processes are forks of a fork server that has
    imported `RUN_IMPORTS`; the server is started now, not when the first run comes (Linux)."""
    import multiprocessing.forkserver

    multiprocessing.forkserver.set_forkserver_preload(list(RUN_IMPORTS))
    multiprocessing.forkserver.ensure_running()
    return _WarmContext()


class _SpawnServedWarm:
    """`multiprocessing` as Prefect's flow engine sees it once `start_runs_warm` ran."""

    def get_context(self, method: str | None = None):
        return _WarmContext() if method == "spawn" else multiprocessing.get_context(method)

    def __getattr__(self, name: str):
        return getattr(multiprocessing, name)


class _WarmProcess(multiprocessing.context.ForkServerProcess):
    def run(self) -> None:
        try:
            super().run()
        finally:
            # A fork server's child ends with os._exit, which skips what sys.exit would run:
            # threading's exit hooks (where Prefect drains its API log and event workers),
            # then the atexit functions. threading._shutdown, the interpreter's own exit step,
            # is private and so not in typeshed.
            threading._shutdown()  # type: ignore[attr-defined]  # noqa: SLF001
            atexit._run_exitfuncs()  # noqa: SLF001


class _WarmContext(multiprocessing.context.ForkServerContext):
    Process = _WarmProcess
