"""Deployments for each config, served by one process (`regrow serve`).

Per model:
- ``train-<model>``: the policy-gated training flow. Its parameter is a typed `TrainRequest`,
  so the Prefect UI shows a form (config, reason, overrides). A run started from the UI asks
  the retrain policy like every other trigger; a run started by the
  ``regrow.retrain.admitted`` event (a request the policy already admitted) trains directly.
  Concurrency limit 1, collision strategy from ``serve.collision_strategy``.
- ``drift-check-<model>``: on ``monitoring.schedule`` (cron); admitted retrains are dispatched as
  events, so training always runs in the training deployment.
- ``score-<model>``: scoring of a file or query (``serve.scoring_cron`` optional); also triggered
  by the ``regrow.data.arrived`` event.
"""

# No postponed annotations here: the runner hands a run process the flow object itself, its
# function pickled by value, and the parameter types must travel as classes, not as names
# to look up in this module (tests/test_serve.py checks every served flow).
import os
import signal
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from prefect import flow
from pydantic import BaseModel, Field

from regrow.flows import dispatch, pages
from regrow.flows import events as notify

# The ML stack (pandas, scikit-learn, MLflow, ...) is imported inside the flows: with
# ``REGROW_WARM=off`` a deployment run starts as a fresh process that imports this module
# first, and the time until the run shows Running is that import.


class TrainRequest(BaseModel):
    """A training request as the Prefect UI form and the event trigger fill it."""

    config_path: str = Field(description="The model's YAML config on the worker.")
    reason: str = Field(default="started from the Prefect UI", description="Why (recorded).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Config keys to override, e.g. split.cutoff; only keys "
        "in the config's serve.allowed_overrides (never gate, retrain, promotion, monitoring, "
        "registry or estimator import paths).")
    kind: str = Field(default="ui", description="Trigger kind: ui, webhook, drift, schedule, manual.")
    request_id: int | None = Field(default=None,
                                   description="Set when the policy already admitted the request.")
    ref: str = Field(default="", description="What asked: delivery id, drift check id, ...")
    actor: str = Field(default="prefect-ui", description="Who asked.")


class TrainingFailed(RuntimeError):
    """The admitted training failed; the champion did not move."""


def _checked(outcome: Any) -> Any:
    if outcome.error:  # the flow run must show Failed, not Completed
        raise TrainingFailed(f"training for request #{outcome.request_id} failed: {outcome.error}")
    return outcome


@flow(name="regrow-train-request", log_prints=True, flow_run_name=pages.request_run_name)
def train_request_flow(request: TrainRequest) -> Any:
    """Train for a request: admitted ones directly, new ones (UI) through the policy first.
    Ends ``Refused``, ``Skipped`` or ``Rejected`` when nothing was promoted (`flows.pages`)."""
    return pages.retrain_state(_train_request(request))


def _train_request(request: TrainRequest) -> Any:
    from regrow.configs.schema import check_external_overrides, load_config
    from regrow.flows.monitoring import Env, RetrainOutcome, execute_request
    from regrow.tasks.policy import retrain as policy
    # The config is read once; overrides from the form or an event come from outside: only
    # the keys the config allows. Refused ones fail the run (and its admitted request) before
    # anything else happens.
    base = load_config(request.config_path)
    try:
        check_external_overrides(base.config, request.overrides)
    except ValueError:
        if request.request_id is not None:
            policy.mark_request(Env.of(base).store, request.request_id, "failed")
        raise
    env = Env.of(base.with_overrides(request.overrides) if request.overrides else base)
    if request.request_id is not None:
        state = policy.request_state(env.store, request.request_id)
        if state != "admitted":  # a repeated event: this request is running or done already
            detail = f"request #{request.request_id} is {state or 'unknown'}; not training again"
            print(detail)
            return RetrainOutcome(request.request_id, policy.COALESCED, detail)
        answer = policy.PolicyVerdict(request.request_id, policy.ADMITTED, "admitted earlier")
        return _checked(execute_request(env, request.config_path, answer, kind=request.kind,
                                        reason=request.reason, ref=request.ref or None,
                                        overrides=request.overrides or None, actor=request.actor))
    answer = notify.request_retrain(env.store, env.model, env.loaded.config.retrain,
                                    kind=request.kind, reason=request.reason,
                                    ref=request.ref or None)
    if not answer.admitted:
        print(f"retrain request #{answer.request_id}: {answer.verdict} -- {answer.detail}")
        return RetrainOutcome(answer.request_id, answer.verdict, answer.detail)
    return _checked(execute_request(env, request.config_path, answer, kind=request.kind,
                                    reason=request.reason, ref=request.ref or None,
                                    overrides=request.overrides or None, actor=request.actor))


@flow(name="regrow-data-arrived", log_prints=True,
      flow_run_name=pages.data_arrived_run_name)
def data_arrived_flow(config_path: str, input_path: str | None = None, query: str | None = None,
                      ref: str = "") -> Any:
    """New data landed: score it with the champion (when a source is named), then check drift;
    a persistent drift asks the policy for a retrain like any check."""
    from regrow.flows.monitoring import drift_check_flow, score_flow

    if input_path or query:
        result = score_flow(config_path, input_path or None, query or None)
        print(f"scored {result.rows} rows with v{result.version} ({ref})")
    return drift_check_flow(config_path)


@flow(name="regrow-scheduled-retrain", log_prints=True,
      flow_run_name=pages.scheduled_retrain_run_name)
def scheduled_retrain_flow(config_path: str, reason: str = "scheduled retrain") -> Any:
    """A schedule's retrain request, through the policy like every trigger."""
    from regrow.flows.monitoring import Env, run_request

    return pages.retrain_state(run_request(Env.open(config_path), config_path, kind="schedule",
                                           reason=reason, ref=None, overrides=None,
                                           actor="schedule"))


def _event_trigger(model: str, event: str, parameters: dict[str, Any]):
    from prefect.events import DeploymentEventTrigger

    return DeploymentEventTrigger(
        name=f"{event} for {model}", expect={event},
        match={"prefect.resource.id": f"regrow.model.{model}"}, parameters=parameters)


class Served(NamedTuple):
    """A flow and the options of its deployment (`prefect.runner.Runner.add_flow`)."""

    flow: Any
    options: dict[str, Any]


def deployments_for(loaded: Any) -> list[Served]:
    """The deployments of one config."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from regrow.flows.monitoring import drift_check_flow, score_flow

    cfg, path = loaded.config, str(loaded.path)
    model = cfg.registry.model_name
    strategy = ConcurrencyLimitStrategy.ENQUEUE if cfg.serve.collision_strategy == "enqueue" \
        else ConcurrencyLimitStrategy.CANCEL_NEW
    p = "{{ event.payload.%s }}"
    train_triggers = [_event_trigger(model, dispatch.ADMITTED_EVENT, {"request": {
        "config_path": p % "config_path", "reason": p % "reason", "kind": p % "kind",
        "request_id": p % "request_id", "ref": p % "ref", "overrides": p % "overrides",
        "actor": "event"}})]
    out = [
        Served(train_request_flow, dict(
            name=f"train-{model}", parameters={"request": {"config_path": path}},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
            triggers=train_triggers, tags=["regrow", model],
            description=f"Train {model} (through the retrain policy).")),
        Served(drift_check_flow, dict(
            name=f"drift-check-{model}", parameters={"config_path": path},
            cron=cfg.monitoring.schedule, tags=["regrow", model],
            description=f"Drift check of {model}'s champion; asks for retrains by event.")),
        Served(score_flow, dict(
            name=f"score-{model}", parameters={"config_path": path},
            cron=cfg.serve.scoring_cron, tags=["regrow", model],
            description=f"Score new rows with {model}'s champion.")),
    ]
    if cfg.serve.data_arrived == "score_and_check":
        out.append(Served(data_arrived_flow, dict(
            name=f"data-arrived-{model}", parameters={"config_path": path},
            triggers=[_event_trigger(model, dispatch.DATA_EVENT, {
                "config_path": p % "config_path", "input_path": p % "input_path",
                "query": p % "query", "ref": p % "ref"})],
            tags=["regrow", model], description=f"New data for {model}: score, check drift.")))
    else:  # data_arrived: retrain -> a policy-gated training request
        train_triggers.append(_event_trigger(model, dispatch.DATA_EVENT, {"request": {
            "config_path": p % "config_path", "reason": "new data arrived", "kind": "webhook",
            "ref": p % "ref", "actor": "event"}}))
    if cfg.serve.retrain_cron:
        out.append(Served(scheduled_retrain_flow, dict(
            name=f"scheduled-retrain-{model}", parameters={"config_path": path},
            cron=cfg.serve.retrain_cron, tags=["regrow", model],
            description=f"Scheduled retrain request for {model} (through the policy).")))
    return out


PAUSE_SECONDS = 5.0  # on the way out, how long `serve` tries to pause its deployments' schedules


def pause_schedules(deployment_ids: list[Any], seconds: float = PAUSE_SECONDS) -> str:
    """Pause the schedules of the deployments a stopping `serve` served, so that the server
    does not pile up runs nobody will start; give up after `seconds`. Returns what happened,
    as a sentence.

    Prefect's runner pauses them itself on shutdown (``pause_on_shutdown``), but on SIGTERM or
    Ctrl-C its pause ran inside the cancelled runner and never reached the server; with the
    server gone, it retried for about a minute before the process could end.
    """
    from prefect import get_client

    outcome: list[BaseException | None] = []

    def pause() -> None:
        try:
            with get_client(sync_client=True) as client:
                for deployment_id in deployment_ids:
                    client.pause_deployment(deployment_id)
            outcome.append(None)
        except Exception as err:  # noqa: BLE001 - reported below; the process ends anyway
            outcome.append(err)

    worker = threading.Thread(target=pause, name="regrow-pause-schedules", daemon=True)
    worker.start()
    worker.join(seconds)
    if outcome and outcome[0] is None:
        return f"paused the schedules of {len(deployment_ids)} deployments"
    why = (f"the Prefect API did not answer within {seconds:.0f} s" if not outcome else
           f"{type(outcome[0]).__name__}: {str(outcome[0]).splitlines()[0] if str(outcome[0]) else ''}")
    return f"deployments' schedules left as they were (not paused): {why}"


def serve_configs(paths: list[str], limit: int | None = None,
                  start_warm: Callable[[], bool] | None = None) -> None:
    """Create the notification automations and the deployments of every config and serve
    them until interrupted. `start_warm` (the runtime's `start_runs_warm`) makes the runs
    start as forks of a process that imported the stack once; it returns whether it did.

    Admitted retrains are dispatched as events from here on (``REGROW_DISPATCH=events``),
    so every training runs in its deployment, under its concurrency limit.

    Raises:
        regrow.flows.events.NotifySetupError: a config names a notification block that does
            not exist (nothing is served).
    """
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from regrow.configs.schema import load_config

    configs = [load_config(path) for path in paths]
    for loaded in configs:
        print(notify.describe_sync(loaded, notify.sync_automations(loaded)))
    os.environ["REGROW_DISPATCH"] = "events"
    warm = bool(start_warm and start_warm())
    # The runner is given the flows themselves (not only their deployments), so it starts a
    # run from the flow object instead of a `python -m prefect.engine` that loads it again.
    runner = Runner(limit=limit, pause_on_shutdown=False)  # paused below, bounded
    served = [d for loaded in configs for d in deployments_for(loaded)]
    ids = []
    if threading.current_thread() is threading.main_thread():  # until the runner sets its own
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for d in served:
            ids.append(runner.add_flow(d.flow, **d.options))
        print(f"serving {len(served)} deployments; runs start "
              + ("as forks of a process that has imported the ML stack" if warm
                 else "as fresh processes") + ":\n"
              + "\n".join(f"  {d.flow.name}/{d.options['name']}" for d in served), flush=True)
        asyncio.run(_run(runner))
    except (KeyboardInterrupt, TerminationSignal):
        pass
    finally:  # also on SystemExit, which Prefect's SIGTERM handler raises
        print(f"regrow serve: stopped; {pause_schedules(ids)}", flush=True)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


async def _run(runner: Any) -> None:
    """The runner until it stops. Its SIGTERM handler is replaced by `_exit_on_sigterm` once it
    is installed: Prefect's calls a stop that, inside the event loop, only makes a coroutine
    nobody awaits (a RuntimeWarning on every SIGTERM), then exits the same way."""
    import asyncio

    started = asyncio.ensure_future(runner.start())
    await asyncio.sleep(0)  # start() sets its handler before its first await
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    await started
