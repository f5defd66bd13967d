"""Prefect task wrappers: each calls one plain function from `tasks/` and records its result.

Tasks skip Prefect's input hashing (``NO_CACHE``): hashing a large frame costs more than the
step itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from regrow.configs.schema import LoadedConfig, masked_overrides
from regrow.flows import events as notify
from regrow.flows import pages
from regrow.flows.progress import say, timed
from regrow.tasks.data import degenerate
from regrow.tasks.data import features as fe
from regrow.tasks.data import ingest as ing
from regrow.tasks.data import validate as va
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model import gate as gt
from regrow.tasks.model import train as tr
from regrow.tasks.model import trusted as ts
from regrow.tasks.model.imports import config_folder, import_listed
from regrow.tasks.monitoring.reference import build_reference
from regrow.tasks.monitoring.scoring import label_text
from regrow.tasks.policy.lease import PROMOTED_CRASHED, Heartbeat, lease_seconds, reap
from regrow.tasks.policy.retrain import BAD_REQUEST
from regrow.tasks.policy.untrusted import markdown
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import challenger
from regrow.tasks.registry.card import publish_card
from regrow.tasks.registry.governance import (
    alias_section,
    clear_challenger,
    move_alias,
    reconcile_orphans,
)
from regrow.tasks.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    Registry,
    load_trusted_set,
    log_reference,
    log_trusted_set,
)
from regrow.tasks.registry.provenance import Trigger, git_commit, package_version
from regrow.tasks.store.database import Store
from regrow.tasks.store.settings import Settings


class ValidationFailed(RuntimeError):
    """The batch broke expectations; training did not start."""

    def __init__(self, report: va.ValidationReport, run_id: str = ""):
        self.report = report
        where = f"\nfull report: MLflow run {run_id}, artifact validation/report.md" if run_id else ""
        super().__init__(f"validation failed: {len(report.failed)} of {len(report.outcomes)} "
                         f"expectations not met; training did not run\n"
                         f"{report.describe_failures()}{where}")


@dataclass
class RunContext:
    """Everything the steps of one training run share."""

    loaded: LoadedConfig
    settings: Settings
    registry: Registry
    store: Store
    trigger: Trigger
    run_id: str = ""
    row_id: int = 0
    notes: list[str] = field(default_factory=list)
    # False for reproductions: no training_runs row (the retrain policy must not count them)
    # and no alias bookkeeping
    record_training: bool = True
    lease: Heartbeat | None = None

    @property
    def model_name(self) -> str:
        """The registered model's name."""
        return self.loaded.config.registry.model_name


PAUSE_ENV = "REGROW_TEST_PAUSE_AT"


def pause_point(name: str) -> None:
    """Test-only: hold the run at a named point so a fault test can kill it there.

    With ``REGROW_TEST_PAUSE_AT=<name>`` the run writes ``$REGROW_HOME/paused-at-<name>`` and
    sleeps (up to ``REGROW_TEST_PAUSE_SECONDS``, 600 by default). Unset in production.
    Points: ingest, train, log_model, registered (the version exists and is noted on the
    training record), alias (before champion moves), promoted (after champion moved).
    """
    if os.environ.get(PAUSE_ENV) != name:
        return
    marker = Settings.from_env().home / f"paused-at-{name}"
    partial = marker.with_name(f".{marker.name}.{os.getpid()}")
    partial.write_text(str(os.getpid()))
    os.replace(partial, marker)  # appears whole: a test waiting for it never reads it empty
    time.sleep(float(os.environ.get("REGROW_TEST_PAUSE_SECONDS", "600")))


def step(name: str):
    """A Prefect task without input hashing or result persistence, run with native threads
    capped at the config's `candidates.threads` (its first argument carries the config), and
    with the config's folder as the one place besides the installed environment where the
    modules it lists are found (`tasks.model.imports.config_folder`)."""

    def wrap(fn):
        @functools.wraps(fn)
        def capped(first, *args, **kwargs):
            loaded = getattr(first, "loaded", None)
            if loaded is None:
                return fn(first, *args, **kwargs)
            with tr.native_threads(loaded.config), config_folder(loaded.path.parent):
                return fn(first, *args, **kwargs)

        return task(name=name, cache_policy=NO_CACHE, persist_result=False)(capped)

    return wrap


@step("start-run")
def start_run(ctx: RunContext) -> RunContext:
    """Open the MLflow run and the training record, with provenance tags."""
    cfg = ctx.loaded.config
    tags = {**ctx.trigger.tags(), "regrow.config_sha256": ctx.loaded.sha256,
            "regrow.config_path": str(ctx.loaded.path), "regrow.version": package_version(),
            "regrow.git_commit": git_commit() or "unknown", "regrow.seed": cfg.candidates.seed}
    kind = ctx.trigger.kind
    ctx.run_id = ctx.registry.start_run(ctx.model_name, f"reproduce-{ctx.model_name}"
                                        if kind == "reproduce" else
                                        f"train-{ctx.model_name}-{kind}", tags)
    say("start", f"{ctx.model_name}: MLflow run {ctx.run_id} (trigger {kind}"
        + (f": {ctx.trigger.reason}" if ctx.trigger.reason else "") + ")")
    try:
        # As written (``${VAR}`` references kept), literal URL credentials masked: the
        # artifacts are readable by anyone who can read the run. `regrow reproduce` puts a
        # masked URL back from the config file when the file still holds it.
        ctx.registry.log_text(ctx.run_id, ctx.loaded.recorded_text, "config/config.yaml")
        # The overrides on their own too, so `regrow reproduce` need not parse them out of the text.
        ctx.registry.log_dict(ctx.run_id, masked_overrides(ctx.loaded.overrides),
                              "config/overrides.json")
        if ctx.record_training:  # a reproduction leaves the training and alias records alone
            with alias_section(ctx.registry, ctx.store, ctx.model_name, "regrow train") as found:
                ctx.notes.extend(f"alias moved outside regrow, now recorded: {m.describe()}"
                                 for m in found)
            _close_crashed(ctx)
            seconds = lease_seconds()
            # the record and its lease in one transaction: a crash cannot leave one without the other
            ctx.row_id = ctx.store.start_training(ctx.model_name, ctx.trigger.kind,
                                                  ctx.trigger.reason, ctx.run_id, seconds)
    except BaseException as err:
        close_run(ctx, error=err)
        raise
    if ctx.record_training:
        ctx.lease = Heartbeat(ctx.store, f"training:{ctx.row_id}", ctx.model_name, seconds)
        ctx.lease.start(written=True)
    return ctx


def _close_crashed(ctx: RunContext) -> None:
    """Reconcile what earlier trainings of the model left behind: record those whose process
    died (`reap`); end every MLflow run a closed record left RUNNING (a crash, or MLflow down
    when the run closed), FAILED unless the record finished; tag versions registered by a
    training that then failed as orphans (`reconcile_orphans`: never promoted)."""
    reap(ctx.store, ctx.model_name)
    running = ctx.registry.running_runs(ctx.model_name)
    for row in ctx.store.training_runs(ctx.model_name, 20):
        if row["run_id"] not in running or row["run_id"] == ctx.run_id \
                or row["status"] == "running":
            continue
        ctx.registry.set_tags(row["run_id"], {"regrow.status": row["status"],
                                              "regrow.error": row["detail"]})
        ctx.registry.end_run(row["run_id"], "FINISHED" if row["status"] in ("finished", "skipped")
                             else "FAILED")
        if row["status"] in ("crashed", PROMOTED_CRASHED):
            notify.training_crashed(ctx, row)  # told once: the run is closed from now on
    ctx.notes.extend(reconcile_orphans(ctx.registry, ctx.store, ctx.model_name))


@step("ingest")
def ingest(ctx: RunContext) -> ing.IngestResult:
    """Read the source and record its fingerprint on the run."""
    pause_point("ingest")
    with timed("ingest", "reading the data") as done:
        result = ing.ingest(ctx.loaded)
        ctx.registry.set_tags(ctx.run_id, {f"regrow.data.{k}": v
                                           for k, v in result.summary().items()})
        ctx.registry.log_metrics(ctx.run_id, {"data_rows": result.rows})
        ctx.registry.log_dataset(
            ctx.run_id, name=f"{ctx.model_name}-{os.path.basename(result.source) or 'data'}",
            fingerprint=result.fingerprint, source=result.source, sample=result.frame.head(100),
            profile={"rows": result.rows, "columns": result.frame.shape[1],
                     "time_min": result.time_min, "time_max": result.time_max})
        span = f", {result.time_min} .. {result.time_max}" if result.time_min else ""
        done.text = f"{result.rows:,} rows, fingerprint {result.fingerprint[:12]}{span}"
    return result


@step("check-unchanged")
def unchanged(ctx: RunContext, data: ing.IngestResult) -> str | None:
    """Why this run need not train: the ingested data and the config are exactly those the
    champion was trained on (its run's fingerprint and config sha256). None when they differ
    or nothing serves yet."""
    version = ctx.registry.alias_version(ctx.model_name, CHAMPION)
    if version is None:
        return None
    run_id = ctx.registry.version_info(ctx.model_name, version).run_id
    tags = ctx.registry.run_info(run_id)["tags"] if run_id else {}
    if (tags.get("regrow.data.fingerprint") != data.fingerprint
            or tags.get("regrow.config_sha256") != ctx.loaded.sha256):
        return None
    reason = (f"unchanged: data fingerprint {data.fingerprint[:12]} and config sha256 "
              f"{ctx.loaded.sha256[:12]} are those champion v{version} was trained on (run "
              f"{run_id}); nothing to retrain")
    say("skip", reason)
    return reason


@step("validate")
def validate(ctx: RunContext, data: ing.IngestResult) -> va.ValidationReport:
    """Run the expectations; stop the run before training when any fails."""
    with timed("validate") as done:
        report = va.validate(ctx.loaded.config, data.frame)
        ctx.registry.log_dict(ctx.run_id, report.to_dict(), "validation/report.json")
        ctx.registry.set_tags(ctx.run_id, {"regrow.validation": "passed" if report.success
                                           else "failed"})
        met, total = len(report.outcomes) - len(report.failed), len(report.outcomes)
        done.text = f"{met}/{total} expectations met on {report.rows:,} rows"
    if not report.success:
        failed = ", ".join(f"{o.expectation}" + (f" [{o.column}]" if o.column else "")
                           for o in report.failed)
        say("validate", f"{len(report.failed)} of {total} expectations failed: {failed}; "
            "training will not run")
        ctx.registry.log_text(ctx.run_id, report.to_markdown(), "validation/report.md")
        create_markdown_artifact(markdown=f"# Validation failed: {ctx.model_name}\n\n"
                                 + report.to_markdown(),
                                 key=pages.artifact_key("validation", ctx.model_name),
                                 description="Expectations that failed; training did not run.")
        raise ValidationFailed(report, ctx.run_id)
    ctx.notes.extend(_degenerate_features(ctx, data))
    return report


def _degenerate_features(ctx: RunContext, data: ing.IngestResult) -> list[str]:
    """Stop on a feature column that is empty or constant where the champion's was not
    (`tasks.data.degenerate`); the champion's column table is read from its run."""
    version = features_json = None
    try:
        version = ctx.registry.alias_version(ctx.model_name, CHAMPION)
        run_id = ctx.registry.version_info(ctx.model_name, version).run_id if version else None
        features_json = ctx.registry.read_json_artifact(run_id, "features.json") if run_id \
            else None
    except Exception as err:  # noqa: BLE001 - judged without the champion's record, and said
        ctx.notes.append(f"the champion's feature statistics could not be read "
                         f"({_first_line(err)}); empty features were checked against the "
                         "config only")
    try:
        return degenerate.check(ctx.loaded.config, data.frame, version, features_json)
    except degenerate.DegenerateFeature as err:
        say("validate", str(err))
        ctx.registry.set_tags(ctx.run_id, {"regrow.validation": "failed"})
        raise


@step("split")
def split(ctx: RunContext, data: ing.IngestResult) -> tr.SplitResult:
    """Time-based or random holdout."""
    parts = tr.split(ctx.loaded.config, data.frame)
    ctx.registry.log_params(ctx.run_id, {f"split.{k}": v for k, v in parts.summary().items()})
    how = parts.method + (f", cutoff {parts.cutoff}" if parts.cutoff else "")
    say("split", f"{len(parts.train):,} train / {len(parts.holdout):,} holdout rows ({how})")
    return parts


@step("features")
def features(ctx: RunContext, parts: tr.SplitResult) -> fe.FeatureSet:
    """Build the feature stage from the config, fit it on the training part only, and record
    each column it makes (source, transform, statistics) and the time it took."""
    cfg = ctx.loaded.config
    with timed("features", f"building features on {len(parts.train):,} training rows") as done:
        y = tr.resolve_target(cfg, parts.train).encode(parts.train[cfg.data.target])
        result = fe.build_features(cfg, parts.train, y)
        ctx.registry.log_dict(ctx.run_id, result.to_dict(list(parts.train.columns)),
                              "features.json")
        ctx.registry.log_text(ctx.run_id, result.to_markdown(), "features.md")
        ctx.registry.log_metrics(ctx.run_id, {"features_seconds": result.seconds,
                                              "features_model_inputs": result.model_inputs})
        create_table_artifact(table=result.table(),
                              key=pages.artifact_key("features", ctx.model_name),
                              description=f"Features of {ctx.model_name}: {result.summary()}, "
                              f"fitted in {result.seconds:.3f} s (statistics on the training "
                              "part).")
        done.text = f"{result.summary()} (fitted in {result.seconds:.2f} s)"
    return result


@step("train")
def train(ctx: RunContext, parts: tr.SplitResult,
          feats: fe.FeatureSet | None = None) -> tr.TrainResult:
    """Fit every candidate and keep the best by cross-validation (`feats`: the features step's
    result on the same training part)."""
    pause_point("train")
    n = len(ctx.loaded.config.candidates.estimators)
    with timed("train", f"fitting {n} candidate{'s' if n != 1 else ''} on "
               f"{len(parts.train):,} rows") as done:
        result = tr.train(ctx.loaded.config, parts.train, feats)
        others = ", ".join(f"{s.name} {s.cv_score:.4f}" for s in result.candidates
                           if s.name != result.best.name)
        where = result.backend
        done.text = (f"best {result.best.name}, {result.metric} {result.best.cv_score:.4f} (cv)"
                     + (f"; {others}" if others else "")
                     + (f" [Dask {where['scheduler']}: {where['workers']} workers, "
                        f"{where['threads']} threads]" if where.get("backend") == "dask" else ""))
    ctx.registry.log_params(ctx.run_id, {
        "search_backend": where.get("backend", "local"),
        "best_candidate": result.best.name, "estimator": result.best.estimator,
        **{f"param.{k}": v for k, v in result.best.best_params.items()},
        "features.numeric": result.roles.numeric, "features.categorical": result.roles.categorical,
        "features.datetime": result.roles.datetime,
        **({"features.derived": [d.name for d in feats.derived]} if feats and feats.derived else {})})
    ctx.registry.log_metrics(ctx.run_id, {f"cv_{s.name}": s.cv_score for s in result.candidates})
    ctx.registry.log_dict(ctx.run_id, [s.__dict__ for s in result.candidates], "candidates.json")
    ctx.notes.extend(result.roles.notes)
    return result


@dataclass(frozen=True)
class Evaluations:
    """Candidate, champion and the trivial model on the same holdout, and candidate and
    champion on the champion's trusted set."""

    candidate: ev.Evaluation
    champion: ev.Evaluation | None
    champion_version: str | None
    champion_error: str | None = None
    baseline: ev.Evaluation | None = None
    trusted: gt.TrustedCheck | None = None
    scored: ev.Scored | None = None  # the candidate's predictions on the holdout, reused
    gain: ev.Gain | None = None  # the candidate's paired gain over the champion there


@dataclass(frozen=True)
class Baselines:
    """What the candidates are judged against, scored on the same holdout: the trivial model
    and the champion (its version, the model, its scores or why it could not be scored, and
    its trusted set with its score there)."""

    trivial: ev.Evaluation
    version: str | None = None
    model: Any = None
    champion: ev.Evaluation | None = None
    error: str | None = None
    trusted: ts.TrustedSet | None = None
    trusted_score: tuple[float | None, str] | None = None
    trusted_refused: gt.TrustedCheck | None = None  # why the trusted set cannot judge
    champion_scored: ev.Scored | None = None  # the champion's predictions on the holdout


@step("baselines")
def baselines(ctx: RunContext, parts: tr.SplitResult) -> Baselines:
    """Score the trivial model and the current champion on the holdout, and the champion on
    its trusted set.

    A step of its own, after `train`, so that the Prefect page shows what the candidates are
    compared with and how long it took; `evaluate` takes its result. A champion that cannot be
    loaded or scored is recorded, never fatal: the gate then refuses to promote. (Run beside
    `train` on a thread, it cost more than it saved: both sides hold the GIL in turn, and the
    fits of a small table slowed by more than this step took.)
    """
    started = time.perf_counter()
    cfg = ctx.loaded.config
    target, metric = tr.resolve_target(cfg, parts.train), cfg.gate.primary_metric
    trivial = ev.evaluate_baseline(parts.train, parts.holdout, target, metric)
    version = ctx.registry.alias_version(ctx.model_name, CHAMPION)
    if version is None:
        say("baselines", f"trivial model {metric} {_num(trivial.value)}; no champion yet")
        return Baselines(trivial)
    try:
        import_listed(cfg)  # the champion's own classes: never from the working directory
        model = ctx.registry.load(ctx.model_name, alias=CHAMPION)
        champ_scored = ev.predict(model, parts.holdout, target)
        champ = ev.evaluate(model, parts.holdout, target, metric, scored=champ_scored,
                            **_evaluate_kw(ctx))
    except Exception as err:  # noqa: BLE001 - recorded; the gate then refuses to promote
        say("baselines", f"champion v{version} could not be scored: {_first_line(err)}")
        return Baselines(trivial, version, error=_first_line(err))
    try:
        run_id = ctx.registry.version_info(ctx.model_name, version).run_id
        kept = load_trusted_set(ctx.registry, run_id) if run_id else None
    except Exception as err:  # noqa: BLE001 - reported in the decision record
        unreadable = gt.TrustedCheck(False, note=f"trusted set of v{version} unreadable: "
                                     f"{_first_line(err)}")
        return Baselines(trivial, version, model, champ, trusted_refused=unreadable,
                         champion_scored=champ_scored)
    refused = ts.usable(kept, metric, version)
    score = None if refused is not None or kept is None else ts.score(model, kept, target, metric)
    say("baselines", f"{time.perf_counter() - started:.1f} s: {metric} on the holdout: "
        f"champion v{version} {_num(champ.value)}, trivial model {_num(trivial.value)}")
    return Baselines(trivial, version, model, champ, None, kept, score, refused, champ_scored)


def _evaluate_kw(ctx: RunContext) -> dict[str, Any]:
    g = ctx.loaded.config.gate
    return {"slice_columns": [s.column for s in g.slices], "seed": ctx.loaded.config.split.seed}


@step("evaluate")
def evaluate(ctx: RunContext, parts: tr.SplitResult, trained: tr.TrainResult,
             against: Baselines | None = None) -> Evaluations:
    """Score the candidate on the holdout beside the trivial model and the champion (`against`:
    `baselines`, scored on the same holdout; None: the trivial model only, scored here), and
    candidate and champion on the champion's trusted set."""
    started = time.perf_counter()
    say("evaluate", "scoring the candidate on the holdout ...")
    g = ctx.loaded.config.gate
    scored = ev.predict(trained.model, parts.holdout, trained.target)
    cand = ev.evaluate(trained.model, parts.holdout, trained.target, trained.metric,
                       bootstrap_samples=g.bootstrap_samples, scored=scored, **_evaluate_kw(ctx))
    base = against.trivial if against is not None else \
        ev.evaluate_baseline(parts.train, parts.holdout, trained.target, trained.metric)
    champ = against.champion if against is not None else None
    ctx.registry.log_metrics(ctx.run_id, {
        **{f"holdout_{k}": v for k, v in cand.metrics.items()},
        f"baseline_holdout_{trained.metric}": base.value,
        **({f"holdout_{trained.metric}_ci_low": cand.ci[0],
            f"holdout_{trained.metric}_ci_high": cand.ci[1]} if cand.ci else {}),
        **({f"champion_holdout_{k}": v for k, v in champ.metrics.items()} if champ else {})})
    trusted = None
    if champ is not None and against is not None and against.version is not None:  # champ: against's
        trusted = against.trusted_refused or ts.check(
            against.trusted, against.model, trained.model, trained.target, trained.metric,
            against.version, champion_score=against.trusted_score)
    version = against.version if against is not None else None
    gain = None
    if against is not None and against.champion_scored is not None and champ is not None:
        gain = ev.paired_gain(
            trained.target.task, trained.metric, trained.target.encode(
                parts.holdout[trained.target.column]), scored, against.champion_scored,
            samples=g.bootstrap_samples, seed=ctx.loaded.config.split.seed,
            confidence=g.improvement_confidence,
            candidate_classes=_classes(trained.model, trained.target),
            champion_classes=_classes(against.model, trained.target))
        ctx.registry.log_metrics(ctx.run_id, {
            f"gain_{trained.metric}": gain.value,
            **({f"gain_{trained.metric}_ci_low": gain.low,
                f"gain_{trained.metric}_ci_high": gain.high} if gain.low is not None else {})})
    evals = Evaluations(cand, champ, version, None if against is None else against.error,
                        base, trusted, scored, gain)
    say("evaluate", f"{time.perf_counter() - started:.1f} s: {_evaluated(trained.metric, evals)}")
    return evals


def _classes(model: Any, target: tr.Target) -> list[Any] | None:
    """A multiclass model's class order, as `tasks.model.evaluate.evaluate` finds it."""
    if target.task != "multiclass":
        return None
    return list(model.classes_) if hasattr(model, "classes_") else target.classes


def _evaluated(metric: str, evals: Evaluations) -> str:
    """``holdout roc_auc: candidate 0.861 (CI ..), champion v1 0.850, trivial 0.500``."""
    c = evals.candidate
    text = f"holdout {metric}: candidate {_num(c.value)}"
    if c.ci:
        text += f" (95% CI {_num(c.ci[0])}..{_num(c.ci[1])})"
    if evals.champion is not None:
        text += f", champion v{evals.champion_version} {_num(evals.champion.value)}"
        if evals.gain is not None:
            text += f", {evals.gain.describe()}"
    elif evals.champion_error:
        text += f", champion v{evals.champion_version} not scored ({evals.champion_error})"
    elif evals.champion_version is None:
        text += ", no champion yet"
    if evals.baseline is not None:
        text += f", trivial {_num(evals.baseline.value)}"
    return text


def _num(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.4f}"


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


@step("gate")
def gate(ctx: RunContext, evals: Evaluations) -> gt.GateDecision:
    """Apply the gate; record the decision on the run and as a Prefect table."""
    decision = gt.decide(ctx.loaded.config.gate, evals.candidate, evals.champion,
                         evals.champion_version, evals.champion_error, evals.baseline,
                         evals.trusted, evals.gain)
    ctx.registry.log_dict(ctx.run_id, decision.to_dict(), "gate/decision.json")
    ctx.registry.set_tags(ctx.run_id, {"regrow.gate.verdict": decision.verdict,
                                       "regrow.gate.reasons": "; ".join(decision.reasons)})
    create_markdown_artifact(
        key=pages.artifact_key("gate", ctx.model_name),
        description=f"{ctx.model_name}: gate verdict {decision.verdict}",
        markdown=f"# Gate: {ctx.model_name}\n\n{_trigger_line(ctx)}\n\n"
        f"{decision.to_markdown()}\n\n" + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\nMLflow run `{ctx.run_id}`")
    say("gate", f"{decision.verdict}: {'; '.join(decision.reasons)}")
    return decision


def _trigger_line(ctx: RunContext) -> str:
    """Markdown: who asked and why (from outside: escaped, never markup)."""
    t = ctx.trigger
    return (f"Trigger: **{markdown(t.kind)}** by {markdown(t.actor)}"
            + (f" -- {markdown(t.reason)}" if t.reason else "")
            + (f" ({markdown(t.ref)})" if t.ref else ""))


def version_description(ctx: RunContext, decision: gt.GateDecision) -> str:
    """A registered version's description: the gate's reasons (first line), the trigger and
    the gate table."""
    return (f"{'; '.join(decision.reasons)}\n\n{_trigger_line(ctx)}\n\n"
            f"{decision.to_markdown()}\n\nMLflow run `{ctx.run_id}`")


@dataclass(frozen=True)
class Registration:
    """The new version and where the champion alias points afterwards."""

    version: str
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    approval: dict[str, Any] | None = None
    shadow: bool = False  # the version became challenger in shadow (`promotion.mode: shadow`)


@step("register")
def register(ctx: RunContext, parts: tr.SplitResult, trained: tr.TrainResult,
             evals: Evaluations, decision: gt.GateDecision) -> Registration:
    """Log and register the model with its drift reference and its gate record.

    Every candidate gets a version (the record of what was tried); only a version that passed
    the gate and now waits -- for a person, for its bake period, or for its trial in shadow
    beside the champion -- becomes ``challenger``.
    """
    reg, name = ctx.registry, ctx.model_name
    example = parts.train.head(5)[trained.roles.inputs]
    started = time.perf_counter()
    say("register", "logging the model, its drift reference and trusted set ...")
    pause_point("log_model")
    scored = evals.scored
    reference = build_reference(ctx.loaded.config, trained, parts.train, evals.candidate.metrics,
                                parts.holdout, None if scored is None else scored.proba)
    log_reference(reg, ctx.run_id, reference)
    trusted = ts.build(ctx.loaded.config, trained.model, parts.train, parts.holdout,
                       trained.target, trained.metric, scored)
    if trusted is not None:
        log_trusted_set(reg, ctx.run_id, trusted)
    uri = reg.log_model(ctx.run_id, trained.model, example)
    tags = {"regrow.gate.verdict": decision.verdict, "regrow.trigger": ctx.trigger.kind,
            "regrow.trigger_reason": ctx.trigger.reason or "-",
            "regrow.metric": trained.metric, **reference.spec.to_tags(),
            "regrow.reference_rows": len(reference.frame),
            "regrow.trusted_rows": 0 if trusted is None else len(trusted.frame)}
    if ctx.trigger.ref:
        tags["regrow.trigger_ref"] = ctx.trigger.ref
    if trained.target.positive_label is not None:
        tags["regrow.positive_label"] = trained.target.positive_label
    if trained.target.classes:  # what `regrow labels` accepts when the config lists nothing
        tags["regrow.classes"] = json.dumps([label_text(c) for c in trained.target.classes])
    version = reg.register(uri, name, ctx.run_id, tags,
                           description=version_description(ctx, decision))
    if ctx.row_id:  # before any alias moves to it: a crash from here on names the version
        ctx.store.note_training(ctx.row_id, verdict=decision.verdict, version=version)
    say("register", f"{time.perf_counter() - started:.1f} s: registered {name} v{version} "
        f"(gate: {decision.verdict})")
    pause_point("registered")
    before = reg.alias_version(name, CHAMPION)
    if decision.passed and _waits(ctx, decision, before):
        if in_shadow(ctx, decision, before):
            superseded = reg.alias_version(name, CHALLENGER)
            _move(ctx, CHALLENGER, version, f"{challenger.REASON_PREFIX} passed the gate; scores "
                  f"in shadow beside champion v{before} until matured labels judge it")
            if superseded and superseded != version:
                reg.set_version_tags(name, superseded, {
                    challenger.TAG_STATE: challenger.RETIRED,
                    challenger.TAG_DETAIL: f"superseded by v{version} before it was judged"})
        else:
            _move(ctx, CHALLENGER, version, "passed the gate; waits for "
                  + ("approval" if needs_person(ctx, decision) else "its bake period"))
    ctx.notes.extend(publish_card(reg, ctx.store, name, version, ctx.run_id).notes)
    return Registration(version, before, before, False)


def _waits(ctx: RunContext, decision: gt.GateDecision, champion: str | None) -> bool:
    """True when a passing version does not settle as champion at once: a person must approve
    it, or it will bake against the champion it replaces."""
    return needs_person(ctx, decision) or (bake_windows(ctx) > 0 and champion is not None) \
        or in_shadow(ctx, decision, champion)


def in_shadow(ctx: RunContext, decision: gt.GateDecision, champion: str | None) -> bool:
    """True when a passing version is tried in shadow beside the champion before it may take
    over (`promotion.mode: shadow`; with no champion yet the gate decides alone)."""
    return decision.passed and ctx.loaded.config.promotion.mode == "shadow" \
        and champion is not None


def needs_person(ctx: RunContext, decision: gt.GateDecision) -> bool:
    """True when the config asks a person to decide this promotion."""
    mode = ctx.loaded.config.promotion.mode
    return decision.passed and (mode == "manual" or (mode == "manual_if_borderline"
                                                     and decision.borderline))


def bake_windows(ctx: RunContext) -> int:
    """Windows a new champion bakes (scored beside the previous one) before it is settled."""
    bake = ctx.loaded.config.promotion.bake
    return bake.windows if bake is not None else 0


@dataclass(frozen=True)
class Approval:
    """Who allowed (or refused) a promotion, and how."""

    approved: bool
    approver: str
    reason: str
    how: str  # prefect-input (UI form or regrow approve/reject) | timeout


@step("promote")
def promote(ctx: RunContext, registration: Registration, decision: gt.GateDecision,
            approval: Approval | None) -> Registration:
    """Move champion to the new version when the gate passed and the promotion is approved."""
    name, version = ctx.model_name, registration.version
    if approval is not None:
        ctx.registry.set_version_tags(name, version, {
            "regrow.approval": "approved" if approval.approved else "rejected",
            "regrow.approver": approval.approver, "regrow.approval_reason": approval.reason,
            "regrow.approval_via": approval.how})
        ctx.registry.set_tags(ctx.run_id, {"regrow.approval": "approved" if approval.approved
                                           else "rejected", "regrow.approver": approval.approver})
    if not (decision.passed and (approval is None or approval.approved)):
        say("promote", f"champion stays v{registration.champion_before}"
            if registration.champion_before else "no champion yet; none promoted"
            + (f" (rejected by {approval.approver})" if approval is not None
               else " (no gain over the champion)" if decision.verdict == gt.NO_GAIN
               else " (the gate rejected the candidate)"))
        if approval is not None:  # a person (or the timeout) said no: it no longer waits
            clear_challenger(ctx.registry, ctx.store, name, version,
                             f"promotion rejected by {approval.approver}: {approval.reason}",
                             f"approval:{approval.approver}", ctx.run_id)
        return registration
    if approval is None and in_shadow(ctx, decision, registration.champion_before):
        return _start_shadow(ctx, registration)
    pause_point("alias")
    reason = "gate passed: " + "; ".join(decision.reasons)
    actor = None
    if approval is not None and approval.how != "gate":
        reason += f"; approved by {approval.approver}: {approval.reason}"
        actor = f"approval:{approval.approver}"
    bake = ctx.loaded.config.promotion.bake
    if not _move(ctx, CHAMPION, version, reason, actor, expect=decision.champion_version):
        ctx.notes.append(f"not promoted: another training moved champion while this one was "
                         f"gated against v{decision.champion_version or '-'}; train again to compare")
    elif bake is not None and registration.champion_before is not None:
        # A baking champion stays challenger too, until its bake passes or rolls it back.
        if ctx.registry.alias_version(name, CHALLENGER) != version:
            _move(ctx, CHALLENGER, version, f"baking against v{registration.champion_before}")
        baking.start(ctx.store, name, version, registration.champion_before, bake)
        ctx.notes.append(f"v{version} bakes for {bake.windows} window(s) against "
                         f"v{registration.champion_before}, scored as a shadow")
    else:
        clear_challenger(ctx.registry, ctx.store, name, version, "promoted; nothing to wait for",
                         actor or f"{ctx.trigger.kind}:{ctx.trigger.actor}", ctx.run_id)
    pause_point("promoted")
    after = ctx.registry.alias_version(name, CHAMPION)
    before = registration.champion_before
    say("promote", f"champion {f'v{before}' if before else 'none'} -> v{after}"
        if after == version else f"champion stays {f'v{after}' if after else 'none'}")
    return Registration(version, registration.champion_before, after, after == version,
                        None if approval is None else approval.__dict__)


def _start_shadow(ctx: RunContext, registration: Registration) -> Registration:
    """The passing version stays challenger and scores in shadow; champion does not move."""
    name, version, before = ctx.model_name, registration.version, registration.champion_before
    if ctx.registry.alias_version(name, CHALLENGER) != version:
        ctx.notes.append(f"v{version} is not challenger (moved meanwhile): no shadow trial")
        return registration
    tags = challenger.start_tags(before or "")
    ctx.registry.set_version_tags(name, version, tags)
    ctx.registry.set_tags(ctx.run_id, tags)
    trial = ctx.loaded.config.promotion.shadow
    ctx.notes.append(f"v{version} is challenger: it scores in shadow beside champion v{before} "
                     f"and takes over only if it beats it on matured labels of {trial.windows} "
                     "window(s)")
    say("promote", f"champion stays v{before}; v{version} is challenger in shadow")
    return dataclasses.replace(registration, shadow=True)


_ANY = object()


def _move(ctx: RunContext, alias: str, version: str, reason: str, actor: str | None = None,
          expect: object = _ANY) -> bool:
    # One model's aliases move one at a time, so racing trainings neither interleave history
    # rows nor promote over a champion their gate never saw: with `expect`, move only from it.
    with alias_section(ctx.registry, ctx.store, ctx.model_name, "regrow train") as found:
        ctx.notes.extend(f"alias moved outside regrow, now recorded: {m.describe()}" for m in found)
        if expect is not _ANY and ctx.registry.alias_version(ctx.model_name, alias) != expect:
            return False
        move_alias(ctx.registry, ctx.store, ctx.model_name, alias, version, reason,
                   actor or f"{ctx.trigger.kind}:{ctx.trigger.actor}", ctx.run_id)
    return True


def request_at_fault(overrides: dict[str, Any], error: BaseException) -> list[str]:
    """The override keys a failed training is due to, when the failure lies in a value the
    request chose rather than in the model, its data or regrow: a config the overrides make
    invalid, a source they name that cannot be read (a missing file, a failing query; not a
    database that cannot be reached), a cutoff that leaves a part of the split empty. Empty
    when the failure is not the request's own (bad data it points to still counts: that is
    what the circuit breaker is for)."""
    from regrow.configs.schema import ConfigError

    keys = list(overrides or {})
    if not keys:
        return []
    if isinstance(error, tr.SplitError):
        return [k for k in keys if k.startswith("split.")]
    if isinstance(error, ing.IngestError) and not str(error).startswith("data.source.url"):
        return [k for k in keys if k.startswith("data.source.")]
    if isinstance(error, ConfigError):
        return [k for k in keys if k in str(error) or str(overrides[k]) in str(error)]
    return []


def _kind(error: BaseException) -> str:
    """An error's type for the record, with the vendor error it wraps: ``StoreUnavailable
    (OperationalError)``."""
    cause = error.__cause__
    kind = type(error).__name__
    return kind if cause is None or type(cause).__name__ == kind \
        else f"{kind} ({type(cause).__name__})"


def close_run(ctx: RunContext, *, error: BaseException | None = None,
              verdict: str | None = None, version: str | None = None,
              skipped: str | None = None) -> None:
    """Close the MLflow run and the training record, as finished, failed or skipped (`skipped`:
    why; see `unchanged`); stop the lease. A failure due to a value the request's overrides
    chose (`request_at_fault`) is recorded as ``bad_request``, which the circuit breaker
    does not count.

    The record is closed even when MLflow cannot be reached, and the lease stops renewing
    whatever happens (released only once the record is closed).
    """
    if not ctx.run_id:
        return
    status = "failed" if error is not None else "skipped" if skipped else "finished"
    detail = skipped if error is None else f"{_kind(error)}: {error}"[:4000]
    blamed = request_at_fault(ctx.loaded.overrides, error) if error is not None else []
    if blamed:
        status = BAD_REQUEST
        detail = f"the request's own overrides ({', '.join(blamed)}): {detail}"[:4000]
    recorded = False
    try:
        try:
            ctx.registry.set_tags(ctx.run_id, {"regrow.status": status, "regrow.error": detail
                                               if error is not None else None,
                                               "regrow.skip_reason": skipped})
            ctx.registry.end_run(ctx.run_id, "FAILED" if error is not None else "FINISHED")
        finally:
            if ctx.row_id:
                ctx.store.finish_training(ctx.row_id, status=status, run_id=ctx.run_id,
                                          verdict=verdict, version=version, detail=detail)
                recorded = True
    finally:
        if ctx.lease is not None:
            ctx.lease.stop(release=recorded)


def as_dict(obj: Any) -> Any:
    """Dataclasses and frames to JSON-able values (NaN -> None)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: as_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if f.name not in {"frame", "model", "train", "holdout"}}
    if isinstance(obj, dict):
        return {str(k): as_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [as_dict(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj
