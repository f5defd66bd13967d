"""Deployments for each config, served by one process (`regrow serve`).

Each deployment is bound to its model's config when it is served (`flows.binding`: the
file's path and the sha256 of its text, handed to the run processes through the runner's
environment). No parameter names a file: a run trains, checks or scores the bound config,
refuses it when the file changed since (restart `regrow serve`), and refuses any parameter
besides the operator's choices below before a config is read: the run ends ``Failed``, naming
the parameter (an unknown key of the training's `TrainRequest` fails the flow's parameter
validation; an unknown top-level parameter ends the run process before that, and the runner's
``on_crashed`` hook, `_refuse_unknown_parameters`, says why).

Per model:
- ``train-<model>``: the policy-gated training flow. Its parameter is a typed `TrainRequest`,
  so the Prefect UI shows a form (reason, overrides). A run started from the UI asks the
  retrain policy like every other trigger; a run started by the ``regrow.retrain.admitted``
  event (a request the policy already admitted) trains directly. Concurrency limit 1,
  collision strategy from ``serve.collision_strategy``.
- ``drift-check-<model>``: on ``monitoring.schedule`` (cron); admitted retrains are dispatched as
  events, so training always runs in the training deployment.
- ``score-<model>``: scoring of a file or query (``serve.scoring_cron`` optional); also triggered
  by the ``regrow.data.arrived`` event.

Overrides from the form, an event or the API pass `check_external_inputs` (only the keys
the config's ``serve.allowed_overrides`` lists, a path inside ``data.source.allowed_paths``); a
served run's ``input_path`` must lie inside those folders and its ``query`` is refused (SQL
never comes from outside a config). The flows share their bodies with the command
line's (`flows.monitoring`), which take a config path instead.
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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from regrow.flows import binding, dispatch, pages
from regrow.flows import events as notify

# The ML stack (pandas, scikit-learn, MLflow, ...) is imported inside the flows: with
# ``REGROW_WARM=off`` a deployment run starts as a fresh process that imports this module
# first, and the time until the run shows Running is that import.


class TrainRequest(BaseModel):
    """A training request as the Prefect UI form and the event trigger fill it. It names no
    config: the deployment trains the one it was served with. Any other key (``config_path``
    among them) fails the run's parameter validation, with a sentence naming it."""

    model_config = ConfigDict(extra="forbid")

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

    @model_validator(mode="before")
    @classmethod
    def _only_known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                raise ValueError(
                    f"{', '.join(unknown)}: not a parameter of a served training; a served "
                    "deployment trains only the config `regrow serve` bound to it, and takes "
                    f"only {', '.join(cls.model_fields)}")
        return data


class TrainingFailed(RuntimeError):
    """The admitted training failed; the champion did not move."""


def _checked(outcome: Any) -> Any:
    if outcome.error:  # the flow run must show Failed, not Completed
        raise TrainingFailed(f"training for request #{outcome.request_id} failed: {outcome.error}")
    return outcome


async def _refuse_unknown_parameters(flow: Any, flow_run: Any, state: Any) -> None:
    """An ``on_crashed`` hook, run by the runner: a run whose top-level parameters are not all
    the flow's ends before its process gets as far as validating them (Prefect cannot bind
    them to the function: ``SignatureMismatchError``), as ``Crashed`` with a message that names
    nothing. It is set ``Failed`` instead, with a sentence naming the parameters refused."""
    import inspect

    from prefect import get_client
    from prefect.states import Failed

    known = list(inspect.signature(flow.fn).parameters)
    unknown = sorted(str(k) for k in (flow_run.parameters or {}) if k not in known)
    if not unknown:
        return
    async with get_client() as client:
        await client.set_flow_run_state(flow_run.id, Failed(message=(
            f"Parameters refused before the run started: {', '.join(unknown)}: not a "
            f"parameter of a served {flow.name} run; a served deployment runs only the config "
            f"`regrow serve` bound to it, and takes only {', '.join(known)}")), force=True)


def _bound_env(overrides: dict[str, Any] | None) -> Any:
    """The run's environment on the deployment's bound config (read once, its hash checked),
    with the operator's `overrides` when the config allows them from outside.

    Raises:
        regrow.flows.binding.NotBound, regrow.flows.binding.ConfigChanged: see
            `binding.load_bound`.
        regrow.configs.schema.OverrideRefused: keys the config does not allow from outside.
    """
    from regrow.configs.schema import check_external_inputs
    from regrow.flows.model_env import Env

    base = binding.load_bound()
    check_external_inputs(base, overrides)
    return Env.of(base.with_overrides(overrides) if overrides else base)


def _outside_input(env: Any, input_path: str | None, query: str | None) -> str | None:
    """A served run's input file from outside, resolved inside data.source.allowed_paths.

    Raises:
        regrow.configs.schema.PathRefused: the path lies outside the allowed folders.
        regrow.configs.schema.ConfigError: a query was given (SQL never comes from outside).
    """
    from regrow.configs.schema import ConfigError, check_external_path

    if query:
        raise ConfigError("query refused: SQL never comes from outside a config (Prefect UI "
                          "form, events); give input_path inside data.source.allowed_paths, "
                          "or set the config's data.source.params through overrides")
    if not input_path:
        return None
    return str(check_external_path(env.loaded, input_path, "input_path"))


@flow(name="regrow-train-request", log_prints=True, flow_run_name=pages.request_run_name,
      on_crashed=[_refuse_unknown_parameters])
def train_request_flow(request: TrainRequest) -> Any:
    """Train for a request: admitted ones directly, new ones (UI) through the policy first.
    Ends ``Refused``, ``Skipped`` or ``Rejected`` when nothing was promoted (`flows.pages`)."""
    return pages.retrain_state(_train_request(request))


def _fail_admitted(request_id: int) -> None:
    """Mark an admitted request failed when its run cannot even start its training."""
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    store = Store(Settings.from_env().database_url)
    try:
        policy.mark_request(store, request_id, "failed")
    finally:
        store.dispose()


def _train_request(request: TrainRequest) -> Any:
    from regrow.flows.monitoring import RetrainOutcome, execute_request
    from regrow.tasks.policy import retrain as policy
    # The bound config is read once; overrides from the form or an event come from outside:
    # only the keys the config allows. A changed file or refused overrides fail the run (and
    # its admitted request) before anything else happens.
    try:
        env = _bound_env(request.overrides)
    except Exception:
        if request.request_id is not None:
            _fail_admitted(request.request_id)
        raise
    if request.request_id is not None:
        state = policy.request_state(env.store, request.request_id)
        if state != "admitted":  # a repeated event: this request is running or done already
            detail = f"request #{request.request_id} is {state or 'unknown'}; not training again"
            print(detail)
            return RetrainOutcome(request.request_id, policy.COALESCED, detail)
        answer = policy.PolicyVerdict(request.request_id, policy.ADMITTED, "admitted earlier")
        return _checked(execute_request(env, answer, kind=request.kind, reason=request.reason,
                                        ref=request.ref or None,
                                        overrides=request.overrides or None, actor=request.actor))
    answer = notify.request_retrain(env.store, env.model, env.loaded.config.retrain,
                                    kind=request.kind, reason=request.reason,
                                    ref=request.ref or None)
    if not answer.admitted:
        print(f"retrain request #{answer.request_id}: {answer.verdict} -- {answer.detail}")
        return RetrainOutcome(answer.request_id, answer.verdict, answer.detail)
    return _checked(execute_request(env, answer, kind=request.kind, reason=request.reason,
                                    ref=request.ref or None, overrides=request.overrides or None,
                                    actor=request.actor))


@flow(name="regrow-drift-check", log_prints=True, flow_run_name=pages.drift_run_name,
      on_crashed=[_refuse_unknown_parameters])
def served_drift_check_flow(overrides: dict[str, Any] | None = None) -> Any:
    """Drift check of the bound config's champion (`flows.monitoring.drift_check`); a
    persistent degradation asks the policy for a retrain, dispatched as an event."""
    from regrow.flows.monitoring import drift_check

    return drift_check(_bound_env(overrides), overrides or None)


@flow(name="regrow-score", log_prints=True, flow_run_name=pages.score_run_name,
      on_crashed=[_refuse_unknown_parameters])
def served_score_flow(input_path: str | None = None, query: str | None = None,
                      overrides: dict[str, Any] | None = None) -> Any:
    """Score new rows (a CSV/Parquet file, or a query on the bound config's SQL source) with
    the champion and log the predictions (`flows.monitoring.score`)."""
    from regrow.flows.monitoring import score

    env = _bound_env(overrides)
    return score(env, _outside_input(env, input_path, query), None)


@flow(name="regrow-data-arrived", log_prints=True,
      flow_run_name=pages.data_arrived_run_name,
      on_crashed=[_refuse_unknown_parameters])
def data_arrived_flow(input_path: str | None = None, query: str | None = None,
                      ref: str = "") -> Any:
    """New data landed: score it with the champion (when a source is named), then check drift;
    a persistent drift asks the policy for a retrain like any check."""
    from regrow.flows.monitoring import drift_check, score

    env = _bound_env(None)
    if input_path or query:
        result = score(env, _outside_input(env, input_path, query), None)
        print(f"scored {result.rows} rows with v{result.version} ({ref})")
    return drift_check(env)


@flow(name="regrow-scheduled-retrain", log_prints=True,
      flow_run_name=pages.scheduled_retrain_run_name,
      on_crashed=[_refuse_unknown_parameters])
def scheduled_retrain_flow(reason: str = "scheduled retrain") -> Any:
    """A schedule's retrain request for the bound config, through the policy like every
    trigger."""
    from regrow.flows.monitoring import run_request

    return pages.retrain_state(run_request(_bound_env(None), kind="schedule", reason=reason,
                                           ref=None, overrides=None, actor="schedule"))


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
    """The deployments of one config (each to be bound to it: `bindings_for`)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    cfg = loaded.config
    model = cfg.registry.model_name
    strategy = ConcurrencyLimitStrategy.ENQUEUE if cfg.serve.collision_strategy == "enqueue" \
        else ConcurrencyLimitStrategy.CANCEL_NEW
    p = "{{ event.payload.%s }}"
    train_triggers = [_event_trigger(model, dispatch.ADMITTED_EVENT, {"request": {
        "reason": p % "reason", "kind": p % "kind", "request_id": p % "request_id",
        "ref": p % "ref", "overrides": p % "overrides", "actor": "event"}})]
    out = [
        Served(train_request_flow, dict(
            name=f"train-{model}", parameters={"request": {}},
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
            triggers=train_triggers, tags=["regrow", model],
            description=f"Train {model} (through the retrain policy).")),
        Served(served_drift_check_flow, dict(
            name=f"drift-check-{model}", parameters={},
            cron=cfg.monitoring.schedule, tags=["regrow", model],
            description=f"Drift check of {model}'s champion; asks for retrains by event.")),
        Served(served_score_flow, dict(
            name=f"score-{model}", parameters={},
            cron=cfg.serve.scoring_cron, tags=["regrow", model],
            description=f"Score new rows with {model}'s champion.")),
    ]
    if cfg.serve.data_arrived == "score_and_check":
        out.append(Served(data_arrived_flow, dict(
            name=f"data-arrived-{model}", parameters={},
            triggers=[_event_trigger(model, dispatch.DATA_EVENT, {
                "input_path": p % "input_path", "query": p % "query", "ref": p % "ref"})],
            tags=["regrow", model], description=f"New data for {model}: score, check drift.")))
    else:  # data_arrived: retrain -> a policy-gated training request
        train_triggers.append(_event_trigger(model, dispatch.DATA_EVENT, {"request": {
            "reason": "new data arrived", "kind": "webhook", "ref": p % "ref",
            "actor": "event"}}))
    if cfg.serve.retrain_cron:
        out.append(Served(scheduled_retrain_flow, dict(
            name=f"scheduled-retrain-{model}", parameters={},
            cron=cfg.serve.retrain_cron, tags=["regrow", model],
            description=f"Scheduled retrain request for {model} (through the policy).")))
    return out


class DuplicateModel(ValueError):
    """Two configs given to `serve` name the same model."""


def bindings_for(configs: list[Any]) -> dict[str, Any]:
    """Deployment name -> the loaded config it runs, for every deployment of `configs`.

    Raises:
        DuplicateModel: two configs name the same model (their deployments would share names).
    """
    out: dict[str, Any] = {}
    for loaded in configs:
        for d in deployments_for(loaded):
            other = out.get(d.options["name"])
            if other is not None and other.path != loaded.path:
                raise DuplicateModel(f"{loaded.path} and {other.path} both name model "
                                 f"{loaded.config.registry.model_name!r}; serve one of them")
            out[d.options["name"]] = loaded
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
    so every training runs in its deployment, under its concurrency limit. Every deployment is
    bound to its config as read here (``REGROW_SERVED_CONFIGS``, `flows.binding`): a config
    file edited later is refused by the runs until `serve` starts again.

    Raises:
        regrow.flows.events.NotifySetupError: a config names a notification block that does
            not exist (nothing is served).
        DuplicateModel: two configs name the same model (nothing is served).
    """
    import asyncio

    from prefect.exceptions import TerminationSignal
    from prefect.runner import Runner

    from regrow.configs.schema import load_config

    configs = [load_config(path) for path in paths]
    bound = bindings_for(configs)
    for loaded in configs:
        print(notify.describe_sync(loaded, notify.sync_automations(loaded)))
    os.environ["REGROW_DISPATCH"] = "events"
    # Each deployment runs the config (path and sha256) read just now: the run processes
    # inherit this process's environment (flows.binding).
    binding.bind(bound)
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


class PoolMissing(ValueError):
    """`deploy` was given a work pool the Prefect server does not have."""


def deploy_configs(paths: list[str], pool: str, create_pool: bool = False) -> list[str]:
    """Create (or update) every config's deployments on a Prefect work pool, for workers to
    run (``prefect worker start --pool POOL``, on this machine or others): the same deployments
    `serve` serves, with their schedules, triggers and concurrency limits, and the notification
    automations. Returns the deployments' names.

    Each deployment's entrypoint is its flow's module path (``regrow.flows.serve.<flow>``), so a
    worker needs regrow installed, not a checkout at a given path. Each is bound to its config
    through its ``job_variables.env`` (``REGROW_SERVED_CONFIGS``: path and sha256 of the file as
    read here, `flows.binding`), with ``REGROW_DISPATCH=events``: a worker must see the config
    at the same path, unchanged (deploy again after editing it). The rest of a run's
    environment (``REGROW_DATABASE_URL``, ``MLFLOW_TRACKING_URI``, ...) is the worker's.

    Raises:
        PoolMissing: the pool does not exist and `create_pool` is false.
        regrow.flows.events.NotifySetupError, DuplicateModel: as for `serve_configs`.
    """
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound

    from regrow.configs.schema import load_config

    configs = [load_config(path) for path in paths]
    bound = bindings_for(configs)
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            if not create_pool:
                raise PoolMissing(
                    f"the Prefect server has no work pool {pool!r}: create it (`prefect "
                    f"work-pool create {pool} --type process`) or pass --create-pool") from None
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    for loaded in configs:
        print(notify.describe_sync(loaded, notify.sync_automations(loaded)))
    names = []
    for loaded in configs:
        for d in deployments_for(loaded):
            name = d.options["name"]
            options = {k: v for k, v in d.options.items() if k != "name"}
            env = {binding.ENV: binding.encode({name: bound[name]}), "REGROW_DISPATCH": "events"}
            deployment = d.flow.to_deployment(
                name, entrypoint_type=EntrypointType.MODULE_PATH, work_pool_name=pool,
                job_variables={"env": env}, **options)
            deployment.apply(work_pool_name=pool)
            names.append(f"{d.flow.name}/{name}")
    return names


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
