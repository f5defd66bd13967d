"""Training benchmark: the Prefect training flow against a bare scikit-learn script.

Measures, in one run, with every baseline taken in the same run:

1. ``train_flow`` (in-process, against ``prefect_test_harness``) against a bare script that
   does the same learning work -- read the file with pandas, the same time split, the same
   Pipeline and estimator, the same ``GridSearchCV`` over one point and the same folds, the
   refit, the holdout AUC -- on synthetic binary data of each size. Medians, flow/bare ratio
   (target: <= 1.3 at 100k rows), and where the flow's time goes: each step as Prefect
   recorded its task run, plus a few project functions timed inside them (PROBES). The
   harness start and the warm-up runs (imports, MLflow database) are reported apart. The
   warm-up registers a champion, so every measured flow run also scores the champion on its
   holdout, as a real retraining does; the config keeps the schema's defaults (bootstrap CI
   of 200 resamples, 3 folds). Both arms must report the same holdout AUC.
2. ``regrow --help`` wall time, median of 5 runs (target: <= 1 s).
3. ``regrow demo`` on a brand-new ``REGROW_HOME``: seconds to the first champion and in all
   (includes the ephemeral Prefect server's start and migrations).

Usage (``python -m tests.bench`` passes on only arguments that start with ``-``, so give
values with ``=``)::

    make bench
    .venv/bin/python -m tests.bench training --quick
    .venv/bin/python -m tests.bench training --sizes=10000,100000 --repeats=3 --no-demo
    .venv/bin/python -m tests.bench.training --help

Timings are wall-clock on a shared 2-core machine and noisy (+-30% is common); arms are
interleaved so that background load hits both. Both arms run with OpenMP/BLAS capped at one
thread (``--threads``, default 1): with the libraries' default of one thread per core, a busy
machine made the same HistGradientBoosting fit take anywhere from 2 to 50 s. The subprocess
timings (``--help``, demo) run the product as shipped, uncapped.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench import record

# --- what both arms train: one dataset layout, one estimator, one split ---------------------

NUMERIC = [f"x{i}" for i in range(10)]
CATEGORICAL = ["region", "channel", "plan"]
FEATURES = NUMERIC + CATEGORICAL
TARGET, TIME, ID = "label", "ts", "row_id"
LEVELS = {
    "region": ["north", "south", "east", "west", "central"],
    "channel": ["web", "store", "phone"],
    "plan": ["free", "basic", "pro", "team", "enterprise", "edu", "trial", "legacy"],
}
HGB_PARAMS = {"max_iter": 100, "learning_rate": 0.1, "early_stopping": False}
SEED = 0
CV_FOLDS = 3
HOLDOUT_FRACTION = 0.2
BOOTSTRAP_SAMPLES = 200  # the schema's default (and rainfall.yaml's value)
MODEL_NAME = "bench-synthetic"
WARMUP_ROWS = 5_000

DEFAULT_SIZES = [10_000, 100_000, 1_000_000]
TARGET_SIZE, TARGET_RATIO, TARGET_HELP_S = 100_000, 1.3, 1.0
STEPS = ["start-run", "ingest", "validate", "split", "features", "train", "baselines",
         "evaluate", "gate", "register", "promote"]
# Project functions timed inside the steps during flow runs: (step, label, module, attribute).
# Patch the name where the caller looks it up (flows.steps imports some names directly).
PROBES = [
    ("ingest", "content fingerprint", "regrow.tasks.data.ingest", "fingerprint"),
    ("evaluate", "bootstrap CI", "regrow.tasks.model.evaluate", "bootstrap_ci"),
    ("baselines", "load champion", "regrow.tasks.registry.mlflow_registry", "Registry.load"),
    ("register", "MLflow log_model", "regrow.tasks.registry.mlflow_registry", "Registry.log_model"),
    ("register", "build drift reference", "regrow.flows.steps", "build_reference"),
    ("register", "  reference predictions", "regrow.tasks.monitoring.reference", "predict_columns"),
    ("register", "  permutation importance", "regrow.tasks.monitoring.reference", "importance"),
    ("register", "  drift thresholds", "regrow.tasks.monitoring.reference", "calibrate_reference"),
    ("register", "  probability calibration", "regrow.tasks.monitoring.reference", "reference_calibration"),
    ("register", "build trusted set", "regrow.tasks.model.trusted", "build"),
    ("register", "log drift reference", "regrow.flows.steps", "log_reference"),
]


# --- arguments ------------------------------------------------------------------------------

def parse_args(argv: list[str]) -> argparse.Namespace:
    """Flags; ``--quick`` is ``--sizes=10000,100000 --repeats=1 --no-demo``."""
    p = argparse.ArgumentParser(prog="python -m tests.bench training",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=_int_list, default=None,
                   help="comma-separated row counts (default 10000,100000,1000000)")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per arm and size (default 3 below 1M rows, 1 at 1M and above)")
    p.add_argument("--quick", action="store_true", help="10k and 100k rows, 1 run each, no demo")
    p.add_argument("--no-demo", action="store_true", help="skip the fresh-home demo timing")
    p.add_argument("--no-help", action="store_true", help="skip the `regrow --help` timing")
    p.add_argument("--no-flow", action="store_true", help="skip the flow-vs-bare comparison")
    p.add_argument("--help-runs", type=int, default=5, help="`regrow --help` runs (default 5)")
    p.add_argument("--threads", type=int, default=1,
                   help="OpenMP/BLAS threads in both arms (threadpoolctl; default 1, 0 = the "
                        "libraries' own choice). On a busy 2-core machine HistGradientBoosting's "
                        "OpenMP threads contend badly: the same fit varies 5-25x")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes = args.sizes or [10_000, 100_000]
        args.repeats = args.repeats or 1
        args.no_demo = True
    args.sizes = args.sizes or DEFAULT_SIZES
    return args


def _int_list(text: str) -> list[int]:
    return [int(v.replace("_", "")) for v in text.split(",") if v.strip()]


def repeats_for(rows: int, args: argparse.Namespace) -> int:
    """Runs per arm at a size."""
    if args.repeats:
        return max(1, args.repeats)
    return 1 if rows >= 1_000_000 else 3


# --- synthetic data and its config ----------------------------------------------------------

def make_frame(rows: int, seed: int = SEED):
    """Binary-classification rows whose label depends on numeric and categorical features.

    Columns: ``row_id`` (unique), ``ts`` (one minute apart, in order), ``x0..x9`` (``x9`` 1%
    missing), ``region``/``channel``/``plan`` (``channel`` 1% missing), ``label`` (0/1).
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(NUMERIC)))
    frame = pd.DataFrame(x, columns=NUMERIC)
    logit = (1.2 * x[:, 0] - 0.8 * x[:, 1] + 0.6 * x[:, 2] * x[:, 3] + np.sin(2 * x[:, 4])
             + 0.3 * x[:, 5] ** 2 - 0.4)
    for col, levels in LEVELS.items():
        codes = rng.integers(0, len(levels), rows)
        logit += rng.normal(scale=0.5, size=len(levels))[codes]
        frame[col] = np.asarray(levels, dtype=object)[codes]
    frame.loc[rng.random(rows) < 0.01, "x9"] = np.nan
    frame.loc[rng.random(rows) < 0.01, "channel"] = None
    frame[TARGET] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64")
    frame.insert(0, TIME, pd.date_range("2020-01-01", periods=rows, freq="min"))
    frame.insert(0, ID, np.arange(rows, dtype="int64"))
    return frame


def write_dataset(folder: Path, rows: int) -> Path:
    """Write `rows` synthetic rows as CSV; returns the path."""
    path = folder / f"synthetic_{rows}.csv"
    make_frame(rows).to_csv(path, index=False)
    return path


def config_text(data_path: Path) -> str:
    """A regrow config for a synthetic file: one candidate, the schema's defaults elsewhere."""
    import yaml

    cfg = {
        "description": "Synthetic benchmark table (tests/bench/training.py).",
        "data": {"source": {"kind": "file", "path": str(data_path)}, "target": TARGET,
                 "task": "binary", "time_column": TIME, "id_column": ID},
        "expectations": {
            "row_count": {"min": 1000},
            "columns": {"x0": "float", "x1": "float", TARGET: "int"},
            "not_null": ["x0", "x1", "x2", "region"],
            "ranges": {"x0": {"min": -10, "max": 10},
                       "x1": {"min": -10, "max": 10, "mostly": 0.99}},
            "allowed": {TARGET: [0, 1], "region": LEVELS["region"]},
            "unique": [ID],
        },
        "features": {"numeric": NUMERIC, "categorical": CATEGORICAL, "drop": [TIME],
                     "infer": False, "scaling": "standard"},
        "candidates": {"cv_folds": CV_FOLDS, "seed": SEED, "estimators": [
            {"name": "hgb", "estimator": "hist_gradient_boosting_classifier",
             "params": dict(HGB_PARAMS)}]},
        "split": {"holdout_fraction": HOLDOUT_FRACTION},
        "gate": {"primary_metric": "roc_auc", "floors": {"roc_auc": 0.6},
                 "max_regression": 0.05, "bootstrap_samples": BOOTSTRAP_SAMPLES},
        "registry": {"model_name": MODEL_NAME},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def write_config(folder: Path, data_path: Path) -> Path:
    """Write the config for a data file next to it; returns the path."""
    path = folder / f"{data_path.stem}.yaml"
    path.write_text(config_text(data_path), encoding="utf-8")
    return path


# --- the two arms ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmResult:
    """One timed run: wall seconds, holdout AUC; for the flow arm, Prefect's per-step seconds
    and the seconds spent in each probed function (by probe label)."""

    seconds: float
    auc: float
    steps: dict[str, float] = field(default_factory=dict)
    probes: dict[str, float] = field(default_factory=dict)


def bare_pipeline():
    """The Pipeline the config describes, written as plain scikit-learn."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline([
        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
    ])
    prep = ColumnTransformer([("numeric", numeric, NUMERIC),
                              ("categorical", categorical, CATEGORICAL)], remainder="drop")
    model = HistGradientBoostingClassifier(**HGB_PARAMS, random_state=SEED)
    return Pipeline([("prep", prep), ("model", model)])


def run_bare(data_path: Path) -> ArmResult:
    """Read, time-split, cross-validate, refit and score the holdout: nothing else."""
    import pandas as pd
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GridSearchCV, TimeSeriesSplit

    t0 = time.perf_counter()
    frame = pd.read_csv(data_path)
    frame[TIME] = pd.to_datetime(frame[TIME])
    frame = frame.sort_values(TIME, kind="stable").reset_index(drop=True)
    n_hold = max(1, round(len(frame) * HOLDOUT_FRACTION))
    train, hold = frame.iloc[:-n_hold], frame.iloc[-n_hold:]
    search = GridSearchCV(bare_pipeline(), [{}], scoring="roc_auc",
                          cv=TimeSeriesSplit(n_splits=CV_FOLDS), refit=True, n_jobs=1,
                          error_score="raise")
    search.fit(train[FEATURES], train[TARGET].to_numpy())
    auc = roc_auc_score(hold[TARGET].to_numpy(), search.predict_proba(hold[FEATURES])[:, 1])
    return ArmResult(time.perf_counter() - t0, float(auc))


def run_flow(config_path: Path) -> ArmResult:
    """One ``train_flow`` call in this process, with Prefect's task-run durations, under the
    Prefect settings ``regrow train`` gives its flow (`regrow.runtime.early.flow_settings`)."""
    from regrow.flows.training import train_flow
    from regrow.runtime.early import flow_settings

    spent: dict[str, float] = {}
    with probes(spent), flow_settings("train"):
        t0 = time.perf_counter()
        state = train_flow(str(config_path), trigger="bench", reason="benchmark", actor="bench",
                           return_state=True)
        outcome = state.result()
        seconds = time.perf_counter() - t0
    steps = step_seconds(state.state_details.flow_run_id)
    return ArmResult(seconds, float(outcome.holdout["metrics"]["roc_auc"]), steps, spent)


@contextmanager
def probes(spent: dict[str, float]) -> Iterator[None]:
    """Time every call to the PROBES functions into `spent` (by label); restore them after.

    Module functions are replaced in their module (callers look them up there at call time),
    methods on their class. A probe whose target no longer exists is skipped.
    """
    patched = []
    for _, label, module, attr in PROBES:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part, None)
        original = getattr(owner, name, None)
        if original is None:
            continue
        setattr(owner, name, _timed(original, label, spent))
        patched.append((owner, name, original))
    try:
        yield
    finally:
        for owner, name, original in reversed(patched):
            setattr(owner, name, original)


def _timed(fn: Callable[..., Any], label: str, spent: dict[str, float]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.perf_counter() - t0
    return wrapper


def step_seconds(flow_run_id: Any, wait: float = 10.0) -> dict[str, float]:
    """Run time of each task of a flow run, as the Prefect server recorded it.

    Task-run states reach the server as events, so this polls until every step has ended
    (or `wait` seconds pass; missing steps are then left out).
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + wait
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            found = {_step_name(r.name): (r.end_time - r.start_time).total_seconds()
                     for r in runs if r.start_time and r.end_time}
            if set(STEPS) <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def _step_name(task_run_name: str) -> str:
    """``start-run-0`` (Prefect's generated task-run name) -> ``start-run``."""
    known = [s for s in STEPS if task_run_name == s or task_run_name.startswith(s + "-")]
    return max(known, key=len) if known else re.sub(r"-[0-9a-f]{1,3}$", "", task_run_name)


# --- orchestration of the in-process comparison ---------------------------------------------

@dataclass
class SizeResult:
    """All runs of both arms at one size."""

    rows: int
    bare: list[ArmResult] = field(default_factory=list)
    flow: list[ArmResult] = field(default_factory=list)

    @property
    def bare_s(self) -> float:
        """Median bare seconds."""
        return statistics.median(r.seconds for r in self.bare)

    @property
    def flow_s(self) -> float:
        """Median flow seconds."""
        return statistics.median(r.seconds for r in self.flow)

    @property
    def ratio(self) -> float:
        """Median flow over median bare."""
        return self.flow_s / self.bare_s

    def step_median(self, name: str) -> float | None:
        """Median seconds of one flow step over the runs that recorded it."""
        values = [r.steps[name] for r in self.flow if name in r.steps]
        return statistics.median(values) if values else None

    def probe_median(self, label: str) -> float | None:
        """Median seconds in one probed function over the flow runs (0 when not called)."""
        values = [r.probes.get(label, 0.0) for r in self.flow]
        return statistics.median(values) if values else None


@dataclass
class Warmup:
    """One-time costs kept out of the medians."""

    harness_s: float = 0.0
    first_flow_s: float = 0.0
    second_flow_s: float = 0.0
    first_bare_s: float = 0.0
    threads: str = ""


def thread_summary() -> str:
    """The native thread pools in use, e.g. ``openmp 2, openblas 2``."""
    from threadpoolctl import threadpool_info

    pools = {f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()}
    return ", ".join(sorted(pools)) or "none loaded"


def load_average() -> str:
    """The 1-minute load average, to judge how noisy the timings are."""
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except OSError:
        return "?"


def compare(args: argparse.Namespace, work: Path, log: Callable[[str], None]
            ) -> tuple[Warmup, list[SizeResult]]:
    """Warm up, then interleave bare and flow runs at every size."""
    import sklearn.ensemble  # noqa: F401 - loads OpenMP, so that the cap below reaches it
    from prefect.testing.utilities import prefect_test_harness
    from threadpoolctl import threadpool_limits

    warm = Warmup()
    warm_data = write_dataset(work, WARMUP_ROWS)
    warm_cfg = write_config(work, warm_data)
    t0 = time.perf_counter()
    with prefect_test_harness(), threadpool_limits(limits=args.threads or None):
        warm.harness_s = time.perf_counter() - t0
        log(f"harness up in {warm.harness_s:.1f} s; warm-up runs on {WARMUP_ROWS} rows")
        warm.first_bare_s = run_bare(warm_data).seconds
        warm.first_flow_s = run_flow(warm_cfg).seconds  # imports GX/MLflow, creates the champion
        warm.second_flow_s = run_flow(warm_cfg).seconds
        warm.threads = thread_summary()
        results = [run_size(rows, repeats_for(rows, args), work, log) for rows in args.sizes]
    return warm, results


def run_size(rows: int, repeats: int, work: Path, log: Callable[[str], None]) -> SizeResult:
    """Write the data and config for one size; time both arms `repeats` times, interleaved."""
    t0 = time.perf_counter()
    data = write_dataset(work, rows)
    cfg = write_config(work, data)
    log(f"{rows:,} rows: data written in {time.perf_counter() - t0:.1f} s")
    res = SizeResult(rows)
    for i in range(repeats):
        res.bare.append(run_bare(data))
        res.flow.append(run_flow(cfg))
        log(f"{rows:,} rows, run {i + 1}/{repeats}: bare {res.bare[-1].seconds:.2f} s, "
            f"flow {res.flow[-1].seconds:.2f} s")
    data.unlink(missing_ok=True)
    return res


# --- subprocess timings ---------------------------------------------------------------------

def regrow_exe() -> str:
    """The ``regrow`` console script next to this interpreter (else on PATH)."""
    here = Path(sys.executable).parent / "regrow"
    return str(here) if here.exists() else (shutil.which("regrow") or "regrow")


def clean_env(base: dict[str, str], home: Path) -> dict[str, str]:
    """`base` with every regrow/Prefect/MLflow location pointed at a fresh `home`."""
    env = {k: v for k, v in base.items()
           if k not in {"PREFECT_API_URL", "PREFECT_HOME", "MLFLOW_TRACKING_URI",
                        "REGROW_DATABASE_URL"}}
    env.update(REGROW_HOME=str(home), PYTHONUNBUFFERED="1")
    return env


def time_help(env: dict[str, str], runs: int) -> list[float]:
    """Wall seconds of `runs` ``regrow --help`` subprocesses."""
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([regrow_exe(), "--help"], env=env, check=True, capture_output=True)
        out.append(time.perf_counter() - t0)
    return out


@dataclass(frozen=True)
class DemoTiming:
    """``regrow demo`` on an empty home."""

    first_champion_s: float | None
    total_s: float
    returncode: int
    tail: str = ""


# render() prints "champion: none -> v1" when a first version is promoted ("v1 -> v2" later);
# the demo prints it per period.
_PROMOTED = re.compile(r"champion: (?:none|v\S*) -> v\d+")


def time_demo(env: dict[str, str], timeout: float = 900.0) -> DemoTiming:
    """Run ``regrow demo``; note when the first promotion is printed, and the total.

    Stopped (SIGTERM) after `timeout` seconds.
    """
    t0 = time.perf_counter()
    first = None
    lines: list[str] = []
    with subprocess.Popen([regrow_exe(), "demo"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True) as proc:
        watchdog = threading.Timer(timeout, proc.terminate)
        watchdog.start()
        try:
            for line in proc.stdout or []:
                lines.append(line.rstrip())
                if first is None and _PROMOTED.search(line):
                    first = time.perf_counter() - t0
        finally:
            watchdog.cancel()
        rc = proc.wait()
    return DemoTiming(first, time.perf_counter() - t0, rc, "\n".join(lines[-15:]))


# --- printing -------------------------------------------------------------------------------

def fmt_s(v: float | None) -> str:
    """Seconds for a table cell."""
    return "-" if v is None else f"{v:.2f}"


def comparison_table(results: list[SizeResult]) -> str:
    """Medians per arm and size, the ratio, and both AUCs (they must agree)."""
    head = (f"{'rows':>10} {'runs':>4} {'bare s':>8} {'flow s':>8} {'flow-bare':>9} "
            f"{'ratio':>6}  {'AUC bare':>8} {'AUC flow':>8}")
    lines = [head, "-" * len(head)]
    for r in results:
        auc_b = statistics.median(a.auc for a in r.bare)
        auc_f = statistics.median(a.auc for a in r.flow)
        flag = "" if abs(auc_b - auc_f) < 1e-6 else "  <- AUCs differ: arms do different work"
        lines.append(f"{r.rows:>10,} {len(r.flow):>4} {r.bare_s:>8.2f} {r.flow_s:>8.2f} "
                     f"{r.flow_s - r.bare_s:>9.2f} {r.ratio:>6.2f}  {auc_b:>8.4f} {auc_f:>8.4f}"
                     f"{flag}")
    return "\n".join(lines)


def steps_table(results: list[SizeResult]) -> str:
    """Median seconds per flow step (Prefect task runs), the remainder, and bare for scale."""
    head = f"{'step':<34}" + "".join(f"{r.rows:>12,}" for r in results)
    lines = [head, "-" * len(head)]
    seen = {n for r in results for a in r.flow for n in a.steps}
    for name in STEPS + sorted(seen - set(STEPS)):
        lines.append(f"{name:<34}" + "".join(f"{fmt_s(r.step_median(name)):>12}" for r in results))
        for _, label, _, _ in (p for p in PROBES if p[0] == name):
            lines.append(f"{'  of which ' + label:<34}"
                         + "".join(f"{fmt_s(r.probe_median(label)):>12}" for r in results))
    rest = []
    for r in results:
        sums = [sum(a.steps.values()) for a in r.flow if a.steps]
        rest.append(r.flow_s - statistics.median(sums) if sums else None)
    lines.append(f"{'flow run outside tasks':<34}" + "".join(f"{fmt_s(v):>12}" for v in rest))
    lines.append(f"{'flow total':<34}" + "".join(f"{r.flow_s:>12.2f}" for r in results))
    lines.append(f"{'bare total (for scale)':<34}" + "".join(f"{r.bare_s:>12.2f}" for r in results))
    return "\n".join(lines)


def verdict_line(results: list[SizeResult]) -> str:
    """Whether the ratio target holds at the target size (when it was measured)."""
    at = [r for r in results if r.rows == TARGET_SIZE]
    if not at:
        return f"target flow/bare <= {TARGET_RATIO} at {TARGET_SIZE:,} rows: not measured"
    ok = at[0].ratio <= TARGET_RATIO
    runs = len(at[0].flow)
    caveat = "" if runs >= 3 else f" -- {runs} run per arm only: not conclusive, use --repeats=3+"
    return (f"target flow/bare <= {TARGET_RATIO} at {TARGET_SIZE:,} rows: "
            f"{'MET' if ok else 'NOT MET'} ({at[0].ratio:.2f}){caveat}")


def print_report(args: argparse.Namespace, warm: Warmup | None, results: list[SizeResult],
                 help_s: list[float] | None, demo: DemoTiming | None, loads: list[str]) -> None:
    """The plain-text tables."""
    print(f"\ntraining benchmark -- {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load average {' -> '.join(loads)} (start -> end); wall-clock medians, noisy")
    if warm is not None:
        print("\n[1] train_flow vs bare script (Prefect test harness, in-process)")
        print(f"data: {len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical features, time and "
              f"id columns, CSV; one candidate (HistGradientBoosting {HGB_PARAMS}), {CV_FOLDS}-"
              f"fold time-series CV, holdout {HOLDOUT_FRACTION}, bootstrap {BOOTSTRAP_SAMPLES}")
        cap = f"capped at {args.threads}" if args.threads else "libraries' default"
        print(f"native thread pools ({cap}): {warm.threads}")
        print(f"one-time: harness start {warm.harness_s:.1f} s; warm-up on {WARMUP_ROWS:,} rows: "
              f"bare {warm.first_bare_s:.2f} s, first flow run {warm.first_flow_s:.2f} s "
              f"(imports, MLflow DB), second {warm.second_flow_s:.2f} s")
        print(comparison_table(results))
        print(verdict_line(results))
        print("\nwhere the flow's time goes (median seconds per Prefect task run):")
        print(steps_table(results))
    if help_s is not None:
        med = statistics.median(help_s)
        print(f"\n[2] regrow --help: median {med:.2f} s of {len(help_s)} runs "
              f"(min {min(help_s):.2f}, max {max(help_s):.2f}); target <= {TARGET_HELP_S:.0f} s: "
              f"{'MET' if med <= TARGET_HELP_S else 'NOT MET'}")
    if demo is not None:
        first = "not reached" if demo.first_champion_s is None else f"{demo.first_champion_s:.1f} s"
        print(f"\n[3] regrow demo on an empty REGROW_HOME: first champion after {first}, "
              f"whole demo (all its stages) {demo.total_s:.1f} s, exit code {demo.returncode}")
        if demo.returncode != 0 or demo.first_champion_s is None:
            print("last lines of its output:\n" + demo.tail)


def record_report(results: list[SizeResult], help_s: list[float] | None,
                  demo: DemoTiming | None) -> None:
    """The tables `print_report` prints, as docs/benchmarks/training.json."""
    rows = []
    for r in results:
        rows.append({"rows": r.rows, "runs": len(r.flow), "bare s": r.bare_s, "flow s": r.flow_s,
                     "flow-bare s": r.flow_s - r.bare_s, "ratio": f"{r.ratio:.2f}x",
                     "AUC bare": statistics.median(a.auc for a in r.bare),
                     "AUC flow": statistics.median(a.auc for a in r.flow)})
    tables: dict[str, list[dict[str, Any]]] = {}
    if results:
        steps = []
        seen = {n for r in results for a in r.flow for n in a.steps}
        for name in STEPS + sorted(seen - set(STEPS)):
            steps.append({"step": name, **{f"{r.rows:,} rows": fmt_s(r.step_median(name))
                                           for r in results}})
            for _, label, _, _ in (p for p in PROBES if p[0] == name):
                steps.append({"step": "of which " + label,
                              **{f"{r.rows:,} rows": fmt_s(r.probe_median(label))
                                 for r in results}})
        rest = {}
        for r in results:
            sums = [sum(a.steps.values()) for a in r.flow if a.steps]
            rest[f"{r.rows:,} rows"] = fmt_s(r.flow_s - statistics.median(sums) if sums else None)
        steps.append({"step": "flow run outside tasks", **rest})
        steps.append({"step": "flow total", **{f"{r.rows:,} rows": fmt_s(r.flow_s) for r in results}})
        steps.append({"step": "bare total (for scale)",
                      **{f"{r.rows:,} rows": fmt_s(r.bare_s) for r in results}})
        tables["where the flow's time goes (median seconds per Prefect task run)"] = steps
    if help_s is not None:
        tables["`regrow --help`"] = [{"runs": len(help_s), "median s": statistics.median(help_s),
                                      "min s": min(help_s), "max s": max(help_s),
                                      "target s": TARGET_HELP_S}]
    if demo is not None:
        tables["`regrow demo` on an empty REGROW_HOME"] = [{
            "first champion s": "not reached" if demo.first_champion_s is None
            else demo.first_champion_s,
            "whole demo s": demo.total_s, "exit code": demo.returncode}]
    record("training", rows,
           "a bare script doing the same read, split, cross-validated fit, refit and holdout AUC "
           "(both arms in-process, at the same native thread count), in the same run",
           tables=tables, notes=[verdict_line(results)] if results else [])


# --- entry point ----------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """Run the benchmark; print the tables. Returns 0, or 1 when a run failed outright."""
    args = parse_args(argv)
    saved_env = dict(os.environ)
    work = Path(tempfile.mkdtemp(prefix="regrow-bench-"))

    def log(msg: str) -> None:
        print(f"[bench training] {msg}", file=sys.stderr, flush=True)

    loads = [load_average()]
    help_s = demo = warm = None
    results: list[SizeResult] = []
    try:
        if not args.no_help:
            help_s = time_help(clean_env(saved_env, work / "help-home"), args.help_runs)
            log(f"regrow --help: {', '.join(f'{s:.2f}' for s in help_s)} s")
        if not args.no_demo:
            log("regrow demo on an empty REGROW_HOME (a minute or more)")
            demo = time_demo(clean_env(saved_env, work / "demo-home"))
            log(f"demo: {demo.total_s:.1f} s, exit code {demo.returncode}")
        if not args.no_flow:
            os.environ.clear()
            os.environ.update(clean_env(saved_env, work / "home"))
            from regrow.tasks.store.settings import configure_process_env

            configure_process_env()  # before prefect or mlflow is imported
            warm, results = compare(args, work, log)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    loads.append(load_average())
    print_report(args, warm, results, help_s, demo, loads)
    record_report(results, help_s, demo)
    return 1 if demo is not None and demo.returncode != 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
