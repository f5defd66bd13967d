"""Running the training flow from the command line and printing what it did."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from flows.training import TrainingOutcome

# Errors caused by the input (config, data, expectations), not by regrow: exit code 2.
BAD_INPUT = 2


def known_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input, reported without a traceback."""
    from configs.schema import ConfigError
    from flows.steps import ValidationFailed
    from tasks.features import FeatureError
    from tasks.ingest import IngestError
    from tasks.train import TrainingError

    return ConfigError, IngestError, ValidationFailed, TrainingError, FeatureError


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def render(o: TrainingOutcome) -> str:
    """The human summary of a training run."""
    lines = [f"model {o.model_name}: run {o.run_id}",
             f"data: {o.data['rows']} rows from {o.data['source']}"
             + (f", {o.data['time_min']} .. {o.data['time_max']}" if o.data.get("time_min") else ""),
             f"split: {o.split['method']}, {o.split['train_rows']} train / "
             f"{o.split['holdout_rows']} holdout rows", "",
             f"candidates (cross-validated {o.metric}):"]
    for c in o.candidates:
        mark = "*" if c["name"] == o.best else " "
        lines.append(f" {mark} {c['name']:<28} {c['cv_score']:.4f} +- {c['cv_std']:.4f}  "
                     f"{c['best_params'] or ''}")
    ci = o.holdout.get("ci")
    lines += ["", f"holdout {o.metric}: candidate {_fmt(o.holdout['metrics'].get(o.metric))}"
              + (f" (95% CI {ci[0]:.4f}..{ci[1]:.4f})" if ci else "")
              + (f", champion v{o.champion_before} {_fmt(o.champion_holdout['metrics'].get(o.metric))}"
                 if o.champion_holdout else ", no champion yet"), "",
              "gate:", f"  {'rule':<26} {'metric':<10} {'measured':>9} {'threshold':>12}  result  detail"]
    for r in o.decision["rules"]:
        thr = "-" if r["threshold"] is None else f"{r['comparator']} {r['threshold']:.4f}"
        lines.append(f"  {r['rule']:<26} {r['metric']:<10} {_fmt(r['measured']):>9} {thr:>12}  "
                     f"{'pass' if r['passed'] else 'FAIL':<6}  {r['detail']}")
    verdict = o.decision["verdict"].upper()
    lines += ["", f"verdict: {verdict} -- {'; '.join(o.decision['reasons'])}",
              f"registered {o.model_name} v{o.version} (alias challenger); champion: "
              + (f"v{o.champion_before or '-'} -> v{o.champion_after}" if o.promoted
                 else f"stays v{o.champion_after or '-'}"),
              f"MLflow: {o.tracking_uri} experiment {o.experiment_id}, run {o.run_id}"]
    lines += [f"note: {n}" for n in o.notes]
    return "\n".join(lines)


def run_training(config_path: str, overrides: dict[str, Any] | None, *, as_json: bool,
                 reason: str, trigger: str) -> int:
    """Run the flow; print the summary or the input problem. Returns the exit code."""
    from flows.training import train_flow

    try:
        outcome = train_flow(config_path, overrides=overrides, trigger=trigger, reason=reason)
    except known_errors() as err:
        print(f"error: {err}", file=sys.stderr)
        if as_json:
            print(json.dumps({"status": "failed", "error": str(err),
                              "kind": type(err).__name__}))
        return BAD_INPUT
    print(json.dumps(asdict(outcome), indent=2, default=str) if as_json else render(outcome))
    return 0
