"""Estimate benchmark: performance estimated without labels (``tasks.monitoring.estimate``, CBPE) against
the realized performance on shifted windows whose labels are known.

Data: 4 numeric inputs and a label drawn from a fixed logistic P(y|x); a window is moved by a
known covariate shift (P(x) changes, P(y|x) does not -- the case CBPE is meant for). Two
models are fitted on 8,000 rows and calibrated (isotonic) on a 4,000-row holdout, as regrow
does at registration: a strongly regularised logistic regression (under-confident
probabilities, so calibration matters) and a gradient boosting classifier (single-threaded,
so a busy machine does not distort the run). For each
scenario and seed the window's primary metrics are estimated from the model's probabilities
alone and then computed from the labels.

The baseline is what a label-free watch has without an estimate: the holdout value (assume
nothing changed). The table shows medians over seeds of the realized and estimated values and
the mean absolute error of the estimate and of the baseline, per metric.

Usage::

    .venv/bin/python -m tests.bench estimate --quick        # 3 seeds
    .venv/bin/python -m tests.bench.estimate --seeds=10 --rows=2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd

from tests.bench import record

SEED = 20_26
METRICS = ("roc_auc", "accuracy", "f1")
COLUMNS = ["x0", "x1", "x2", "x3"]
# name -> (mean shift per latent column, spread factor)
SCENARIOS: dict[str, tuple[dict[int, float], float]] = {
    "none": ({}, 1.0),
    "x0 +0.8": ({0: 0.8}, 1.0),
    "x0 -1, x1 +0.7": ({0: -1.0, 1: 0.7}, 1.0),
    "spread x0.5": ({}, 0.5),
    "spread x1.6": ({}, 1.6),
    "irrelevant x3 +3": ({3: 3.0}, 1.0),
    "mixed": ({0: 0.5, 2: -1.0, 3: 1.0}, 0.8),
}


def world(n: int, seed: int, shift: dict[int, float] | None = None,
          scale: float = 1.0) -> pd.DataFrame:
    """Rows with labels from the fixed P(y|x), after moving the covariates."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * scale
    for col, by in (shift or {}).items():
        x[:, col] += by
    logit = 1.5 * x[:, 0] - 1.0 * x[:, 1] + 0.5 * x[:, 2] - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(x, columns=COLUMNS).assign(label=y)


def models() -> dict:
    """The fitted models and their holdout calibration and holdout metrics."""
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    from regrow.tasks.model.evaluate import score_arrays
    from regrow.tasks.monitoring import estimate as est

    train, holdout = world(8000, SEED), world(4000, SEED + 1)
    out = {}
    for name, model in [("logreg C=0.001", LogisticRegression(C=0.001, max_iter=500)),
                        ("gradient_boost", GradientBoostingClassifier(random_state=SEED))]:
        model.fit(train[COLUMNS], train["label"])
        cal = est.calibrate_model(model, holdout[COLUMNS], holdout["label"].to_numpy())
        hx = holdout[COLUMNS]
        ref = score_arrays("binary", holdout["label"].to_numpy(), model.predict(hx),
                           model.predict_proba(hx))
        out[name] = (model, cal, ref)
    return out


def run(seeds: int, rows: int) -> list[dict]:
    """One result per (model, scenario): per metric the realized and estimated values over
    seeds, the estimate's absolute errors and the baseline's."""
    from regrow.tasks.model.evaluate import score_arrays
    from regrow.tasks.monitoring import estimate as est

    results = []
    for name, (model, cal, ref) in models().items():
        for scenario, (shift, scale) in SCENARIOS.items():
            r = {"model": name, "scenario": scenario, "seconds": []}
            for m in METRICS:
                r[m] = {"realized": [], "estimated": [], "err": [], "base_err": []}
            for s in range(seeds):
                w = world(rows, SEED + 100 + s, shift, scale)
                X = w[COLUMNS]
                proba = model.predict_proba(X)
                pred = model.classes_[proba.argmax(axis=1)]
                t0 = time.perf_counter()
                e = est.estimate_metrics(cal, proba[:, 1], pred)
                r["seconds"].append(time.perf_counter() - t0)
                real = score_arrays("binary", w["label"].to_numpy(), pred, proba)
                for m in METRICS:
                    r[m]["realized"].append(real[m])
                    r[m]["estimated"].append(e[m])
                    r[m]["err"].append(abs(e[m] - real[m]))
                    r[m]["base_err"].append(abs(ref[m] - real[m]))
            results.append(r)
    return results


def table(results: list[dict]) -> str:
    """Medians of realized and estimated values, MAE of the estimate and of the baseline."""
    head = f"{'model':<15} {'scenario':<17}" + "".join(
        f" {m + ' real':>13} {'est':>6} {'MAE':>6} {'base':>6}" for m in METRICS)
    lines = [head, "-" * len(head)]
    for r in results:
        cells = "".join(
            f" {statistics.median(r[m]['realized']):>13.3f} "
            f"{statistics.median(r[m]['estimated']):>6.3f} "
            f"{statistics.mean(r[m]['err']):>6.3f} {statistics.mean(r[m]['base_err']):>6.3f}"
            for m in METRICS)
        lines.append(f"{r['model']:<15} {r['scenario']:<17}{cells}")
    return "\n".join(lines)


def summary(results: list[dict]) -> list[str]:
    """Mean absolute error over every shifted window (scenario `none` excluded), per metric."""
    shifted = [r for r in results if r["scenario"] != "none"]
    out = []
    for m in METRICS:
        err = [e for r in shifted for e in r[m]["err"]]
        base = [e for r in shifted for e in r[m]["base_err"]]
        worst = max(err)
        out.append(f"{m:<9} shifted windows: estimate MAE {statistics.mean(err):.4f} "
                   f"(max {worst:.4f}), holdout-value baseline MAE {statistics.mean(base):.4f} "
                   f"-> {statistics.mean(base) / max(statistics.mean(err), 1e-9):.1f}x smaller")
    secs = statistics.median(s for r in results for s in r["seconds"])
    out.append(f"estimate time per window: median {secs * 1000:.1f} ms")
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.estimate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10, help="windows per scenario (default 10)")
    p.add_argument("--rows", type=int, default=2000, help="rows per window (default 2000)")
    p.add_argument("--quick", action="store_true", help="3 seeds")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the benchmark and print its table. Returns 0."""
    args = parse_args(argv)
    seeds = 3 if args.quick else args.seeds
    results = run(seeds, args.rows)
    print(f"\nestimate benchmark -- {os.cpu_count()} cores, python {sys.version.split()[0]}; "
          f"{seeds} windows of {args.rows:,} rows per scenario; labels from a fixed P(y|x)")
    print("real/est: medians of the realized and estimated metric; MAE: mean |est - real|; "
          "base: mean |holdout value - real| (no estimate)")
    print(table(results))
    print("\n".join(summary(results)))
    rows = []
    for r in results:
        row: dict = {"model": r["model"], "scenario": r["scenario"]}
        for m in METRICS:
            row[f"{m} real"] = statistics.median(r[m]["realized"])
            row[f"{m} est"] = statistics.median(r[m]["estimated"])
            row[f"{m} MAE"] = statistics.mean(r[m]["err"])
            row[f"{m} base"] = statistics.mean(r[m]["base_err"])
        rows.append(row)
    record("estimate", rows,
           "assuming the holdout value still holds (base: mean |holdout value - realized|); "
           "real/est: medians of the realized and estimated metric, MAE: mean |est - real|",
           notes=[f"{seeds} windows of {args.rows:,} rows per scenario; labels from a fixed "
                  "P(y|x)", *summary(results)])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
