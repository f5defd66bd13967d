"""Policy benchmark: what the shipped retrain policy and the one ``regrow backtest --compare``
picks do on histories whose answer is known, against an oracle that retrains every window and
a champion never retrained, all replayed in the same run.

Cases (synthetic, seeded; a binary label from four numeric columns and a categorical one, one
row per 10 minutes, the first champion trained on the 3,000 rows before the start, then 12
windows of 1,000 rows, labels arriving with each window, trainings on the latest 2,000
labelled rows):

- no drift: the same relation throughout;
- abrupt change: from window 5 on the relation's weights change (two signs flip);
- seasonal: the weights turn with a period of 12 windows (cos/sin of a season angle);
- label noise: from window 5 on a third of the labels are coin flips.

Policies: the shipped defaults (the config names only its data, one candidate and a window of
1,000 rows), and the best of a small grid replayed by `tasks.monitoring.compare` (retrain.on x
tolerance x persistence k; 0.002 per training). Baselines in the same run: the oracle (a model
trained, without a gate, on the latest labelled rows before every window: what retraining
every window buys) and never retraining (the first champion throughout).

Targets: no drift: 0 promotions; abrupt change: a retrain asked in the first window where the
drop is measurable (the never-retrained champion short of its holdout value by more than the
configured minimum on that window, in hindsight); seasonal: at least 80% of the oracle's gain
over never retraining, with at most half its trainings; promotions worse on the next window
than the model they replaced: at most 1 in 10 (over the cases).

Usage::

    .venv/bin/python -m tests.bench policy
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tests.bench import record

WARMUP, WINDOW, WINDOWS, CHANGE, TRAIN = 3000, 1000, 12, 5, 2000
GRID = ["retrain.on=performance,any", "monitoring.performance.tolerance=0.02,0.05",
        "monitoring.persistence.k=1,2"]
COST = 0.002


def _rows(n: int, rng: np.random.Generator, weights: np.ndarray,
          noise: float = 0.0) -> pd.DataFrame:
    x = rng.normal(size=(n, 4))
    seg = rng.choice(["a", "b", "c"], size=n)
    logit = x @ weights + np.where(seg == "a", 0.6, -0.3)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    flip = rng.random(n) < noise
    y[flip] = rng.integers(0, 2, size=int(flip.sum()))
    return pd.DataFrame({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "x3": x[:, 3],
                         "segment": seg, "label": y})


BASE = np.array([2.5, 0.0, 1.0, 0.0])  # the seasonal case's weights at angle 0


def case(name: str, seed: int) -> pd.DataFrame:
    """The history of a case: WARMUP rows, then WINDOWS windows of WINDOW rows."""
    rng = np.random.default_rng(seed)
    parts = [_rows(WARMUP, rng, BASE)]
    for j in range(1, WINDOWS + 1):
        w, noise = BASE, 0.0
        if name == "abrupt change" and j >= CHANGE:
            w = np.array([-1.0, -1.5, 1.0, 1.5])  # two signs flip, a silent column speaks
        elif name == "seasonal":  # a turn of 30 degrees a window
            angle = 2 * np.pi * j / 12
            w = np.array([2.5 * np.cos(angle), 2.5 * np.sin(angle), 1.0, 0.0])
        elif name == "label noise" and j >= CHANGE:
            noise = 0.67  # two thirds drawn again at random: a third are coin flips
        parts.append(_rows(WINDOW, rng, w, noise))
    frame = pd.concat(parts, ignore_index=True)
    frame.insert(0, "ts", pd.date_range("2024-01-01", periods=len(frame), freq="10min"))
    frame.insert(0, "row_id", np.arange(len(frame)))
    return frame


CONFIG: dict[str, Any] = {
    "data": {"source": {"kind": "file", "path": "data.parquet"}, "target": "label",
             "task": "binary", "time_column": "ts", "id_column": "row_id"},
    "features": {"numeric": ["x0", "x1", "x2", "x3"], "categorical": ["segment"],
                 "drop": ["ts"], "infer": False},
    "candidates": {"cv_folds": 2, "estimators": [
        {"name": "logreg", "estimator": "logistic_regression", "params": {"max_iter": 300}}]},
    "monitoring": {"window": {"rows": WINDOW}},
    "registry": {"model_name": "policy-bench"},
}


def oracle(loaded, frame: pd.DataFrame, opts) -> tuple[float, int]:
    """(row-weighted metric, trainings) of a model trained before every window on the latest
    labelled rows and always served (no gate)."""
    from regrow.tasks.monitoring import backtest as bt

    line = bt.timeline(loaded.config, frame, opts)
    total = weight = 0.0
    for j, pos in enumerate(line.windows):
        upto = int(pos[0])
        at = line.times.iloc[upto - 1] if j else line.start
        rows = bt.training_rows(line, upto, at, opts.train_window)
        _, model, _ = bt.fit(loaded.config, rows, str(j + 1), None)
        if model is None:
            continue
        rows_w = line.frame.iloc[pos]
        _, value = bt._hindsight(loaded.config, model, bt._scored(loaded.config, model, rows_w),
                                 rows_w[loaded.config.data.target])
        if value is not None:
            total, weight = total + value * len(pos), weight + len(pos)
    return total / weight, len(line.windows)


def measurable(report) -> int | None:
    """The first window where the never-retrained champion fell short of its holdout value by
    more than the configured minimum, in hindsight."""
    from regrow.tasks.monitoring import compare as cmp
    from regrow.tasks.monitoring.assess import metric_drop

    minimum = cmp.yardstick(report)
    ref = report.first_champion["holdout"].get(report.totals.metric)
    if minimum is None or ref is None:
        return None
    for w in report.windows:
        if w.realized_first is not None and \
                metric_drop(report.totals.metric, ref, w.realized_first, minimum[1]) > minimum[0]:
            return w.index
    return None


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench policy")
    p.add_argument("--seed", type=int, default=0)
    args, _ = p.parse_known_args(argv)
    rows: list[dict[str, Any]] = []
    verdicts: list[str] = []
    worse: dict[str, int] = {}
    judged: dict[str, int] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        os.environ["REGROW_HOME"] = home
        from regrow.configs.schema import load_config
        from regrow.tasks.monitoring import backtest as bt
        from regrow.tasks.monitoring import compare as cmp

        for i, name in enumerate(["no drift", "abrupt change", "seasonal", "label noise"]):
            frame = case(name, args.seed + i)
            folder = Path(home) / name.replace(" ", "-")
            folder.mkdir()
            frame.iloc[:WARMUP].to_parquet(folder / "data.parquet", index=False)
            (folder / "model.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
            loaded = load_config(folder / "model.yaml")
            opts = bt.Options(window=str(WINDOW), start=str(frame["ts"].iloc[WARMUP]),
                              train_window=str(TRAIN))
            t0 = time.perf_counter()
            result = cmp.compare(loaded, frame, opts, cmp.variants(GRID),
                                 training_cost=COST)
            by = {o.name: o for o in result.outcomes}
            shipped, picked = by[cmp.AS_GIVEN], result.best
            base = shipped.report
            never = base.totals.without_retraining if base else None
            best_oracle, oracle_trainings = oracle(loaded, frame, opts)
            seconds = time.perf_counter() - t0
            first_measurable = measurable(base) if base else None
            for label, o in (("shipped defaults", shipped), (f"--compare pick: {picked.name}",
                                                             picked)):
                first_request = next((w.index for w in (o.report.windows if o.report else [])
                                      if w.policy is not None), None)
                gain = None if o.value is None or never is None else o.value - never
                oracle_gain = best_oracle - never if never is not None else None
                share = None if gain is None or oracle_gain is None or oracle_gain <= 0.001 \
                    else gain / oracle_gain
                if name == "no drift":
                    target, met = "0 promotions", o.promotions == 0
                elif name == "abrupt change":
                    target = f"retrain asked in window {first_measurable} (first measurable)"
                    met = first_measurable is not None and first_request == first_measurable
                elif name == "seasonal":
                    target = (f">= 80% of the oracle's gain with <= {oracle_trainings // 2} "
                              "trainings")
                    met = share is not None and share >= 0.8 and \
                        o.trainings <= oracle_trainings / 2
                else:
                    target = "worse promotions at most 1 in 10"
                    met = o.worse_promotions * 10 <= o.judged_promotions
                kind = "shipped defaults" if o is shipped else "--compare pick"
                worse[kind] = worse.get(kind, 0) + o.worse_promotions
                judged[kind] = judged.get(kind, 0) + o.judged_promotions
                rows.append({
                    "case": name, "policy": label, o.metric: round(o.value, 4)
                    if o.value is not None else None,
                    "gain vs never": None if gain is None else round(gain, 4),
                    "share of oracle gain": None if share is None else f"{share:.0%}",
                    "degraded windows": f"{o.degraded_windows}/{o.windows}",
                    "trainings": o.trainings, "promotions": o.promotions,
                    "worse promotions": f"{o.worse_promotions}/{o.judged_promotions}",
                    "first request": first_request, "target": target,
                    "met": "met" if met else "not met"})
            rows.append({"case": name, "policy": "baseline: oracle (retrain every window)",
                         shipped.metric: round(best_oracle, 4),
                         "gain vs never": None if never is None else
                         round(best_oracle - never, 4), "share of oracle gain": None,
                         "degraded windows": "-", "trainings": oracle_trainings,
                         "promotions": oracle_trainings, "worse promotions": "-",
                         "first request": 1, "target": "-", "met": "-"})
            rows.append({"case": name, "policy": "baseline: never retrain",
                         shipped.metric: None if never is None else round(never, 4),
                         "gain vs never": 0.0, "share of oracle gain": None,
                         "degraded windows": "-", "trainings": 0, "promotions": 0,
                         "worse promotions": "-", "first request": None, "target": "-",
                         "met": "-"})
            print(f"[policy] {name}: {len(result.outcomes)} policies, oracle and never "
                  f"in {seconds:.0f} s", flush=True)
    for kind in worse:
        met = worse[kind] * 10 <= judged[kind]
        verdicts.append(f"{kind}: promotions worse on the next window than the model replaced, "
                        f"over the cases: {worse[kind]} of {judged[kind]} judged (target at most "
                        f"1 in 10): {'met' if met else 'not met'}")
    cols = list(rows[0])
    print(f"\npolicy benchmark: {WINDOWS} windows of {WINDOW} rows after {WARMUP}, train window "
          f"{TRAIN}, grid {' x '.join(GRID)}, training cost {COST}; seed {args.seed}; "
          f"{time.perf_counter() - t_all:.0f} s")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("-" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    print()
    for v in verdicts:
        print(v)
    record("policy", rows, "in the same run: an oracle that trains before every window on the "
           "latest labelled rows and always serves the result (no gate), and the first "
           "champion never retrained", notes=[
               f"{WINDOWS} windows of {WINDOW} rows after {WARMUP}; train window {TRAIN}; "
               f"--compare grid {' x '.join(GRID)}, --training-cost {COST}; seed {args.seed}",
               *verdicts])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
