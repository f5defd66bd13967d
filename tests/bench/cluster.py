"""Candidate search on Dask against the same search in one process (`candidates.backend`).

A synthetic binary table (10 numeric and 3 categorical columns) of `--rows` rows (default
100,000); one HistGradientBoosting candidate with a grid of 4 learning rates, 3 folds: 12
cross-validation fits and the refit, through `tasks.model.train.train` (regrow's own search code).

Arms, interleaved, `--repeats` each (medians):

- ``local``: `candidates.backend: local`, `n_jobs: 1` (the default), in this process;
- ``local-parallel`` (the ratio's baseline): `candidates.backend: local` with `n_jobs` equal to
  `--workers` (joblib's worker processes on this machine): the same fits on as many cores as the
  cluster has, so the ratio shows what the cluster adds beyond using the cores one has;
- ``dask``: `candidates.backend: dask` on a `distributed.LocalCluster` of `--workers` worker
  processes with one thread each, started once before the timings (its start is reported
  apart). Both arms run one native thread per fit (`candidates.threads: 1` here, and
  ``OMP_NUM_THREADS=1`` in the workers), so the cluster's gain is from running fits side by
  side, which needs as many free cores.

Both arms must find the same cross-validated scores and winner; the table says so.

Usage::

    .venv/bin/python -m tests.bench cluster [--rows=100000] [--repeats=3] [--workers=2]
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


def frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 10))
    region = rng.choice(["north", "south", "east", "west"], size=rows)
    channel = rng.choice(["web", "store", "phone"], size=rows)
    plan = rng.choice(["free", "basic", "pro", "team"], size=rows)
    logit = x[:, 0] - 0.8 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + np.where(plan == "pro", 0.7, 0)
    y = (logit + rng.normal(scale=1.0, size=rows) > 0).astype(int)
    out = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    out["region"], out["channel"], out["plan"], out["label"] = region, channel, plan, y
    return out


def config(backend: str, n_jobs: int = 1):
    from regrow.configs.schema import parse_config

    return parse_config({
        "data": {"source": {"kind": "file", "path": "unused.csv"}, "target": "label",
                 "task": "binary"},
        "features": {"numeric": [f"x{i}" for i in range(10)],
                     "categorical": ["region", "channel", "plan"], "infer": False},
        "candidates": {"cv_folds": 3, "seed": 0, "threads": 1, "backend": backend,
                       "n_jobs": n_jobs,
                       "estimators": [{
                           "name": "hgb", "estimator": "hist_gradient_boosting_classifier",
                           "params": {"max_iter": 100, "early_stopping": False},
                           "grid": {"learning_rate": [0.03, 0.1, 0.2, 0.3]}}]},
        "gate": {"primary_metric": "roc_auc"},
        "registry": {"model_name": "bench-cluster"},
    })


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench cluster")
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args, _ = p.parse_known_args(argv)
    from distributed import LocalCluster

    from regrow.tasks.model import cluster as cl
    from regrow.tasks.model.train import train

    data = frame(args.rows)
    t0 = time.perf_counter()
    one_thread = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40, env=one_thread) as made:
        started = time.perf_counter() - t0
        os.environ[cl.ADDRESS_ENV] = made.scheduler_address
        times: dict[str, list[float]] = {"local": [], "local-parallel": [], "dask": []}
        found: dict[str, tuple] = {}
        for i in range(args.repeats):
            for arm in times:
                t = time.perf_counter()
                result = train(config("dask" if arm == "dask" else "local",
                                      args.workers if arm == "local-parallel" else 1), data)
                times[arm].append(time.perf_counter() - t)
                found[arm] = (result.best.best_params, round(result.best.cv_score, 12))
                print(f"  repeat {i + 1} {arm}: {times[arm][-1]:.2f} s", flush=True)
    local, dask = statistics.median(times["local"]), statistics.median(times["dask"])
    par = statistics.median(times["local-parallel"])
    same = found["local"] == found["dask"] == found["local-parallel"]
    print(f"\n{args.rows:,} rows, 1 candidate x 4 grid points x 3 folds = 12 fits + refit; "
          f"{os.cpu_count()} cores; cluster: {args.workers} worker processes x 1 thread "
          f"(started in {started:.1f} s, not in the timings); {args.repeats} repeats")
    rows = [
        {"search": "local, n_jobs 1 (the default)", "median s": local,
         "/ local parallel": f"{local / par:.2f}x"},
        {"search": f"local, n_jobs {args.workers} (baseline)", "median s": par,
         "/ local parallel": "1.00x"},
        {"search": f"Dask LocalCluster, {args.workers} workers", "median s": dask,
         "/ local parallel": f"{dask / par:.2f}x"}]
    print("\n| search | median s | / local parallel |\n|---|---|---|")
    for row in rows:
        print(f"| {row['search']} | {row['median s']:.2f} | {row['/ local parallel']} |")
    print(f"\nsame best parameters and CV score in every arm: {'yes' if same else 'NO'} "
          f"({found['local']} / {found['local-parallel']} / {found['dask']})")
    record("cluster", rows,
        f"the same search in this process with n_jobs {args.workers} (joblib on this machine's "
        "cores, as many as the cluster's workers), in the same run",
        notes=[f"{args.rows:,} rows, 1 candidate x 4 grid points x 3 folds = 12 fits + refit; "
               f"cluster: {args.workers} worker processes x 1 thread (started in {started:.1f} s, "
               f"not in the timings); {args.repeats} repeats",
               f"same best parameters and CV score in every arm: {'yes' if same else 'NO'}"])
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
