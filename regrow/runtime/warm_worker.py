"""`regrow worker`: a Prefect process worker whose flow runs start warm.

Prefect's process worker starts each flow run as a fresh ``python -m prefect.engine``, which
imports Prefect and regrow's ML stack again (several seconds of CPU per run on 2 cores: most of
a drift check's cost). This worker polls the same kind of pool (``--type process``) and
proposes the same states, but starts a run as a fork of a process that has imported the stack
once (`regrow.runtime.warm_runs`' fork server): the child takes the run's environment (the
pool's and the deployment's job variables, the flow run id) and working directory, then runs
Prefect's engine as ``python -m prefect.engine`` would. A run's exit code, its pid (what a
cancellation signals) and its logs are what the fresh process would give.

Linux only; elsewhere, or with ``REGROW_WARM=off``, runs start as Prefect's fresh processes.
A deployment whose job variables set their own ``command`` runs that command, as Prefect's
worker would.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from prefect.utilities.dispatch import get_registry_for_type
from prefect.workers.base import BaseWorker
from prefect.workers.process import ProcessWorker, ProcessWorkerResult


def _engine(env: dict[str, str], cwd: str) -> None:
    """In the forked child: become the run's process, then run Prefect's engine."""
    import runpy

    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import Settings

    os.environ.update(env)
    os.chdir(cwd)
    sys.argv = [sys.executable]  # the engine reads the flow run id from the environment
    sys.modules.pop("prefect.engine", None)  # imported by the warm process: run it afresh
    # Prefect's settings as the run's environment sets them (the warm process read its own),
    # as Prefect's own subprocess runs do (`prefect.flow_engine.run_flow_in_subprocess`)
    with SettingsContext(profile=get_settings_context().profile, settings=Settings()):
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)


with warnings.catch_warnings():  # a subclass of the same type would replace Prefect's own
    warnings.simplefilter("ignore")

    class WarmProcessWorker(ProcessWorker):
        """A process worker whose runs start as forks of a warm process (see the module)."""

        type = "process"

        def __init__(self, *args: Any, warm: bool = True, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._warm_context = None
            if warm:
                from regrow.runtime.warm_runs import warm_context

                self._warm_context = warm_context()

        async def run(self, flow_run: Any, configuration: Any,
                      task_status: Any = None) -> ProcessWorkerResult:
            if self._warm_context is None or getattr(configuration, "_command_configured", False):
                return await super().run(flow_run, configuration, task_status)
            import anyio

            with tempfile.TemporaryDirectory(suffix="prefect") as scratch:
                cwd = str(Path(configuration.working_dir or scratch).resolve())
                env = {k: str(v) for k, v in (configuration.env or {}).items() if v is not None}
                proc = self._warm_context.Process(target=_engine, args=(env, cwd),
                                                  name=f"flow-run-{flow_run.id}")
                proc.start()
                if task_status is not None:
                    task_status.started(proc.pid)
                await anyio.to_thread.run_sync(proc.join)
            return ProcessWorkerResult(status_code=proc.exitcode if proc.exitcode is not None else -1,
                                       identifier=str(proc.pid))


# `prefect worker start --type process` and the pool's type stay Prefect's own worker
(get_registry_for_type(BaseWorker) or {})["process"] = ProcessWorker  # type: ignore[assignment]


def run_worker(pool: str, limit: int | None, name: str | None, run_once: bool = False) -> None:
    """Poll `pool` until interrupted (the body of `regrow worker`)."""
    import asyncio

    warm = sys.platform.startswith("linux") and os.environ.get("REGROW_WARM") != "off"

    async def main() -> None:
        worker = WarmProcessWorker(work_pool_name=pool, limit=limit, name=name, warm=warm)
        await worker.start(run_once=run_once, printer=print)

    print(f"regrow worker: polling work pool {pool!r}; runs start "
          + ("as forks of a process that has imported the ML stack" if warm
             else "as fresh processes"), flush=True)
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
