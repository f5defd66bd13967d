"""How runs read in the Prefect UI: names, tags and end states.

- **Names**: ``train-<model>-<trigger>``, ``retrain-<model>-<kind>``, ``drift-check-<model>``,
  ``score-<model>``, ``data-arrived-<model>``, ``reproduce-<model>``; computed by the
  ``flow_run_name`` callables below from the run's parameters (config and overrides), or for
  a served run from the config its deployment is bound to (`flows.binding`), so a subflow is
  named like a top-level run.
- **Tags**: ``model:<name>`` and ``trigger:<kind>`` on every run, added by the same callables
  (the run exists by then; tags given at creation, e.g. a deployment's, are kept).
- **End states**: a flow that did its job but changed nothing ends ``Completed`` with a name
  -- ``Rejected`` (the gate or a person said no), ``Skipped`` (unchanged data and config),
  ``Refused`` (the retrain policy said no) -- so they tell apart in the runs list. The state
  carries the outcome object as its data: calling the flow still returns the outcome.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from regrow.flows import binding

REJECTED, SKIPPED, REFUSED, NO_GAIN = "Rejected", "Skipped", "Refused", "No gain"


def _parameters() -> dict[str, Any]:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return dict(ctx.parameters or {}) if ctx is not None else {}


def model_of(config_path: Any, overrides: Any = None) -> str:
    """The model a config names (with its overrides); the file's stem when it cannot be read
    (the flow body then reports the config error itself)."""
    from regrow.configs.schema import load_config

    try:
        return load_config(str(config_path), dict(overrides or {})).config.registry.model_name
    except Exception:  # noqa: BLE001 - a name never fails a run
        return Path(str(config_path or "unknown")).stem or "unknown"


def _how_started() -> str:
    """Trigger kind of a run that has no trigger parameter: schedule, deployment, subflow or
    manual."""
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is None:
        return "manual"
    if run.deployment_id is not None:
        return "schedule" if run.auto_scheduled else "deployment"
    return "subflow" if run.parent_task_run_id is not None else "manual"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-") or "unknown"


def label(name: str, model: str, kind: str) -> str:
    """Tag the current flow run with ``model:<model>`` and ``trigger:<kind>``; returns `name`.

    Never fails the run: a tag that cannot be written is left out.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx is not None else None
    if run is not None:
        tags = sorted({*(run.tags or []), f"model:{model}", f"trigger:{kind}"})
        try:
            with get_client(sync_client=True) as client:
                client.update_flow_run(run.id, tags=tags)
            run.tags = tags
        except Exception:  # noqa: BLE001 - cosmetic
            pass
    return name


def rename(name: str, model: str, kind: str) -> None:
    """Rename and tag the current flow run from inside its body (when the model is known only
    there, as for a reproduction)."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_name(ctx.flow_run.id, name)
        ctx.flow_run.name = name
    except Exception:  # noqa: BLE001 - cosmetic
        pass
    label(name, model, kind)


# ------------------------------------------------------------------ flow_run_name callables

def train_run_name() -> str:
    """``train-<model>-<trigger>``."""
    p = _parameters()
    model, kind = model_of(p.get("config_path"), p.get("overrides")), _slug(p.get("trigger", "manual"))
    return label(f"train-{model}-{kind}", model, kind)


def retrain_run_name() -> str:
    """``retrain-<model>-<kind>`` for a request through the policy."""
    p = _parameters()
    model, kind = model_of(p.get("config_path"), p.get("overrides")), _slug(p.get("kind", "manual"))
    return label(f"retrain-{model}-{kind}", model, kind)


def _model(p: dict[str, Any]) -> str:
    """The model of a run: from its config path and overrides (the command line's flows), else
    the config its deployment was bound to (served flows name no file: `flows.binding`)."""
    if "config_path" in p:
        return model_of(p.get("config_path"), p.get("overrides"))
    return binding.bound_model()


def request_run_name() -> str:
    """``retrain-<model>-<kind>`` for a served training request (UI form or event)."""
    request = _parameters().get("request")
    get = (request.get if isinstance(request, dict)
           else lambda key, default=None: getattr(request, key, default))
    model = binding.bound_model()
    kind = _slug(get("kind", "ui") or "ui")
    return label(f"retrain-{model}-{kind}", model, kind)


def scheduled_retrain_run_name() -> str:
    """``retrain-<model>-schedule``."""
    model = binding.bound_model()
    return label(f"retrain-{model}-schedule", model, "schedule")


def drift_run_name() -> str:
    """``drift-check-<model>``."""
    model = _model(_parameters())
    return label(f"drift-check-{model}", model, _how_started())


def score_run_name() -> str:
    """``score-<model>``."""
    model = _model(_parameters())
    return label(f"score-{model}", model, _how_started())


def data_arrived_run_name() -> str:
    """``data-arrived-<model>``."""
    model = binding.bound_model()
    return label(f"data-arrived-{model}", model, "event")


def reproduce_run_name() -> str:
    """``reproduce-<run id prefix>`` until the body knows the model (see `rename`)."""
    return f"reproduce-{str(_parameters().get('run_id', ''))[:8] or 'run'}"


# --------------------------------------------------------------------------- end states

def _completed(name: str, outcome: Any, message: str) -> Any:
    from prefect.states import Completed

    return Completed(name=name, data=outcome, message=message[:500])


def training_state(outcome: Any) -> Any:
    """The end state of a training: ``Skipped``, ``Rejected`` (by the gate, or a person or
    the approval timeout), ``No gain`` (not significantly better than the champion, which
    stays), or plain ``Completed`` (promoted, or passed and waiting)."""
    if outcome.skipped:
        return _completed(SKIPPED, outcome, outcome.skipped)
    verdict = outcome.decision.get("verdict")
    if verdict == "no_gain":
        return _completed(NO_GAIN, outcome, "no gain: champion v{} stays; v{} {}".format(
            outcome.champion_after, outcome.version,
            "; ".join(outcome.decision.get("reasons", []))))
    if verdict == "reject":
        return _completed(REJECTED, outcome, "gate rejected v{}: {}".format(
            outcome.version, "; ".join(outcome.decision.get("reasons", []))))
    approval = outcome.approval or {}
    if approval and not approval.get("approved"):
        return _completed(REJECTED, outcome, f"promotion of v{outcome.version} rejected by "
                          f"{approval.get('approver')}: {approval.get('reason')}")
    return outcome


def retrain_state(outcome: Any) -> Any:
    """The end state of a retrain request: ``Refused`` when the policy said no (cooling_down,
    over_budget, coalesced, circuit_open), else that of the training it ran."""
    if outcome.training is None and outcome.error is None and outcome.dispatched is None:
        return _completed(REFUSED, outcome, f"request #{outcome.request_id}: {outcome.verdict} "
                          f"-- {outcome.detail}")
    if outcome.training is not None:
        state = training_state(outcome.training)
        if state is not outcome.training:
            return _completed(state.name, outcome, state.message or "")
    return outcome


def artifact_key(kind: str, model: str) -> str:
    """A Prefect artifact key ``<kind>-<model>``: lowercase letters, digits and dashes."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", f"{kind}-{model}".lower())).strip("-")


def publish_fleet(store: Any, home: Path) -> str | None:
    """Create (or refresh) the ``regrow-fleet`` table artifact: every model of the store, one
    row each, those needing a person first -- the table `regrow status` prints without a
    config (`tasks.store.fleet`). Never fails the run: returns why it was left out, or None.
    """
    import logging

    from prefect.artifacts import create_table_artifact

    from regrow.tasks.policy.untrusted import markdown, visible
    from regrow.tasks.store import fleet as fl

    try:
        view = fl.collect(store, home)
        rows = [{**{h: visible(c) for h, c in zip(fl.HEADERS, fl.cells(m), strict=True)},
                 "why": visible("; ".join(f"{n['code']}: {n['detail']}"
                                        for n in m.needs_person) or "-")}
                for m in view.models]
        need = [markdown(m.model) for m in view.models if m.needs_person]
        create_table_artifact(
            key=fl.ARTIFACT_KEY, table=rows,
            description=f"{len(rows)} model(s) as of {view.generated_at}; "
            + (f"{len(need)} need a person: {', '.join(need)}" if need
               else "none needs a person")
            + " (champions as the alias history records them)")
    except Exception as err:  # noqa: BLE001 - the check's own outcome is what counts
        why = f"fleet artifact not refreshed: {type(err).__name__}: {err}"
        logging.getLogger("regrow.pages").warning(why)
        return why
    return None
