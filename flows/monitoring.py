"""Scoring, drift-check and retrain flows.

A drift check's steps: ``assess-drift``, ``log-check``, then ``judge-bake`` (a champion in its
bake period is judged on the same window and may be rolled back: `flows.bake_judgement`),
``judge-challenger`` (a challenger in shadow is judged on it and may take over or be retired:
`flows.challenger_judgement`), then a retrain request through the policy when the degradation persists."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from regrow.flows import dispatch, pages
from regrow.flows import events as notify
from regrow.flows.bake_judgement import judge_bake
from regrow.flows.challenger_judgement import judge_challenger
from regrow.flows.model_env import Env, NoChampion
from regrow.flows.progress import say, timed
from regrow.flows.steps import step
from regrow.flows.training import TrainingOutcome, train_flow
from regrow.tasks.data import ingest as ing
from regrow.tasks.model import gate as gt
from regrow.tasks.model.imports import import_listed
from regrow.tasks.monitoring import assess as monitor
from regrow.tasks.monitoring import scoring
from regrow.tasks.policy import retrain as policy
from regrow.tasks.policy.lease import Heartbeat
from regrow.tasks.policy.untrusted import markdown
from regrow.tasks.registry import bake as baking
from regrow.tasks.registry import challenger as ch
from regrow.tasks.registry.mlflow_registry import (
    CHALLENGER,
    describe_unreachable,
    load_reference,
    log_drift_check,
    run_link,
)
from regrow.tasks.store import database as st


@step("score-rows")
def _score(env: Env, frame) -> scoring.ScoringResult:
    version, run_id = env.champion()
    ref = load_reference(env.registry, run_id)
    import_listed(env.loaded.config)  # the model's own classes: never from the working directory
    model = env.registry.load(env.model, version=version)
    result = scoring.score_rows(env.loaded.config, model, version, ref.spec, frame, env.store)
    bake = baking.active(env.store, env.model, version)
    # the version in shadow: the previous champion during a bake, else a challenger (waiting for
    # approval or in its trial) -- as the prediction service chooses (`tasks.monitoring.serving`)
    other = bake.previous_version if bake is not None else \
        env.registry.alias_version(env.model, CHALLENGER)
    if other is None or other == version:
        return result
    shadow = env.registry.load(env.model, version=other)
    rows = scoring.score_shadow(env.loaded.config, shadow, other, ref.spec, frame,
                                env.store, result.batch_id)
    return dataclasses.replace(result, shadow_version=other, shadow_rows=rows)


def score(env: Env, input_path: str | None = None,
          query: str | None = None) -> scoring.ScoringResult:
    """Score new rows (a file, or a query on the config's SQL source) with the champion and
    log the predictions: the body of `score_flow` and of the served scoring flow."""
    frame = ing.read_rows(env.loaded, input_path, query)
    return _score(env, frame)


@flow(name="regrow-score", log_prints=True, flow_run_name=pages.score_run_name)
def score_flow(config_path: str, input_path: str | None = None, query: str | None = None,
               overrides: dict[str, Any] | None = None) -> scoring.ScoringResult:
    """Score new rows with the champion and log the predictions."""
    return score(Env.open(config_path, overrides), input_path, query)


@dataclass(frozen=True)
class RetrainOutcome:
    """A retrain request's answer and, when admitted, the training it started."""

    request_id: int
    verdict: str
    detail: str
    training: TrainingOutcome | None = None
    error: str | None = None
    dispatched: str | None = None


def run_request(env: Env, *, kind: str, reason: str, ref: str | None,
                overrides: dict[str, Any] | None, actor: str = "regrow",
                before: Any = None) -> RetrainOutcome:
    """Ask the policy; when admitted, start the training: here (inline) or by event (served).

    The training runs `env`'s config (its file, with `overrides`). An event names no file: the
    training deployment runs the config it was served with (`flows.binding`). `before(answer)`
    tells what led to the request once the policy has answered, before its verdict's event."""
    answer = notify.request_retrain(env.store, env.model, env.loaded.config.retrain, kind=kind,
                                    reason=reason, ref=ref, before=before)
    if not answer.admitted:
        return RetrainOutcome(answer.request_id, answer.verdict, answer.detail)
    if dispatch.mode() == "events":
        event_id = dispatch.emit_admitted(env.model, answer.request_id, kind, reason, ref,
                                          overrides)
        return RetrainOutcome(answer.request_id, answer.verdict, answer.detail,
                              dispatched=f"event {dispatch.ADMITTED_EVENT} {event_id}")
    return execute_request(env, answer, kind=kind, reason=reason, ref=ref, overrides=overrides,
                           actor=actor)


def execute_request(env: Env, answer: policy.PolicyVerdict, *, kind: str, reason: str,
                    ref: str | None, overrides: dict[str, Any] | None,
                    actor: str) -> RetrainOutcome:
    """Run the training for an admitted request, recording its state and provenance.

    The training reads `env`'s config file again (with `overrides`) and refuses it when its
    text is no longer the one `env` was loaded from (`train_flow`'s `config_sha256`).

    The request holds a lease while it executes, so a process that dies before (or while)
    its training runs does not keep it in flight (tasks/policy/lease.py).
    """
    with Heartbeat(env.store, f"request:{answer.request_id}", env.model):
        policy.mark_request(env.store, answer.request_id, "running")
        try:
            outcome = train_flow(str(env.loaded.path), overrides=overrides, trigger=kind,
                                 reason=reason, trigger_ref=f"retrain_request:{answer.request_id}"
                                 + (f";{ref}" if ref else ""), actor=actor,
                                 skip_unchanged=True, config_sha256=env.loaded.sha256)
        except Exception as err:  # noqa: BLE001 - recorded on the request; the champion is untouched
            policy.mark_request(env.store, answer.request_id, "failed")
            # a store or server that does not answer is one sentence naming it
            why = st.describe_unreachable(err, env.settings.database_url) \
                or describe_unreachable(err, env.settings.tracking_uri) \
                or f"{type(err).__name__}: {err}"
            return RetrainOutcome(answer.request_id, answer.verdict, answer.detail, error=why)
        policy.mark_request(env.store, answer.request_id, "done", outcome.run_id,
                            detail=f"{answer.detail}; training skipped: {outcome.skipped}"
                            if outcome.skipped else None)
    return RetrainOutcome(answer.request_id, answer.verdict, answer.detail, outcome)


@flow(name="regrow-retrain", log_prints=True, flow_run_name=pages.retrain_run_name)
def retrain_flow(config_path: str, reason: str, kind: str = "manual", ref: str | None = None,
                 overrides: dict[str, Any] | None = None, actor: str = "cli") -> RetrainOutcome:
    """A retrain request through the policy (manual, schedule, webhook, UI); a refused request
    ends ``Completed`` named ``Refused`` (the call still returns the `RetrainOutcome`)."""
    return pages.retrain_state(run_request(Env.open(config_path, overrides), kind=kind,
                                           reason=reason, ref=ref, overrides=overrides,
                                           actor=actor))


@dataclass(frozen=True)
class DriftOutcome:
    """One drift check and what followed from it."""

    check_id: int | None
    model: str
    version: str | None
    assessment: dict[str, Any]
    report_path: str | None
    retrain: RetrainOutcome | None
    bake: dict[str, Any] | None = None
    challenger: dict[str, Any] | None = None  # a challenger in shadow judged on this window
    catch_up: str | None = None  # why this check asked for a retrain of catch-up, if it did


@step("assess-drift")
def _assess(env: Env, version: str, run_id: str) -> tuple[monitor.Assessment, str | None, Any]:
    cfg = env.loaded.config
    w = cfg.monitoring.window
    from regrow.configs.schema import parse_duration

    window = scoring.load_window(env.store, env.model, rows=w.rows, version=version,
                                 period_seconds=parse_duration(w.period) if w.period else None)
    ref = load_reference(env.registry, run_id)
    previous = st.recent_drift_flags(env.store, env.model, version, cfg.monitoring.persistence.n)
    # Performance persists per model: a new version does not wipe out a degradation.
    previous_perf = st.recent_performance_flags(env.store, env.model, cfg.monitoring.persistence.n)
    report = env.settings.reports_dir / env.model / f"drift-{st.now():%Y%m%dT%H%M%S%f}.html"
    report.parent.mkdir(parents=True, exist_ok=True)
    rows = 0 if window is None else len(window)
    with timed("drift", f"checking {env.model} v{version} on {rows:,} recent rows") as done:
        try:
            assessment = monitor.assess(cfg, ref, window, previous, report_html=report,
                                        previous_performance=previous_perf)
        except BaseException:
            report.unlink(missing_ok=True)  # a full disk mid-write leaves no half report
            raise
        done.text = f"{assessment.verdict}" + (f": {'; '.join(assessment.reasons)}"
                                               if assessment.reasons else "")
    return assessment, (str(report) if report.exists() else None), window


@step("log-check")
def _log_check(env: Env, version: str, run_id: str, check_id: int | None,
               assessment: monitor.Assessment, report: str | None) -> str:
    """The check's MLflow run in ``regrow/<model>-monitoring``; returns where to see it."""
    monitoring_run = log_drift_check(env.registry, env.model, version, run_id, check_id,
                                     assessment, report)
    where = run_link(env.registry, monitoring_run)
    say("drift", f"check #{check_id} logged: {where}" + (f"; report {report}" if report else ""))
    return where


def drift_payload(check_id: int | None, version: str,
                  assessment: monitor.Assessment) -> dict[str, Any]:
    """The payload of ``regrow.drift.checked``: the verdict, whether a retrain is due
    (`persistent`), and `warning` when drift was seen that asks for no retrain."""
    return {"check_id": check_id, "version": version, "verdict": assessment.verdict,
            "persistent": assessment.persistent, "drift_share": assessment.drift_share,
            "drifted_columns": assessment.drifted_columns, "reasons": assessment.reasons,
            "warning": assessment.warning, "retrain_on": assessment.retrain_on,
            "performance": monitor.performance_payload(assessment.performance)}


@flow(name="regrow-drift-check", log_prints=True, flow_run_name=pages.drift_run_name)
def drift_check_flow(config_path: str, overrides: dict[str, Any] | None = None,
                     retrain: bool = True) -> DriftOutcome:
    """Compare the champion's recent window with its reference; ask for a retrain when the
    signals `retrain.on` names persist (drift alone is only a warning under `performance`)."""
    return drift_check(Env.open(config_path, overrides), overrides, retrain)


def drift_check(env: Env, overrides: dict[str, Any] | None = None,
                retrain: bool = True) -> DriftOutcome:
    """The body of `drift_check_flow` and of the served drift check: `env` is the config (with
    `overrides` applied already; they are passed on to a retrain it asks for). However the
    check ends, the ``regrow-fleet`` artifact (every model's row) is refreshed after it."""
    try:
        return _drift_check(env, overrides, retrain)
    finally:
        pages.publish_fleet(env.store, env.settings.home)


def _drift_check(env: Env, overrides: dict[str, Any] | None, retrain: bool) -> DriftOutcome:
    try:
        version, run_id = env.champion()
    except NoChampion as err:  # nothing serves yet: nothing to watch, and not a failure
        print(str(err))
        return DriftOutcome(None, env.model, None, {"verdict": "no_champion", "reasons": [str(err)],
                                                    "window_rows": 0, "persistent": False},
                            None, None)
    assessment, report, window = _assess(env, version, run_id)
    try:
        check_id = st.record_drift_check(env.store, env.model, version, assessment, report)
    except BaseException:
        if report:  # the check is not recorded: its report would be an orphan file
            Path(report).unlink(missing_ok=True)
        raise
    mlflow_run = _log_check(env, version, run_id, check_id, assessment, report)
    # Told first, whatever follows (a rollback, a retrain): the events keep the order of events.
    notify.drift_checked(env, version, check_id, assessment, report, mlflow_run,
                         drift_payload(check_id, version, assessment))
    bake = judge_bake(env, version, run_id, window)
    if bake is not None and bake["state"] == baking.ROLLED_BACK:
        # The champion that was just judged is gone; its drift asks for no retrain.
        return DriftOutcome(check_id, env.model, version, assessment.to_dict(), report, None, bake)
    trial = judge_challenger(env, version, run_id, window)
    create_markdown_artifact(
        key=pages.artifact_key("drift-check", env.model),
        description=f"{env.model} v{version}: {assessment.verdict}",
        markdown=f"# Drift check #{check_id}: {assessment.verdict}\n\n"
        + "\n".join(f"- {markdown(r)}" for r in assessment.reasons)  # column names: the data's
        + (f"\n\nreport: [{markdown(report)}]({Path(report).as_uri()})" if report else "")
        + f"\n\nMLflow: {mlflow_run}"
        + (f"\n\n{assessment.markdown}" if assessment.markdown else ""))
    answer = None
    catch_up = _catch_up(env, version, run_id, assessment) if retrain else None
    if retrain and assessment.persistent and trial is not None and trial["state"] == ch.RUNNING:
        # the trial under way is the answer to this degradation: a newer candidate would
        # replace the challenger and start its trial again, so no trial would ever end
        say("retrain", f"not asked: challenger v{trial['version']} is on trial against "
            f"v{version} ({trial['windows_done']} of "
            f"{env.loaded.config.promotion.shadow.windows} window(s) judged)")
        notify.degradation_confirmed(env, version, assessment, report, mlflow_run, None)
    elif retrain and (assessment.persistent or catch_up):
        # the degradation is told once the policy answered, before that answer and the training
        if catch_up:
            say("retrain", catch_up)
        answer = run_request(env, kind="drift", reason=catch_up or "; ".join(assessment.reasons),
                             ref=f"drift_check:{check_id}", overrides=overrides,
                             actor="drift-check",
                             before=lambda verdict: notify.degradation_confirmed(
                                 env, version, assessment, report, mlflow_run, verdict))
        st.link_drift_request(env.store, check_id, answer.request_id)
    else:
        notify.degradation_confirmed(env, version, assessment, report, mlflow_run, None)
    return DriftOutcome(check_id, env.model, version, assessment.to_dict(), report, answer, bake,
                        trial, catch_up if answer is not None else None)


def _catch_up(env: Env, version: str, run_id: str, assessment: monitor.Assessment) -> str | None:
    """Why this check asks for a retrain of catch-up (`tasks.monitoring.assess.catch_up`):
    only when the model's last training was a retrain a drift check asked for, and it
    promoted the champion checked here."""
    cfg = env.loaded.config
    if not cfg.retrain.catch_up or assessment.persistent or assessment.performance is None:
        return None
    last = env.store.training_runs(env.model, 1)
    if not last or last[0]["trigger"] != "drift" or last[0]["verdict"] != gt.PROMOTE \
            or last[0]["version"] != version or last[0]["run_id"] != run_id:
        return None
    metrics, m = env.registry.run_info(run_id)["metrics"], cfg.gate.primary_metric
    return monitor.catch_up(cfg, assessment, version, metrics.get(f"gain_{m}_ci_low"),
                            metrics.get(f"champion_holdout_{m}"))


def as_json(obj: Any) -> Any:
    """Dataclass outcome -> JSON-able dict."""
    return asdict(obj)
