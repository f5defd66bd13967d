"""Running the training flow from the command line and printing what it did."""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from regrow.app.term import shown, style, table, verdict

if TYPE_CHECKING:  # `status` is a light command: no Prefect or ML library at import
    from regrow.flows.monitoring import DriftOutcome, RetrainOutcome
    from regrow.flows.training import TrainingOutcome

# Errors caused by the input (config, data, expectations), not by regrow: exit code 2.
BAD_INPUT = 2
# A training that finished but left the model without any champion (first gate refused).
NO_CHAMPION = 3


def known_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input, reported without a traceback."""
    from regrow.configs.schema import ConfigError
    from regrow.flows.monitoring import NoChampion
    from regrow.flows.steps import ValidationFailed
    from regrow.tasks.data.features import FeatureError
    from regrow.tasks.data.ingest import IngestError
    from regrow.tasks.model.cluster import ClusterError
    from regrow.tasks.model.train import TrainingError
    from regrow.tasks.monitoring.drift import DriftError
    from regrow.tasks.monitoring.scoring import ScoringError
    from regrow.tasks.registry.mlflow_registry import RegistryError
    from regrow.tasks.store.settings import SettingError

    return (ConfigError, IngestError, ValidationFailed, TrainingError, FeatureError, ScoringError,
            DriftError, RegistryError, NoChampion, SettingError, ClusterError)


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def render(o: TrainingOutcome) -> str:
    """The human summary of a training run."""
    if o.skipped:
        return "\n".join([f"model {o.model_name}: run {o.run_id}",
                          f"data: {o.data['rows']} rows from {shown(o.data['source'])}",
                          f"training skipped -- {o.skipped}",
                          f"champion stays {_v(o.champion_after)}",
                          *(f"note: {shown(n)}" for n in o.notes)])
    lines = [f"model {o.model_name}: run {o.run_id}",
             f"data: {o.data['rows']} rows from {shown(o.data['source'])}"
             + (f", {o.data['time_min']} .. {o.data['time_max']}" if o.data.get("time_min") else ""),
             f"split: {o.split['method']}, {o.split['train_rows']} train / "
             f"{o.split['holdout_rows']} holdout rows", "",
             f"candidates (cross-validated {o.metric}):"]
    for c in o.candidates:
        mark = "*" if c["name"] == o.best else " "
        lines.append(f" {mark} {c['name']:<28} {_fmt(c['cv_score'])} +- {_fmt(c['cv_std'])}  "
                     f"{c['best_params'] or ''}")
    ci = o.holdout.get("ci")
    lines += ["", f"holdout {o.metric}: candidate {_fmt(o.holdout['metrics'].get(o.metric))}"
              + (f" (95% CI {_fmt(ci[0])}..{_fmt(ci[1])})" if ci else "")
              + (f", champion v{o.champion_before} {_fmt(o.champion_holdout['metrics'].get(o.metric))}"
                 if o.champion_holdout else ", no champion yet"), "",
              "gate:", f"  {'rule':<26} {'metric':<10} {'measured':>9} {'threshold':>12}  result  detail"]
    for r in o.decision["rules"]:
        thr = "-" if r["threshold"] is None else f"{r['comparator']} {r['threshold']:.4f}"
        result = verdict("pass") + "  " if r["passed"] else verdict("FAIL") + "  "
        lines.append(f"  {r['rule']:<26} {r['metric']:<10} {_fmt(r['measured']):>9} {thr:>12}  "
                     f"{result}  {r['detail']}")
    word = verdict(o.decision["verdict"].upper())
    lines += ["", f"verdict: {word} -- {'; '.join(o.decision['reasons'])}",
              f"registered {o.model_name} v{o.version}; champion: "
              + (f"{_v(o.champion_before)} -> {_v(o.champion_after)}" if o.promoted
                 else f"stays {_v(o.champion_after)}"),
              f"MLflow: {o.tracking_uri} experiment {o.experiment_id}, run {o.run_id}"]
    if o.approval:
        a = o.approval
        lines.insert(-1, f"promotion {'approved' if a['approved'] else 'rejected'} by "
                         f"{shown(a['approver'])} ({a['how']}): {shown(a['reason'])}")
    lines += [f"note: {shown(n)}" for n in o.notes]
    return "\n".join(lines)


def run_training(config_path: str, overrides: dict[str, Any] | None, *, as_json: bool,
                 reason: str, trigger: str) -> int:
    """Run the flow; print the summary or the input problem. Returns the exit code."""
    from regrow.flows.training import train_flow

    try:
        outcome = train_flow(config_path, overrides=overrides, trigger=trigger, reason=reason)
    except Exception as err:  # noqa: BLE001 - an outage says which service; bad input is exit 2
        message = unreachable(err)
        if message is not None:
            print(f"error: training failed, champion unchanged: {message}", file=sys.stderr)
            if as_json:
                print(json.dumps({"status": "failed", "error": message, "kind": "unreachable"}))
            return 1
        if not isinstance(err, known_errors()):
            raise
        print(f"error: {err}", file=sys.stderr)
        if as_json:
            print(json.dumps({"status": "failed", "error": str(err),
                              "kind": type(err).__name__}))
        return BAD_INPUT
    print(json.dumps(asdict(outcome), indent=2, default=str) if as_json else render(outcome))
    if outcome.champion_after is None and not outcome.skipped:
        # Nothing can score: a decision, but not a success for whoever runs this.
        if not as_json:
            print(f"\n{style('NO CHAMPION', 'bad', sys.stderr)}: {outcome.model_name} has no "
                  f"champion yet, so nothing can score; the gate refused v{outcome.version} (see "
                  "the failed rules above). Fix the data or the config and train again, or "
                  "promote it by hand with `regrow promote --override-gate`.", file=sys.stderr)
        return NO_CHAMPION
    return 0


def unreachable(err: BaseException) -> str | None:
    """Which store or server could not be reached (or written), if that is what `err` says
    (`regrow.app.outage`)."""
    from regrow.app.outage import describe

    return describe(err)


def guarded(fn, as_json: bool) -> Any:
    """Run `fn`; on bad input print the problem (as JSON too when asked) and return exit 2.
    An outage (MLflow not answering is a `RegistryError` too) goes on to the command line's
    handler: exit 1."""
    try:
        return fn()
    except known_errors() as err:
        if unreachable(err) is not None:
            raise
        print(f"error: {err}", file=sys.stderr)
        if as_json:
            print(json.dumps({"status": "failed", "error": str(err), "kind": type(err).__name__}))
        return BAD_INPUT


def render_retrain(r: RetrainOutcome) -> str:
    """One retrain request's answer and its training."""
    text = f"retrain request #{r.request_id}: {verdict(r.verdict.upper())} -- {shown(r.detail)}"
    if r.training:
        text += "\n\n" + render(r.training)
    if r.error:
        text += f"\ntraining failed: {shown(r.error)} (champion unchanged)"
    return text


def render_drift(o: DriftOutcome) -> str:
    """A drift check's verdict, reasons and follow-up."""
    a = o.assessment
    lines = [f"drift check #{o.check_id} for {o.model} v{o.version}: "
             f"{verdict(a['verdict'].upper())} ({a['window_rows']} rows in the window)"]
    lines += [f"  - {shown(r)}" for r in a["reasons"]]
    if a.get("summary"):
        lines += table(["column", "method", "distance", "threshold", "verdict"],
                       [[c["column"], c["method"], _fmt(c["score"]), _fmt(c.get("threshold")),
                         "drift" if c["drifted"] else "ok"] for c in a["summary"]["columns"]],
                       indent="    ", verdicts=[4])
    if o.report_path:
        lines.append(f"report: {o.report_path}")
    if o.catch_up:
        lines.append(shown(o.catch_up))
    elif a.get("warning"):
        lines.append(style("WARNING", "warn") + ": drift without a persistent performance "
                     "degradation; no retrain asked (retrain.on: performance)")
    elif a["verdict"] == "drift" and not a["persistent"]:
        lines.append("no retrain asked yet (waiting for persistence)")
    if o.bake:
        b = o.bake
        lines.append(f"bake of v{b['version']} against v{b['previous_version']}: {b['window']} "
                     f"-> {b['state'].upper()} ({b['windows_done']}/{b['windows']} windows)")
        if b["state"] == "rolled_back":
            lines.append(style("ROLLED BACK", "bad")
                         + f": champion is v{b['previous_version']} again ({b['detail']})")
    if o.retrain:
        lines.append(render_retrain(o.retrain))
    return "\n".join(lines)


def status(loaded) -> dict[str, Any]:
    """Champion, latest drift checks, retrain requests and trainings of one model."""
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.policy.lease import as_reaped
    from regrow.tasks.registry import bake as baking
    from regrow.tasks.registry import governance as gov
    from regrow.tasks.registry.mlflow_registry import CHALLENGER, CHAMPION, Registry
    from regrow.tasks.store import database as st
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    name = loaded.config.registry.model_name
    reg, store = Registry(settings), st.Store(settings.database_url)
    found = gov.outside_moves(reg, store, name, "regrow status")
    champion = reg.alias_version(name, CHAMPION)
    info: dict[str, Any] = {"model": name, "champion": champion,
                            "challenger": reg.alias_version(name, CHALLENGER)}
    if champion:
        v = reg.version_info(name, champion)
        info["champion_run"] = v.run_id
        if v.run_id is not None:  # None: a version registered from outside any run
            tags = reg.run_info(v.run_id)["tags"]
            info["champion_trigger"] = {k.removeprefix("regrow."): tags.get(k) for k in (
                "regrow.trigger", "regrow.trigger_reason", "regrow.trigger_ref")}
    info["drift_checks"] = st.recent_drift_checks(store, name, 5)
    # dead work reads as crashed at once (the next training or request records it)
    info["trainings"], info["retrain_requests"] = as_reaped(
        store, name, store.training_runs(name, 5), policy.recent_requests(store, name, 10))
    info["orphans"] = [{"version": o.version, "reason": o.tags.get(gov.ORPHAN_REASON_TAG)}
                       for o in gov.orphans(reg, name)]
    info["alias_history"] = store.alias_history(name)[-6:]
    info["external_moves"] = [m.describe() for m in found]
    info["bakes"] = [b.to_dict() for b in baking.latest(store, name, 3)]
    return json.loads(json.dumps(info, default=lambda v: st.iso(v) if isinstance(v, dt.datetime)
                                 else str(v)))


# Training statuses as `status` prints them.
STATUS_WORDS = {"promoted_then_crashed": "promoted, then crashed"}


def render_status(info: dict[str, Any]) -> str:
    """`status` as text; text from outside (reasons, refs, actors) is `shown` inert."""
    def ver(v: str | None) -> str:
        return f"v{v}" if v else "none"

    lines = [f"model {info['model']}: champion {ver(info['champion'])}, "
             f"challenger {ver(info['challenger'])}"]
    if info.get("champion_trigger"):
        t = info["champion_trigger"]
        lines.append(f"  champion trained by {shown(t['trigger'])}: {shown(t['trigger_reason'])}"
                     + (f" [{shown(t['trigger_ref'])}]" if t.get("trigger_ref") else ""))
    for move in info.get("external_moves", []):
        lines.append(f"  MISMATCH: {shown(move)} was moved outside regrow (recorded as actor "
                     "'external' by the next promotion or rollback)")
    for b in info.get("bakes", [])[:1]:
        lines.append(f"  bake of v{b['version']} against v{b['previous_version']}: {b['state']}, "
                     f"{b['windows_done']}/{b['windows']} windows "
                     f"({shown(b['detail'] or 'no window yet')})")
    lines.append("drift checks (newest first):")
    lines += table(["#", "checked at (UTC)", "version", "verdict", "rows", "share", "drifted"],
                   [[c["id"], c["checked_at"][:19], f"v{c['version']}", c["verdict"],
                     c["window_rows"], _fmt(c["drift_share"]), ", ".join(c["drifted_columns"])]
                    for c in info["drift_checks"]], verdicts=[3]) \
        if info["drift_checks"] else ["  none yet"]
    lines.append("retrain requests (newest first):")
    lines += table(["#", "asked at (UTC)", "kind", "verdict", "state", "reason"],
                   [[r["id"], r["created_at"][:19], r["kind"], r["verdict"], r["state"],
                     r["reason"][:70]] for r in info["retrain_requests"]], verdicts=[3]) \
        if info["retrain_requests"] else ["  none yet"]
    for o in info.get("orphans", []):
        lines.append(f"  ORPHAN: v{o['version']} is never promoted: {shown(o['reason'] or '-')}")
    lines.append("trainings (newest first):")
    lines += table(["started at (UTC)", "trigger", "status", "verdict", "version"],
                   [[t["started_at"][:19], t["trigger"],
                     STATUS_WORDS.get(t["status"], t["status"]), t["verdict"] or "-",
                     f"v{t['version']}" if t["version"] else "-"] for t in info["trainings"]],
                   verdicts=[2, 3]) if info["trainings"] else ["  none yet"]
    return "\n".join(lines)


def fleet_status(stale_after: float | None = None) -> Any:
    """Every model of the state directory (`tasks.store.fleet.collect`): the monitoring store
    alone, no MLflow or Prefect import."""
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.fleet import collect
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    store = Store(settings.database_url)
    try:
        return collect(store, settings.home, stale_after)
    finally:
        store.dispose()


def render_fleet(fleet: Any) -> str:
    """The fleet view as text: a summary line, the table (needs-a-person first), then each
    reason in full. Text from outside (model names, kinds) is `shown` inert by `table`."""
    from regrow.tasks.store.fleet import HEADERS, age, cells

    if not fleet.models:
        return (f"no models in {fleet.store} yet: `regrow train CONFIG` trains one, "
                "`regrow up CONFIG...` serves them")
    need = fleet.attention
    lines = [f"{len(fleet.models)} model(s) in {fleet.store}: "
             + (style(f"{need} need(s) a person", "bad") if need else "none needs a person")
             + f"; champions as the alias history records them, stale after "
             f"{age(fleet.stale_after_seconds)}"]
    lines += table(list(HEADERS), [cells(m) for m in fleet.models], indent="", max_width=40,
                   verdicts=[2])
    for m in fleet.models:
        for n in m.needs_person:
            lines.append(f"  {shown(m.model)}: {n['code']} -- {shown(n['detail'])}")
    return "\n".join(lines)
