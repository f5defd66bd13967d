"""Policy benchmark: what the shipped retrain policy and the one ``regrow backtest --compare``
picks do on histories whose answer is known, against an oracle that retrains every window and
a champion never retrained, all replayed in the same run.

Cases (synthetic, seeded; a binary label from four numeric columns and a categorical one, one
row per 10 minutes, the first champion trained on the 3,000 rows before the start, then 12
windows of 1,000 rows, labels arriving with each window, trainings on the latest 2,000
labelled rows unless the case says otherwise):

- no drift: the same relation throughout;
- abrupt change: from window 5 on the relation's weights change (two signs flip);
- seasonal: a `season` column (winter, spring, summer, autumn, three windows each; the first
  champion has seen winter only) turns the relation a quarter turn a season, and the seasons
  come back: a model that has seen a season knows it again. Its config names the column and a
  gradient-boosting candidate beside the logistic one (the season acts through interactions),
  and trainings read every labelled row, the live default (the other cases: the latest 2,000);
- label noise: from window 5 on a third of the labels are coin flips.

Policies: the shipped defaults (the config names only its data, one candidate and a window of
1,000 rows); those defaults with a shadow trial (of three windows, and of one), without the
retrain of catch-up (`retrain.catch_up: false`) and with any significant gain promoting
(`gate.min_improvement: 0`); and the best of a small grid replayed by
`tasks.monitoring.compare` (tolerance x persistence k x promotion mode, auto or a shadow
trial, beside those named variants; 0.002 per training). Baselines in the same run: the oracle (a model
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
GRID = ["monitoring.performance.tolerance=0.02,0.05", "monitoring.persistence.k=1,2",
        "promotion.mode=auto,shadow"]
# beside the grid, and in the table beside the shipped defaults: those defaults with a shadow
# trial (judged on the default three windows, and on one), and without each of the two rules
# that keep promotions honest (the retrain of catch-up; the gate's minimum gain)
NAMED = {"shadow": {"promotion.mode": "shadow"},
         "shadow, 1 window": {"promotion.mode": "shadow", "promotion.shadow.windows": 1},
         "no catch-up": {"retrain.catch_up": False},
         "any significant gain": {"gate.min_improvement": 0}}
KINDS = ["shipped defaults", *(f"shipped defaults, {n}" for n in NAMED), "--compare pick"]
COST = 0.002
CASES = ["no drift", "abrupt change", "seasonal", "label noise"]


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


BASE = np.array([2.5, 0.0, 1.0, 0.0])
SEASONS = ["winter", "spring", "summer", "autumn"]
SEASON_WINDOWS = 3  # the warm-up is one season long (WARMUP = 3 windows of rows)


def _season_weights(k: int) -> np.ndarray:
    """The relation in season k: BASE's first two weights turned a quarter turn a season."""
    angle = np.pi / 2 * k
    return np.array([2.5 * np.cos(angle), 2.5 * np.sin(angle), 1.0, 0.0])


def windows(name: str) -> int:
    """Windows replayed: two years for the seasonal case (the second shows whether the policy
    knows the seasons again), WINDOWS otherwise."""
    return 2 * len(SEASONS) * SEASON_WINDOWS if name == "seasonal" else WINDOWS


def case(name: str, seed: int) -> pd.DataFrame:
    """The history of a case: WARMUP rows, then `windows(name)` windows of WINDOW rows."""
    rng = np.random.default_rng(seed)
    parts = [_rows(WARMUP, rng, BASE)]
    if name == "seasonal":
        parts[0].insert(5, "season", SEASONS[0])
    for j in range(1, windows(name) + 1):
        w, noise = BASE, 0.0
        k = (j - 1) // SEASON_WINDOWS + 1  # windows 1-3 spring, 4-6 summer, ...
        if name == "abrupt change" and j >= CHANGE:
            w = np.array([-1.0, -1.5, 1.0, 1.5])  # two signs flip, a silent column speaks
        elif name == "seasonal":
            w = _season_weights(k)
        elif name == "label noise" and j >= CHANGE:
            noise = 0.67  # two thirds drawn again at random: a third are coin flips
        part = _rows(WINDOW, rng, w, noise)
        if name == "seasonal":
            part.insert(5, "season", SEASONS[k % len(SEASONS)])
        parts.append(part)
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


def config_for(name: str) -> dict[str, Any]:
    """The case's config: the seasonal one names its season column and a candidate that can
    learn how the season turns the relation."""
    config = yaml.safe_load(yaml.safe_dump(CONFIG))
    if name == "seasonal":
        config["features"]["categorical"].append("season")
        config["candidates"]["estimators"] = [
            {"name": "hgb", "estimator": "hist_gradient_boosting_classifier",
             "params": {"max_iter": 200}}]
    return config


def train_window(name: str) -> str | None:
    """What a training reads: every labelled row for the seasonal case (a model must see a
    whole year to know it), the latest TRAIN rows otherwise."""
    return None if name == "seasonal" else str(TRAIN)


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


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    if not known:
        return None
    m = float(np.median(known))
    return int(m) if m.is_integer() else m


def _target(name: str, o, first_request: int | None, first_measurable: int | None,
            share: float | None, oracle_trainings: int) -> tuple[str, bool]:
    """The case's target and whether one replay of a policy met it."""
    if name == "no drift":
        return "0 promotions", o.promotions == 0
    if name == "abrupt change":
        return ("retrain asked in the first measurable window",
                first_measurable is not None and first_request == first_measurable)
    if name == "seasonal":
        return (">= 80% of the oracle's gain with <= half its trainings",
                share is not None and share >= 0.8 and o.trainings <= oracle_trainings / 2)
    return "worse promotions at most 1 in 10", o.worse_promotions * 10 <= o.judged_promotions


def replay_case(name: str, seed: int, home: Path) -> dict[str, Any]:
    """One case on one seed: the shipped defaults, the --compare pick and both baselines."""
    from regrow.configs.schema import load_config
    from regrow.tasks.monitoring import backtest as bt
    from regrow.tasks.monitoring import compare as cmp

    frame = case(name, seed)
    folder = home / f"{name.replace(' ', '-')}-{seed}"
    folder.mkdir()
    frame.iloc[:WARMUP].to_parquet(folder / "data.parquet", index=False)
    (folder / "model.yaml").write_text(yaml.safe_dump(config_for(name), sort_keys=False))
    loaded = load_config(folder / "model.yaml")
    opts = bt.Options(window=str(WINDOW), start=str(frame["ts"].iloc[WARMUP]),
                      train_window=train_window(name))
    t0 = time.perf_counter()
    named = folder / "variants.yaml"
    named.write_text(yaml.safe_dump(NAMED))
    result = cmp.compare(loaded, frame, opts, cmp.variants(GRID, named), training_cost=COST)
    shipped = next(o for o in result.outcomes if o.name == cmp.AS_GIVEN)
    base = shipped.report
    never = base.totals.without_retraining if base else None
    best_oracle, oracle_trainings = oracle(loaded, frame, opts)
    first_measurable = measurable(base) if base else None
    out: dict[str, Any] = {"never": never, "oracle": best_oracle,
                           "oracle_trainings": oracle_trainings, "policies": {}}
    by = {o.name: o for o in result.outcomes}
    chosen = [shipped, *(by[n] for n in NAMED), result.best]
    for kind, o in zip(KINDS, chosen, strict=True):
        first_request = next((w.index for w in (o.report.windows if o.report else [])
                              if w.policy is not None), None)
        gain = None if o.value is None or never is None else o.value - never
        oracle_gain = best_oracle - never if never is not None else None
        share = None if gain is None or oracle_gain is None or oracle_gain <= 0.001 \
            else gain / oracle_gain
        target, met = _target(name, o, first_request, first_measurable, share,
                              oracle_trainings)
        out["policies"][kind] = {
            "name": o.name, "metric": o.metric, "value": o.value, "gain": gain, "share": share,
            "degraded": o.degraded_windows, "windows": o.windows, "trainings": o.trainings,
            "promotions": o.promotions, "worse": o.worse_promotions,
            "significantly_worse": cmp.significantly_worse(o.report) if o.report else 0,
            "judged": o.judged_promotions, "first_request": first_request,
            "first_measurable": first_measurable, "target": target, "met": met}
    print(f"[policy] {name}, seed {seed}: {len(result.outcomes)} policies, oracle and never in "
          f"{time.perf_counter() - t0:.0f} s; --compare picked {result.best.name}", flush=True)
    return out


def _fmt(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(v, digits)


def table(name: str, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The case's rows over its seeds: medians of the metric, gain, share and trainings; sums
    of windows, promotions and worse promotions; how many seeds met the target."""
    rows = []
    for kind in KINDS:
        ps = [r["policies"][kind] for r in runs]
        picks = sorted({p["name"] for p in ps})
        shares = [p["share"] for p in ps]
        share = _median(shares)
        rows.append({
            "case": name, "policy": kind if kind != "--compare pick"
            else f"--compare pick: {' | '.join(picks)}", ps[0]["metric"]:
            _fmt(_median([p["value"] for p in ps])),
            "gain vs never": _fmt(_median([p["gain"] for p in ps])),
            "share of oracle gain": None if share is None else f"{share:.0%}",
            "degraded windows": f"{sum(p['degraded'] for p in ps)}/"
                                f"{sum(p['windows'] for p in ps)}",
            "trainings": _median([p["trainings"] for p in ps]),
            "promotions": _median([p["promotions"] for p in ps]),
            "worse promotions": f"{sum(p['worse'] for p in ps)}/"
                                f"{sum(p['judged'] for p in ps)}",
            "of them significantly worse": sum(p["significantly_worse"] for p in ps),
            "first request": ",".join("-" if p["first_request"] is None
                                      else str(p["first_request"]) for p in ps),
            "target": ps[0]["target"] + (
                f" (window {','.join(str(p['first_measurable']) for p in ps)})"
                if name == "abrupt change" else ""),
            "met": f"{sum(p['met'] for p in ps)}/{len(ps)} seeds"})
    metric = runs[0]["policies"]["shipped defaults"]["metric"]
    rows.append({"case": name, "policy": "baseline: oracle (retrain every window)",
                 metric: _fmt(_median([r["oracle"] for r in runs])),
                 "gain vs never": _fmt(_median([None if r["never"] is None
                                                else r["oracle"] - r["never"] for r in runs])),
                 "share of oracle gain": None, "degraded windows": "-",
                 "trainings": _median([r["oracle_trainings"] for r in runs]),
                 "promotions": _median([r["oracle_trainings"] for r in runs]),
                 "worse promotions": "-", "first request": "1", "target": "-", "met": "-"})
    rows.append({"case": name, "policy": "baseline: never retrain",
                 metric: _fmt(_median([r["never"] for r in runs])), "gain vs never": 0.0,
                 "share of oracle gain": None, "degraded windows": "-", "trainings": 0,
                 "promotions": 0, "worse promotions": "-", "first request": None,
                 "target": "-", "met": "-"})
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench policy")
    p.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    p.add_argument("--seeds", type=int, default=3,
                   help="replays of every case, each on its own seeded history (default 3)")
    p.add_argument("--case", action="append", choices=CASES,
                   help="replay only this case (repeatable; default: all)")
    args, _ = p.parse_known_args(argv)
    rows: list[dict[str, Any]] = []
    verdicts: list[str] = []
    worse: dict[str, int] = {}
    significant: dict[str, int] = {}
    judged: dict[str, int] = {}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as home:
        os.environ["REGROW_HOME"] = home
        for i, name in enumerate(CASES):
            if args.case and name not in args.case:
                continue
            runs = [replay_case(name, args.seed + i + 100 * k, Path(home))
                    for k in range(args.seeds)]
            rows += table(name, runs)
            for r in runs:
                for kind, o in r["policies"].items():
                    worse[kind] = worse.get(kind, 0) + o["worse"]
                    significant[kind] = significant.get(kind, 0) + o["significantly_worse"]
                    judged[kind] = judged.get(kind, 0) + o["judged"]
    for kind in worse:
        met = worse[kind] * 10 <= judged[kind]
        verdicts.append(f"{kind}: promotions worse on the next window than the model replaced, "
                        f"over the cases and seeds: {worse[kind]} of {judged[kind]} judged "
                        f"(target at most 1 in 10): {'met' if met else 'not met'}; "
                        f"significantly worse (the high end of the paired interval of the gain "
                        f"on that window below 0): {significant[kind]}")
    setting = (f"{WINDOWS} windows of {WINDOW} rows after {WARMUP} (seasonal: "
               f"{windows('seasonal')}), train window {TRAIN} (seasonal: every labelled row); "
               f"--compare grid {' x '.join(GRID)} and {', '.join(NAMED)}, "
               f"--training-cost {COST}; seeds "
               f"{args.seed}+case+100*k for k < {args.seeds}; metric, gain, share, trainings "
               "and promotions are medians over the seeds, windows and worse promotions sums")
    cols = list(dict.fromkeys(c for r in rows for c in r))
    print(f"\npolicy benchmark: {setting}; {time.perf_counter() - t_all:.0f} s")
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join("-" if r.get(c) is None else str(r.get(c)) for c in cols) + " |")
    print()
    for v in verdicts:
        print(v)
    record("policy", rows, "in the same run: an oracle that trains before every window on the "
           "latest labelled rows and always serves the result (no gate), and the first "
           "champion never retrained", notes=[setting, *verdicts])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
