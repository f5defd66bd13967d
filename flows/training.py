"""The training flow: ingest -> validate -> split -> features -> train -> evaluate -> gate ->
register."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import flow

from regrow.configs.schema import load_config
from regrow.flows import events as notify
from regrow.flows import pages, steps
from regrow.flows.approval import approval_for
from regrow.tasks.registry.mlflow_registry import Registry
from regrow.tasks.registry.provenance import Trigger
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings, lower_priority_for_training


class ConfigChanged(RuntimeError):
    """The config file is not the text the caller read (see `train_flow`'s `config_sha256`)."""


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run did, for the CLI and for callers."""

    model_name: str
    run_id: str
    experiment_id: str
    tracking_uri: str
    data: dict[str, Any]
    split: dict[str, Any]
    candidates: list[dict[str, Any]]
    best: str
    metric: str
    holdout: dict[str, Any]
    champion_holdout: dict[str, Any] | None
    decision: dict[str, Any]
    version: str
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    approval: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    seconds: float = 0.0  # from the flow body's start to its outcome


@flow(name="regrow-train", log_prints=True, flow_run_name=pages.train_run_name)
def train_flow(config_path: str, overrides: dict[str, Any] | None = None, trigger: str = "manual",
               reason: str = "", trigger_ref: str | None = None, actor: str = "cli",
               skip_unchanged: bool = False, config_sha256: str | None = None) -> TrainingOutcome:
    """Train candidates for one config and promote the winner if it passes the gate.

    With `skip_unchanged` (requests the retrain policy admitted) a run whose data and config
    are those the champion was trained on stops right after ingest, recorded as skipped.

    With `config_sha256` (a retrain request, which read the config already) the file, read
    with `overrides`, must still hash to it (`LoadedConfig.sha256`); otherwise the run fails
    before anything starts (`ConfigChanged`).

    The run ends ``Completed``, or ``Completed`` named ``Skipped`` or ``Rejected``
    (`flows.pages`); calling the flow returns the `TrainingOutcome` either way. A rejection, a
    promotion, a failure (and an approval it waits for) are announced as events
    (`flows.events`).
    """
    started = time.perf_counter()
    settings = Settings.from_env()
    lower_priority_for_training()  # yields the CPU to the receiver and servers (REGROW_TRAIN_NICE)
    loaded = load_config(config_path, overrides)
    if config_sha256 is not None and loaded.sha256 != config_sha256:
        raise ConfigChanged(f"{loaded.path} changed after this request read it (sha256 "
                            f"{config_sha256[:12]}... then, {loaded.sha256[:12]}... now); "
                            "nothing was trained: ask again")
    ctx = steps.RunContext(loaded, settings, Registry(settings), Store(settings.database_url),
                           Trigger(trigger, reason, trigger_ref, actor))
    ctx = steps.start_run(ctx)
    try:
        data = steps.ingest(ctx)
        skipped = steps.unchanged(ctx, data) if skip_unchanged else None
        if skipped:
            steps.close_run(ctx, skipped=skipped)
            return pages.training_state(_skipped(ctx, data, skipped,
                                                 time.perf_counter() - started))
        steps.validate(ctx, data)
        parts = steps.split(ctx, data)
        feats = steps.features(ctx, parts)
        trained = steps.train(ctx, parts, feats)
        evals = steps.evaluate(ctx, parts, trained, steps.baselines(ctx, parts))
        decision = steps.gate(ctx, evals)
        reg = steps.register(ctx, parts, trained, evals, decision)
        approval = approval_for(ctx, decision, reg, evals)
        reg = steps.promote(ctx, reg, decision, approval)
    except BaseException as err:
        steps.close_run(ctx, error=err)
        notify.training_failed(ctx, err)  # never raises: the error below is what counts
        raise
    steps.close_run(ctx, verdict=decision.verdict, version=reg.version)
    notify.training_done(ctx, decision, reg, evals, approval)
    return pages.training_state(dataclasses.replace(
        _outcome(ctx, data, parts, trained, evals, decision, reg),
        seconds=round(time.perf_counter() - started, 3)))


def _skipped(ctx, data, reason: str, seconds: float) -> TrainingOutcome:
    champion = ctx.registry.alias_version(ctx.model_name, steps.CHAMPION)
    return TrainingOutcome(
        model_name=ctx.model_name, run_id=ctx.run_id,
        experiment_id=ctx.registry.experiment_id(ctx.model_name),
        tracking_uri=ctx.settings.tracking_uri, data=data.summary(), split={}, candidates=[],
        best="", metric=ctx.loaded.config.gate.primary_metric, holdout={}, champion_holdout=None,
        decision={"verdict": "skipped", "rules": [], "reasons": [reason]}, version="",
        champion_before=champion, champion_after=champion, promoted=False,
        notes=[*ctx.notes, f"stopped after ingest, {seconds:.2f} s into the flow"], skipped=reason,
        seconds=round(seconds, 3))


def _outcome(ctx, data, parts, trained, evals, decision, reg) -> TrainingOutcome:
    d = steps.as_dict
    return TrainingOutcome(
        model_name=ctx.model_name, run_id=ctx.run_id,
        experiment_id=ctx.registry.experiment_id(ctx.model_name),
        tracking_uri=ctx.settings.tracking_uri, data=data.summary(), split=parts.summary(),
        candidates=d(trained.candidates), best=trained.best.name, metric=trained.metric,
        holdout=d(evals.candidate), champion_holdout=d(evals.champion),
        decision=decision.to_dict(), version=reg.version, champion_before=reg.champion_before,
        champion_after=reg.champion_after, promoted=reg.promoted, approval=reg.approval,
        notes=list(ctx.notes))
