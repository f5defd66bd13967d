"""``regrow reproduce``: train a recorded run again from its recorded config, overrides and
seed, and compare the holdout metric with the original's.

A reproduction is an MLflow run in the model's experiment tagged ``regrow.reproduces``; it
registers no version, moves no alias and writes no ``training_runs`` row, so the retrain
policy never counts it as a training.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from prefect import flow

from flows import steps
from tasks import ingest as ing
from tasks import reproduce as rp
from tasks.provenance import Trigger
from tasks.registry import Registry
from tasks.settings import Settings
from tasks.store import Store

EXIT_DIFFERS, EXIT_BAD_INPUT = 1, 2


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


@flow(name="regrow-reproduce", log_prints=True)
def reproduce_flow(run_id: str, allow_data_change: bool = False,
                   tolerance: float = rp.DEFAULT_TOLERANCE, actor: str = "cli") -> ReproduceOutcome:
    """Train run `run_id` again and compare; never registers a version or moves an alias."""
    settings = Settings.from_env()
    registry = Registry(settings)
    plan = rp.plan(registry, run_id)
    ctx = steps.RunContext(plan.loaded, settings, registry, Store(settings.database_url),
                           Trigger("reproduce", f"reproduce run {run_id}", run_id, actor),
                           notes=list(plan.notes), record_training=False)
    ctx = steps.start_run(ctx)
    try:
        data = steps.ingest(ctx)
        changed = check_data(ctx, plan.run, data, allow_data_change)
        steps.validate(ctx, data)
        parts = steps.split(ctx, data)
        trained = steps.train(ctx, parts)
        evals = steps.evaluate(ctx, parts, trained, with_champion=False)
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


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.12g}"


def render(o: ReproduceOutcome) -> str:
    """The human summary of a reproduction."""
    c = o.comparison
    data = (f"CHANGED (allowed): recorded {o.fingerprint_recorded}, now {o.fingerprint_now}"
            if o.data_changed else f"unchanged, fingerprint {o.fingerprint_now}")
    lines = [f"model {o.model_name}: reproducing run {o.reproduces} as run {o.run_id}",
             f"config: {o.config_path} (as recorded), overrides {o.overrides or 'none'}, "
             f"seed {o.seed}",
             f"data: {data}",
             f"holdout {c.metric}: original {_num(c.original)}, reproduced {_num(c.reproduced)}, "
             f"difference {_num(c.difference)} (tolerance {c.tolerance:g})",
             "REPRODUCED" if c.ok else "NOT REPRODUCED: the difference exceeds the tolerance",
             "no version registered, no alias moved",
             f"MLflow: {o.tracking_uri} experiment {o.experiment_id}, run {o.run_id} "
             f"(tag regrow.reproduces={o.reproduces})"]
    lines += [f"note: {n}" for n in o.notes]
    return "\n".join(lines)


def resolve_run(target: str, version: str | None) -> str:
    """The run to reproduce: `target` itself, or the run of version `version` of the model
    configured in the file `target`.

    Raises:
        ReproduceError: no such version, or a config file given without a version.
        ConfigError: the config file is invalid.
    """
    from pathlib import Path

    from configs.schema import load_config

    if version is None:
        if Path(target).is_file():
            raise rp.ReproduceError(f"{target} is a file: to reproduce a version of its model, "
                                    "add --version N")
        return target
    name = load_config(target).config.registry.model_name
    return rp.run_for_version(Registry(Settings.from_env()), name, version)


def run_reproduce(target: str, version: str | None, *, allow_data_change: bool,
                  tolerance: float, as_json: bool) -> int:
    """Resolve and check the run, reproduce it, print the result. Returns the exit code:
    0 reproduced, 1 not reproduced, 2 bad input (unknown run or version, incomplete record,
    changed data without `allow_data_change`, invalid data)."""
    from flows.report import known_errors

    try:
        rp.check_tolerance(tolerance)
        run_id = resolve_run(target, version)
        rp.plan(Registry(Settings.from_env()), run_id)  # fail fast, before orchestration starts
        outcome = reproduce_flow(run_id, allow_data_change=allow_data_change, tolerance=tolerance)
    except (rp.ReproduceError, *known_errors()) as err:
        print(f"error: {err}", file=sys.stderr)
        if as_json:
            body = {"status": "failed", "error": str(err), "kind": type(err).__name__}
            if isinstance(err, rp.DataChanged):
                body.update(fingerprint_recorded=err.recorded, fingerprint_now=err.current)
            print(json.dumps(body))
        return EXIT_BAD_INPUT
    if as_json:
        print(json.dumps({**asdict(outcome), "reproduced": outcome.reproduced}, indent=2,
                         default=str))
    else:
        print(render(outcome))
    return 0 if outcome.reproduced else EXIT_DIFFERS
