"""A fleet of models on one Prefect server, one PostgreSQL monitoring store and one MLflow
server: what 1, 10 and 100 models cost.

Set-up (not timed): a Prefect server (``prefect server start``, its database on PostgreSQL as
Prefect advises beyond a few runs at a time: on SQLite a round of 100 runs with two workers
left runs waiting seconds per API write), an MLflow tracking server
(``mlflow server``, its own SQLite backend and artifact folder) and a new PostgreSQL database
as the monitoring store, all on loopback. Models are generated with varied shapes (binary and
regression; 1,000 to 16,000 rows; 4 to 12 numeric and 0 to 2 categorical columns), trained
with `regrow.train` (two processes side by side) and each given one 1,000-row window of scored
rows (`regrow.score`). The fleet grows 1 -> 10 -> 100; at each size:

- **status**: ``regrow status`` without a config, every model one row (``--json``), as a fresh
  process, median of `--repeats`: without the control plane, and with it (``regrow up``: the
  command runs in its warm process); baseline: ``regrow --help`` as a fresh process (the
  interpreter and the argument parsing alone). Targets at 100 models: <= 1.5 s without the
  plane, <= 1 s with it.
- **serve**: ``regrow serve FOLDER`` of the N configs: seconds until it prints that it serves
  every deployment, and the resident memory of its process tree (the serve process, its warm
  fork server, lifeline and resource tracker) once it stops growing. Target at 100 models:
  <= 1 GB.
- **drift round**: ``regrow deploy FOLDER --pool`` on a Prefect *process* work pool, one
  drift-check flow run per model, then 1 and then 2 ``regrow worker --pool ... --limit 2``
  (runs start as forks of a warm process) until every run has ended; seconds for the round
  and per model. Baseline, at 10 models: the same round with Prefect's own ``prefect worker
  start --pool ... --limit 2`` (each run a fresh ``python -m prefect.engine``). Target: a round
  of 100 models <= 10 minutes. Both kinds of worker ask for due runs every 2 s (`regrow
  worker`'s default; Prefect's is 10 s). In production the workers run on several machines; here they
  share this machine's cores.
- **size**: the monitoring store (``pg_database_size`` less the same database's size before
  the first model), MLflow's artifacts and the prediction log, per model.

"Flat" compares each per-model figure at 100 models with the same at 10 models (1.00x: the
cost of a model does not grow with the fleet).

Usage::

    .venv/bin/python -m tests.bench fleet [--sizes=1,10,100] [--repeats=5] [--workers=1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import ROOT, record

WINDOW = 1_000
SHAPES = [  # (task, rows, numeric, categorical), cycled over the models
    ("binary", 1_000, 4, 1), ("regression", 4_000, 8, 0), ("binary", 16_000, 12, 2),
    ("regression", 1_000, 6, 1), ("binary", 4_000, 10, 0)]
FAR_CRON = "0 3 1 1 *"  # served schedules that never fire during the benchmark


def log(msg: str) -> None:
    print(f"[bench fleet] {msg}", file=sys.stderr, flush=True)


# --- the generated fleet -------------------------------------------------------------------

def make_model(folder: Path, i: int) -> Path:
    """Data, a 1,000-row window and a config for model number `i`; returns the config path."""
    import numpy as np
    import pandas as pd
    import yaml

    task, rows, n_num, n_cat = SHAPES[i % len(SHAPES)]
    rng = np.random.default_rng(i)
    n = rows + WINDOW
    x = rng.normal(size=(n, n_num))
    data: dict[str, Any] = {"rid": np.arange(n)}
    for j in range(n_num):
        data[f"x{j}"] = x[:, j] * (j + 1) + j
    signal_ = x[:, 0] - 0.7 * x[:, 1] + 0.3 * x[:, 2 % n_num]
    for j in range(n_cat):
        level = rng.choice(["a", "b", "c", "d"], size=n)
        data[f"c{j}"] = level
        signal_ = signal_ + np.where(level == "a", 0.5, 0.0)
    noise = rng.normal(scale=0.7, size=n)
    data["y"] = (signal_ + noise > 0).astype(int) if task == "binary" else signal_ * 3 + noise
    frame = pd.DataFrame(data)
    name = f"fleet-{i:03d}"
    train_path, window_path = folder / f"{name}.csv", folder / f"{name}-window.csv"
    frame.iloc[:rows].to_csv(train_path, index=False)
    frame.iloc[rows:].drop(columns=["y"]).to_csv(window_path, index=False)
    numeric, categorical = [f"x{j}" for j in range(n_num)], [f"c{j}" for j in range(n_cat)]
    if task == "binary":
        estimator = {"name": "logreg", "estimator": "logistic_regression",
                     "params": {"max_iter": 200}}
        gate = {"primary_metric": "roc_auc", "bootstrap_samples": 20}
    else:
        estimator = {"name": "ridge", "estimator": "ridge"}
        gate = {"primary_metric": "rmse", "bootstrap_samples": 20}
    config = {
        "data": {"source": {"kind": "file", "path": str(train_path)}, "target": "y",
                 "task": task, "id_column": "rid"},
        "features": {"numeric": numeric, "categorical": categorical, "infer": False},
        "candidates": {"cv_folds": 2, "seed": 0, "estimators": [estimator]},
        "gate": gate,
        "registry": {"model_name": name},
        "monitoring": {"window": {"rows": WINDOW, "min_rows": 200}, "schedule": FAR_CRON,
                       "reference_rows": 2_000},
    }
    path = folder / "configs" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_worker(paths: list[str]) -> int:
    """In a child process: train each config and score its window (set-up, not timed)."""
    import regrow

    for path in paths:
        regrow.train(path, reason="fleet benchmark")
        window = Path(path).parent.parent / (Path(path).stem + "-window.csv")
        regrow.score(path, window)
        print(f"trained and scored {Path(path).stem}", flush=True)
    return 0


def train_all(paths: list[Path], env: dict[str, str]) -> None:
    """Train `paths` in two processes side by side."""
    halves = [paths[0::2], paths[1::2]]
    procs = [subprocess.Popen([sys.executable, "-m", "tests.bench.fleet", "--train-worker",
                               *map(str, half)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for half in halves if half]
    for proc in procs:
        out, err = proc.communicate(timeout=7200)
        if proc.returncode != 0:
            raise SystemExit(f"training failed:\n{out[-1500:]}\n{err[-3000:]}")


# --- servers ---------------------------------------------------------------------------------

def start_mlflow(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    from tests.procs import free_port, wait_http

    port = free_port()
    logf = root / "mlflow.log"
    with open(logf, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
             f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=out,
            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", 180, proc=proc, log=logf)
    return proc, url


def folder_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 \
        if path.exists() else 0.0


def pg_size_mb(url: str) -> float:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        size = conn.execute(sa.text("select pg_database_size(current_database())")).scalar()
    engine.dispose()
    return size / 1e6


# --- the measures ----------------------------------------------------------------------------

def fresh(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[float, str]:
    """(wall seconds, stdout) of `regrow ARGS` as a fresh process; exits if it fails."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "regrow.app.cli", *args], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=timeout)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"`regrow {' '.join(args)}` failed:\n{out.stdout[-1500:]}"
                         f"{out.stderr[-2000:]}")
    return took, out.stdout


def status_times(n: int, repeats: int, env: dict[str, str]) -> list[float]:
    times = []
    for _ in range(repeats):
        took, out = fresh(["status", "--json"], env)
        rows = json.loads(out)
        models = rows.get("models", rows) if isinstance(rows, dict) else rows
        if len(models) != n:
            raise SystemExit(f"`regrow status --json` listed {len(models)} models, not {n}")
        times.append(took)
    return times


def tree_rss_mb(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def settled_rss_mb(pid: int, timeout: float = 120) -> float:
    """The tree's resident memory once it stops growing (the warm fork server imports the stack
    after `serve` says it serves): two readings 3 s apart within 1%."""
    last = tree_rss_mb(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(3)
        now = tree_rss_mb(pid)
        if abs(now - last) <= 0.01 * last:
            return now
        last = now
    return last


def serve_cost(folder: Path, n: int, env: dict[str, str], root: Path) -> tuple[float, float]:
    """(seconds until `serve` says it serves every deployment, tree RSS MB 5 s later)."""
    logf = root / f"serve-{n}.log"
    t0 = time.perf_counter()
    with open(logf, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "regrow.app.cli", "serve", str(folder)],
                                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 1800
        while "serving " not in logf.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve of {n} models did not start:\n{logf.read_text()[-3000:]}")
            time.sleep(0.2)
        started = time.perf_counter() - t0
        rss = settled_rss_mb(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return started, rss


def drift_round(folder: Path, n: int, workers: int, env: dict[str, str], root: Path,
                pool: str, prefects: bool = False) -> tuple[float, int]:
    """One drift-check run per model on the work pool, run by `workers` process workers;
    (seconds from the runs' creation to the last one's end, runs completed)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        deployments = [client.read_deployment_by_name(
            f"regrow-drift-check/drift-check-{p.stem}") for p in sorted(folder.glob("*.yaml"))]
        t0 = time.perf_counter()
        ids = [client.create_flow_run_from_deployment(d.id).id for d in deployments]
    procs = []
    start = ["-m", "prefect", "worker", "start"] if prefects else ["-m", "regrow.app.cli",
                                                                   "worker"]
    # both kinds ask for due runs as often as `regrow worker` does: the baseline differs only
    # in how a run starts (a fresh process against a fork of a warm one)
    env = {**env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
    for w in range(workers):
        name = f"bench-{n}-{workers}-{w}-{'prefect' if prefects else 'regrow'}"
        logf = open(root / f"{name}.log", "w")  # noqa: SIM115 - kept open
        procs.append(subprocess.Popen(
            [sys.executable, *start, "--pool", pool, "--limit", "2", "--name", name], env=env,
            cwd=root, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True))
    try:
        deadline = time.monotonic() + 3600
        while True:
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                    id=FlowRunFilterId(any_=ids)), limit=len(ids) + 1)
            final = [r for r in runs if r.state is not None and r.state.is_final()]
            if len(final) == len(ids):
                took = time.perf_counter() - t0
                done = sum(1 for r in final if r.state.is_completed())
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"drift round of {n} models: {len(final)} of {len(ids)} ended "
                                 "within an hour")
            time.sleep(1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if done != len(ids):
        failed = [f"{r.name}: {r.state.name} {r.state.message}" for r in final
                  if not r.state.is_completed()]
        log(f"drift round of {n} models with {workers} worker(s): {len(ids) - done} not "
            f"completed, e.g. {failed[:3]}")
    return took, done


def plane_status(n: int, repeats: int, env: dict[str, str]) -> list[float]:
    from tests.procs import free_port

    fresh(["up", "--prefect-port", str(free_port()), "--timeout", "300"], env, timeout=400)
    try:
        return status_times(n, repeats, env)
    finally:
        fresh(["down"], env, timeout=120)


# --- entry point -----------------------------------------------------------------------------

def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench fleet")
    p.add_argument("--sizes", type=_ints, default=[1, 10, 100])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--workers", type=_ints, default=[1, 2])
    p.add_argument("--train-worker", nargs="*", help=argparse.SUPPRESS)
    args, _ = p.parse_known_args(argv)
    if args.train_worker is not None:
        return train_worker(args.train_worker)
    from tests.procs import pg_database, start_prefect_server, stop

    # a `kill` ends the benchmark through its clean-ups (servers, databases), as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    results: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp, pg_database() as store_url, \
            pg_database() as prefect_db:
        root = Path(tmp)
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "MLFLOW_", "REGROW_"))}
        base.update(PYTHONPATH=str(ROOT), MLFLOW_DISABLE_TELEMETRY="true",
                    PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONWARNINGS="ignore")
        log("starting a Prefect server and an MLflow server")
        prefect_proc, prefect_url = start_prefect_server(
            root / "prefect", PREFECT_API_DATABASE_CONNECTION_URL=prefect_db.replace(
                "postgresql+psycopg://", "postgresql+asyncpg://"))
        mlflow_proc, mlflow_url = start_mlflow(root, base)
        env = {**base, "REGROW_HOME": str(root / "home"), "REGROW_DATABASE_URL": store_url,
               "MLFLOW_TRACKING_URI": mlflow_url, "PREFECT_API_URL": prefect_url}
        os.environ["PREFECT_API_URL"] = prefect_url  # this process's client
        empty_mb = pg_size_mb(store_url)
        try:
            help_s = statistics.median(fresh(["--help"], env)[0] for _ in range(args.repeats))
            made: list[Path] = []
            for n in sorted(args.sizes):
                t0 = time.perf_counter()
                new = [make_model(root, i) for i in range(len(made), n)]
                log(f"{n} models: training {len(new)} more ...")
                train_all(new, env)
                made += new
                log(f"  set-up {time.perf_counter() - t0:.0f} s")
                folder = root / f"fleet-{n}"
                folder.mkdir()
                for path in made:
                    (folder / path.name).symlink_to(path)
                res: dict[str, Any] = {"n": n}
                res["status"] = statistics.median(status_times(n, args.repeats, env))
                log(f"  status {res['status']:.2f} s")
                plane_env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
                res["status_plane"] = statistics.median(plane_status(n, args.repeats, plane_env))
                log(f"  status, plane up {res['status_plane']:.2f} s")
                res["serve_s"], res["serve_mb"] = serve_cost(folder, n, env, root)
                log(f"  serve {res['serve_s']:.1f} s, {res['serve_mb']:.0f} MB")
                pool = f"fleet-{n}"
                fresh(["deploy", str(folder), "--pool", pool, "--create-pool"], env,
                      timeout=1800)
                for w in args.workers:
                    took, done = drift_round(folder, n, w, env, root, pool)
                    res[f"round_{w}"], res[f"done_{w}"] = took, done
                    log(f"  drift round, {w} worker(s): {took:.0f} s, {done}/{n} completed")
                if n == 10:  # the baseline: Prefect's own process worker, fresh processes
                    took, done = drift_round(folder, n, 1, env, root, pool, prefects=True)
                    res["round_prefect"], res["done_prefect"] = took, done
                    log(f"  drift round, 1 Prefect worker: {took:.0f} s, {done}/{n} completed")
                res["store_mb"] = pg_size_mb(store_url) - empty_mb
                res["artifacts_mb"] = folder_size_mb(root / "artifacts")
                res["predlog_mb"] = folder_size_mb(root / "home" / "predictions")
                results[n] = res
        finally:
            stop(mlflow_proc)
            stop(prefect_proc)
    return report(results, help_s, args)


def report(results: dict[int, dict[str, Any]], help_s: float, args: argparse.Namespace) -> int:
    sizes = sorted(results)
    rows = []
    for n in sizes:
        r = results[n]
        row = {"models": n, "status s": r["status"], "status, plane up s": r["status_plane"],
               "status / --help": f"{r['status'] / help_s:.1f}x",
               "serve start s": r["serve_s"], "serve MB": r["serve_mb"],
               "serve MB / model": r["serve_mb"] / n}
        for w in args.workers:
            row[f"round, {w} worker(s) s"] = r[f"round_{w}"]
            row[f"per model, {w} worker(s) s"] = r[f"round_{w}"] / n
            row[f"completed ({w})"] = f"{r[f'done_{w}']}/{n}"
        row["store MB / model"] = r["store_mb"] / n
        row["artifacts MB / model"] = r["artifacts_mb"] / n
        row["prediction log MB / model"] = r["predlog_mb"] / n
        rows.append(row)
    cols = list(rows[0])
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                for v in row.values()) + " |")
    notes = [f"baseline for status: `regrow --help` as a fresh process, {help_s:.2f} s (median)"]
    ten = results.get(10)
    if ten and "round_prefect" in ten:
        notes.append(
            f"baseline for the drift round, 10 models, 1 worker: Prefect's own process worker "
            f"{ten['round_prefect']:.0f} s ({ten['done_prefect']}/10 completed) against regrow "
            f"worker {ten['round_1']:.0f} s: {ten['round_prefect'] / ten['round_1']:.1f}x faster")
    big = results.get(100)
    if big:
        best = min(big[f"round_{w}"] for w in args.workers)
        notes += [
            f"target: fleet status at 100 models <= 1.5 s without the plane: "
            f"{'MET' if big['status'] <= 1.5 else 'NOT MET'} ({big['status']:.2f} s); "
            f"<= 1 s with it: {'MET' if big['status_plane'] <= 1.0 else 'NOT MET'} "
            f"({big['status_plane']:.2f} s)",
            f"target: serve of 100 models <= 1,000 MB: "
            f"{'MET' if big['serve_mb'] <= 1000 else 'NOT MET'} ({big['serve_mb']:.0f} MB)",
            f"target: a round of 100 drift checks <= 600 s: "
            f"{'MET' if best <= 600 else 'NOT MET'} ({best:.0f} s with the faster worker count)"]
    if 10 in results and 100 in results:
        a, b = results[10], results[100]
        flat = {"serve MB": (b["serve_mb"] / 100) / (a["serve_mb"] / 10),
                "store MB": (b["store_mb"] / 100) / (a["store_mb"] / 10),
                **{f"round s ({w} worker(s))": (b[f"round_{w}"] / 100) / (a[f"round_{w}"] / 10)
                   for w in args.workers}}
        notes.append("cost per model at 100 against 10 models (1.00x = flat): "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in flat.items()))
    notes.append("machine: load average " + " ".join(f"{v:.1f}" for v in os.getloadavg())
                 + " at the end (figures are wall-clock on a shared machine)")
    for line in notes:
        print(line)
    record("fleet", rows, "`regrow --help` as a fresh process for the status; Prefect's own "
           "process worker (a fresh process per run) for the drift round at 10 models; each "
           "per-model figure at 100 models against the same at 10 (flat cost)", notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
