"""``regrow reproduce``: train a recorded run again from its recorded config, overrides and
seed, and compare the holdout metric with the original's.

A reproduction is an MLflow run in the model's experiment tagged ``regrow.reproduces``; it
registers no version, moves no alias and writes no ``training_runs`` row, so the retrain
policy never counts it as a training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow

from regrow.flows import pages, steps
from regrow.tasks.data import ingest as ing
from regrow.tasks.registry import reproduce as rp
from regrow.tasks.registry.mlflow_registry import Registry
from regrow.tasks.registry.provenance import Trigger
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings, lower_priority_for_training


@dataclass(frozen=True)
class ReproduceOutcome:
    """What a reproduction found, for the CLI and for callers."""

    model_name: str
    run_id: str  # the reproduction's run
    reproduces: str  # the original run
    experiment_id: str
    tracking_uri: str
    config_path: str
    overrides: dict[str, Any]
    seed: int
    fingerprint_recorded: str
    fingerprint_now: str
    data_changed: bool
    comparison: rp.Comparison
    notes: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool:
        """True when the metric matched within the tolerance."""
        return self.comparison.ok


@steps.step("check-data")
def check_data(ctx: steps.RunContext, run: rp.RecordedRun, data: ing.IngestResult,
               allow_change: bool) -> bool:
    """Refuse changed data unless allowed; record both fingerprints on the run."""
    ctx.registry.set_tags(ctx.run_id, {"regrow.reproduce.recorded_fingerprint": run.fingerprint})
    changed = rp.check_data(run, data.fingerprint, allow_change)
    ctx.registry.set_tags(ctx.run_id, {"regrow.reproduce.data_changed": str(changed).lower()})
    if changed:
        ctx.notes.append(f"data changed (allowed): recorded fingerprint {run.fingerprint}, "
                         f"now {data.fingerprint}")
    return changed


@steps.step("compare")
def compare(ctx: steps.RunContext, plan: rp.Plan, evals: steps.Evaluations,
            tolerance: float) -> rp.Comparison:
    """Compare the holdout metric with the original run's; record the result on the run."""
    result = rp.compare(plan.metric, plan.original, evals.candidate.metrics.get(plan.metric),
                        tolerance)
    ctx.registry.set_tags(ctx.run_id, {"regrow.reproduce.verdict": result.verdict,
                                       "regrow.reproduce.tolerance": repr(tolerance)})
    ctx.registry.log_metrics(ctx.run_id, {f"original_holdout_{plan.metric}": plan.original,
                                          "reproduce_difference": result.difference})
    ctx.registry.log_dict(ctx.run_id, asdict(result), "reproduce/comparison.json")
    return result


@flow(name="regrow-reproduce", log_prints=True, flow_run_name=pages.reproduce_run_name)
def reproduce_flow(run_id: str, allow_data_change: bool = False,
                   tolerance: float = rp.DEFAULT_TOLERANCE, actor: str = "cli") -> ReproduceOutcome:
    """Train run `run_id` again and compare; never registers a version or moves an alias."""
    settings = Settings.from_env()
    lower_priority_for_training()
    registry = Registry(settings)
    plan = rp.plan(registry, run_id)
    model = plan.loaded.config.registry.model_name
    pages.rename(f"reproduce-{model}", model, "reproduce")
    ctx = steps.RunContext(plan.loaded, settings, registry, Store(settings.database_url),
                           Trigger("reproduce", f"reproduce run {run_id}", run_id, actor),
                           notes=list(plan.notes), record_training=False)
    ctx = steps.start_run(ctx)
    try:
        data = steps.ingest(ctx)
        changed = check_data(ctx, plan.run, data, allow_data_change)
        steps.validate(ctx, data)
        parts = steps.split(ctx, data)
        trained = steps.train(ctx, parts, steps.features(ctx, parts))
        evals = steps.evaluate(ctx, parts, trained)
        result = compare(ctx, plan, evals, tolerance)
    except BaseException as err:
        steps.close_run(ctx, error=err)
        raise
    steps.close_run(ctx, verdict=result.verdict)
    return ReproduceOutcome(
        model_name=ctx.model_name, run_id=ctx.run_id, reproduces=run_id,
        experiment_id=registry.experiment_id(ctx.model_name), tracking_uri=settings.tracking_uri,
        config_path=str(plan.loaded.path), overrides=plan.run.overrides,
        seed=plan.loaded.config.candidates.seed, fingerprint_recorded=plan.run.fingerprint or "",
        fingerprint_now=data.fingerprint, data_changed=changed, comparison=result,
        notes=list(ctx.notes))
