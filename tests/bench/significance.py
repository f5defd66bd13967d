"""Significance benchmark: what the sample-size-aware performance rule and the paired gate
decide on constructed cases, against the fixed rules they replace. It measures decisions
(rates of alarms and promotions), not speed; docs/concepts/drift.md and gate.md quote it.

Monitoring (`tasks.monitoring.assess.judge` with `tasks.model.evaluate.bootstrap_se`): binary
windows from a binormal score model (negatives N(0, 1), positives N(d, 1), 20% positives)
whose true ROC AUC is the reference's 0.708 minus a drop of 0 to 0.10, at 300, 2,000 and
27,000 labelled rows; 40 windows a cell. A window is flagged when `degraded` (the default
rule: interval low end above 0 and drop above the minimum 0.02) or, for the baseline, when
the point drop exceeds the fixed 0.05. Then the flights sequence (monthly true AUCs 0.652,
0.683, 0.676, 0.678, 0.664, 0.610, 0.645 on 27,000 rows against 0.708, persistence 2 of 3)
and the hotel one (quarterly MAE 21 -> 91 on 2,000 rows): the month a retrain is asked.

Gate (`tasks.model.evaluate.paired_gain`): a logistic model and a gradient-boosted one
trained on a fixed logistic world. "Same": the champion and a candidate of the same kind,
each trained on 4,000 fresh rows of the unchanged world (a retrain that can gain nothing).
"Better": a candidate trained on 4,000 rows after the world's coefficients moved, the
champion trained before (a retrain that helps). 30 pairs each, 5,000-row holdouts from the
current world; promoted under the old default (`max_regression` 0: point gain >= 0) and the
paired rule at min_improvement 0, 0.002 and 0.005. Also the paired interval's half-width at
holdouts of 1,000, 5,000 and 20,000 rows: the smallest gain a retrain can show.

Usage::

    .venv/bin/python -m tests.bench significance [--reps=40]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from statistics import NormalDist

import numpy as np

from regrow.configs.schema import PerformanceRule
from regrow.tasks.model.evaluate import Scored, bootstrap_se, paired_gain, score_arrays
from regrow.tasks.monitoring.assess import judge
from tests.bench import record

REF_AUC, PREVALENCE, FIXED = 0.708, 0.2, 0.05
SIZES, DROPS = (300, 2000, 27000), (0.0, 0.01, 0.02, 0.03, 0.05, 0.10)
FLIGHTS = (0.652, 0.683, 0.676, 0.678, 0.664, 0.610, 0.645)
MONTHS = ("Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct")


def binormal(n: int, auc: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores whose population ROC AUC is `auc`."""
    d = math.sqrt(2) * NormalDist().inv_cdf(auc)
    y = (rng.random(n) < PREVALENCE).astype(int)
    return y, rng.normal(size=n) + d * y


def window_perf(rule: PerformanceRule, n: int, auc: float, seed: int):
    rng = np.random.default_rng(seed)
    y, s = binormal(n, auc, rng)
    p = 1 / (1 + np.exp(-(s - 1.5)))
    proba, pred = np.column_stack([1 - p, p]), (p > 0.5).astype(int)
    value = score_arrays("binary", y, pred, proba)["roc_auc"]
    se = bootstrap_se("binary", "roc_auc", y, pred, proba, rule.bootstrap_samples, seed)
    return judge(rule, "roc_auc", n, value, REF_AUC, se)


def monitoring(reps: int) -> list[dict]:
    rule = PerformanceRule()
    rows = []
    print(f"\nflagged windows (share of {reps}); new: interval low end > 0 and drop > 0.02 "
          f"(severe: low end > 0.04); old: point drop > {FIXED}")
    print(f"{'rows':>7} {'true drop':>9} {'new':>6} {'severe':>7} {'old':>6} {'median CI half':>15}")
    for n in SIZES:
        for drop in DROPS:
            perfs = [window_perf(rule, n, REF_AUC - drop, 1000 * n + 7 * i + int(drop * 1e3))
                     for i in range(reps)]
            half = statistics.median((p.drop_ci[1] - p.drop_ci[0]) / 2 for p in perfs)
            row = {"rows": n, "true drop": drop,
                   "flagged, new": sum(p.degraded for p in perfs) / reps,
                   "severe, new": sum(p.severe for p in perfs) / reps,
                   "flagged, old (baseline)": sum(p.drop > FIXED for p in perfs) / reps,
                   "median CI half-width": half}
            rows.append(row)
            print(f"{n:>7} {drop:>9.2f} {row['flagged, new']:>6.2f} {row['severe, new']:>7.2f} "
                  f"{row['flagged, old (baseline)']:>6.2f} {half:>15.4f}")
    return rows


def persistence_month(flags: list[bool], severe: list[bool], k: int = 2, n: int = 3) -> str:
    for i, (f, s) in enumerate(zip(flags, severe, strict=True)):
        if f and (s or sum(flags[max(0, i - n + 1):i + 1]) >= k):
            return MONTHS[i]
    return "never"


def cases() -> list[str]:
    rule = PerformanceRule()
    perfs = [window_perf(rule, 27000, auc, 99 + i) for i, auc in enumerate(FLIGHTS)]
    print("\nflights: month, observed AUC, drop (95% CI), new flag, old flag")
    for m, p in zip(MONTHS, perfs, strict=True):
        print(f"  {m} {p.current:.3f} {p.drop:.3f} ({p.drop_ci[0]:.3f}..{p.drop_ci[1]:.3f}) "
              f"{'degraded' + (' severe' if p.severe else '') if p.degraded else '-':<16} "
              f"{'degraded' if p.drop > FIXED else '-'}")
    new = persistence_month([p.degraded for p in perfs], [p.severe for p in perfs])
    old = persistence_month([p.drop > FIXED for p in perfs], [False] * len(perfs))
    print(f"  retrain asked: new {new}, old {old}")
    lines = [f"flights (27,000-row monthly windows): retrain asked in {new} (old rule: {old})"]
    rng = np.random.default_rng(5)
    y = rng.gamma(2.0, 50.0, 2000)
    quarter = y + rng.laplace(0, 91, 2000)
    err_rule = PerformanceRule()
    mae = score_arrays("regression", y, quarter, None)["mae"]
    se = bootstrap_se("regression", "mae", y, quarter, None, 200, 5)
    p = judge(err_rule, "mae", 2000, mae, 21.0, se)
    print(f"\nhotel: MAE 21 -> {mae:.1f} on 2,000 rows: {p.describe()}; degraded {p.degraded}, "
          f"severe {p.severe} (asks in the first quarter: {p.severe})")
    lines.append(f"hotel (MAE 21 -> {mae:.1f}, 2,000 rows): severe {p.severe}, so asked in the "
                 f"first quarter: {p.severe}")
    return lines


def _world(n: int, coef: np.ndarray, rng: np.random.Generator):
    x = rng.normal(size=(n, len(coef)))
    z = x @ coef + 0.8 * np.sin(2 * x[:, 0]) * x[:, 1]
    return x, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)


def _fit(kind: str, x, y, seed: int):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    if kind == "logistic":
        return LogisticRegression(max_iter=500).fit(x, y)
    return HistGradientBoostingClassifier(max_iter=100, random_state=seed).fit(x, y)


def _scored(model, x) -> Scored:
    return Scored(model.predict(x), model.predict_proba(x))


def gate(reps: int) -> list[dict]:
    before = np.array([1.2, -0.8, 0.5, 0.3, -0.2, 0.0])
    after = np.array([1.2, -0.3, 0.5, 0.8, -0.2, 0.4])
    mins = (0.0, 0.002, 0.005)
    print(f"\ngate: share of {reps} retrains promoted (roc_auc, 5,000-row holdout, 200 paired "
          "resamples, 95%)")
    print(f"{'case':>16} {'model':>9} {'mean gain':>10} {'old':>5} "
          + " ".join(f"{'min ' + str(m):>9}" for m in mins))
    rows = []
    for case in ("same", "better"):
        for kind in ("logistic", "boosting"):
            gains, old, new = [], 0, dict.fromkeys(mins, 0)
            for i in range(reps):
                rng = np.random.default_rng(10_000 + i)
                champ = _fit(kind, *_world(4000, before, rng), i)
                now = before if case == "same" else after
                cand = _fit(kind, *_world(4000, now, rng), i + 1)
                hx, hy = _world(5000, now, rng)
                g = paired_gain("binary", "roc_auc", hy, _scored(cand, hx), _scored(champ, hx),
                                samples=200, seed=i)
                gains.append(g.value)
                old += g.value >= 0
                for m in mins:
                    new[m] += g.low is not None and g.low > m
            print(f"{case:>16} {kind:>9} {statistics.mean(gains):>+10.4f} {old / reps:>5.2f} "
                  + " ".join(f"{new[m] / reps:>9.2f}" for m in mins))
            rows.append({"case": case, "model": kind, "mean gain": statistics.mean(gains),
                         "promoted, old (baseline)": old / reps,
                         **{f"promoted, paired, min {m}": new[m] / reps for m in mins}})
    print("\npaired interval half-width of the gain (same-world pairs, logistic and boosting)")
    for n in (1000, 5000, 20000):
        halves = []
        for i in range(10):
            rng = np.random.default_rng(20_000 + i)
            a = _fit("logistic", *_world(4000, before, rng), i)
            b = _fit("boosting", *_world(4000, before, rng), i)
            hx, hy = _world(n, before, rng)
            g = paired_gain("binary", "roc_auc", hy, _scored(a, hx), _scored(b, hx),
                            samples=200, seed=i)
            halves.append((g.high - g.low) / 2)
        print(f"  {n:>6} rows: median {statistics.median(halves):.4f}")
    return rows


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.bench significance")
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args(argv)
    flagged = monitoring(args.reps)
    lines = cases()
    promoted = gate(min(args.reps, 30))
    record("significance", flagged,
           f"the fixed rule on the same windows and pairs: a point drop above {FIXED} "
           "(monitoring), a point gain >= 0 (gate)",
           tables={"gate: share of retrains promoted": promoted}, notes=lines)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
