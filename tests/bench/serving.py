"""Prediction service benchmark: `regrow predict-server` against `mlflow models serve` of the
same champion, both started in this run, driven by the same load generator.

Set-up, all on loopback, all temporary: a state directory with two versions of a binary
classifier (an sklearn pipeline: scaling, one-hot, logistic regression or a tree), trained by
`regrow train` on generated rows; the champion served by

- ``mlflow models serve -m models:/<name>@champion --env-manager local`` (the baseline),
- ``regrow predict-server`` with the prediction log on, then off (``--no-log``), one process;
  and once with ``--workers 2``.

Load generator: a separate process (``--loadgen``), asyncio with the minimal HTTP/1.1
keep-alive client of ``tests/bench/webhook.py`` (`RawPool`), closed loop: N requests in
flight, each sent again as soon as it is answered, for ``--seconds``. It shares the 2 cores
with the server; its own CPU use is shown in the table (``gen cpu``). Every server gets the
same bodies on MLflow's route (``POST /invocations``, ``dataframe_split``): one row with 1, 8
and 32 in flight, and 1,000 rows with 2 in flight.

Then 10 promotions (v1 and v2 in turn, through regrow's governance, as ``regrow promote``
makes them) while the generator keeps 8 requests in flight on the per-model route, whose
answers name their version: failed requests, and for each promotion the time until the new
version answered and no request after it was answered by the old one.

Usage::

    .venv/bin/python -m tests.bench serving            # 8 s per phase
    .venv/bin/python -m tests.bench serving --quick    # 3 s per phase

Targets: with 32 in flight and the log on, at least 10x the throughput of ``mlflow models
serve`` with p99 <= 50 ms; the log costs at most 10% of the throughput (32 in flight); 10
promotions under load: no failed request, the new version answering within 5 s of each.
Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.bench import command_env, record, timed_regrow
from tests.procs import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bench-serving"
INPUTS = ["amount", "age", "score", "noise", "segment"]
TARGET_SPEEDUP, TARGET_P99_MS, TARGET_LOG_COST, TARGET_SWAP_S = 10.0, 50.0, 0.10, 5.0
PROMOTIONS, PROMOTION_GAP = 10, 3.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.serving", description=__doc__)
    p.add_argument("--seconds", type=float, default=8.0, help="per load phase")
    p.add_argument("--quick", action="store_true", help="3 s per phase")
    p.add_argument("--home", default=None, help="state directory to keep (trained once, reused "
                   "by the next run); default: a temporary one")
    # internal: the load generator's own process
    p.add_argument("--loadgen", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default="/invocations", help=argparse.SUPPRESS)
    p.add_argument("--inflight", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--rows", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--versions", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds = 3.0
    if not 0 < args.seconds <= 120:
        p.error("--seconds must be in (0, 120]")
    return args


# ------------------------------------------------------------------------------ load generator

def body(rows: int) -> bytes:
    """A dataframe_split body of `rows` generated rows (the inputs only)."""
    from tests.helpers import binary_frame

    frame = binary_frame(max(rows, 2), seed=9).head(rows)
    return json.dumps({"dataframe_split": {"columns": INPUTS, "data": frame[INPUTS].astype(
        object).values.tolist()}}).encode()


async def drive(url: str, path: str, inflight: int, rows: int, seconds: float,
                versions: bool) -> dict[str, Any]:
    """Keep `inflight` requests going for `seconds`; latencies, errors and (with `versions`)
    the version each answer names, with its time."""
    from tests.bench.webhook import RawPool

    payload = body(rows)
    headers = {"Content-Type": "application/json"}
    pool = RawPool(url, inflight)
    latencies: list[float] = []
    errors: list[str] = []
    answers: list[tuple[float, str]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds

    async def worker() -> None:
        while loop.time() < end:
            try:
                status, out, took = await asyncio.wait_for(
                    pool.request("POST", path, payload, headers), 30)
            except Exception as err:  # noqa: BLE001 - every failure counts, none stops the run
                errors.append(f"{type(err).__name__}: {err}")
                continue
            if status != 200:
                errors.append(f"{status} {out[:200]!r}")
                continue
            latencies.append(took)
            if versions:
                answers.append((time.time(), json.loads(out)["version"]))

    t0 = loop.time()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker() for _ in range(inflight)))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    pool.close()
    return {"latencies": latencies, "errors": len(errors), "error_samples": errors[:5],
            "elapsed": loop.time() - t0, "answers": answers,
            "cpu": cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime}


def loadgen_main(args: argparse.Namespace) -> int:
    import uvloop

    result = uvloop.run(drive(args.loadgen, args.path, args.inflight, args.rows, args.seconds,
                              args.versions))
    Path(args.out).write_text(json.dumps(result))  # a file: the samples are too long for a line
    return 0


def run_load(url: str, path: str, inflight: int, rows: int, seconds: float,
             versions: bool = False, background: bool = False) -> Any:
    """The generator as a process; its result (or, with `background`, the process)."""
    out = Path(tempfile.mkstemp(prefix="regrow-loadgen-", suffix=".json")[1])
    cmd = [sys.executable, "-m", "tests.bench.serving", "--loadgen", url, "--path", path,
           "--inflight", str(inflight), "--rows", str(rows), "--seconds", str(seconds),
           "--out", str(out)]
    if versions:
        cmd.append("--versions")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    proc.out = out  # type: ignore[attr-defined]
    return proc if background else result_of(proc)


def result_of(proc: subprocess.Popen) -> dict[str, Any]:
    log, _ = proc.communicate(timeout=600)
    out: Path = proc.out  # type: ignore[attr-defined]
    try:
        if proc.returncode != 0 or not out.stat().st_size:
            raise SystemExit(f"load generator failed:\n{log[-2000:]}")
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def _q(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] * 1000


# ------------------------------------------------------------------------------ servers

def train(home: Path) -> Path:
    """Two versions of one model in `home` (kept when `home` has them); returns the config."""
    from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

    config = merge(BINARY_CONFIG, {"registry": {"model_name": MODEL}})
    if (home / "trained").exists():
        return home / "case" / "model.yaml"
    cfg = write_case(home / "case", binary_frame(3000), config)
    timed_regrow(["train", str(cfg)], home)
    write_case(home / "case", binary_frame(3000, seed=4, noise=1.0), config)
    timed_regrow(["train", str(cfg)], home)
    (home / "trained").touch()
    return cfg


def start(cmd: list[str], home: Path, port: int, name: str) -> subprocess.Popen:
    env = command_env(home)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{home / 'mlflow.db'}"
    env["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "true"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # uvicorn
    log = home / f"{name}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 300, proc=proc, log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


def regrow_cmd(cfg: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "regrow.app.cli", "predict-server", str(cfg), "--port",
            str(port), *extra]


def mlflow_cmd(port: int) -> list[str]:
    return [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
            f"models:/{MODEL}@champion", "--env-manager", "local", "--host", "127.0.0.1",
            "--port", str(port)]


PHASES = [("1 row", 1, 1), ("1 row", 8, 1), ("1 row", 32, 1), ("1000 rows", 2, 1000)]


def measure(server: str, url: str, seconds: float) -> list[dict[str, Any]]:
    rows = []
    warm = run_load(url, "/invocations", 4, 1, 1.0)  # warm-up: connections, first batches
    answered = len(warm["latencies"])
    for what, inflight, n in PHASES:
        r = run_load(url, "/invocations", inflight, n, seconds)
        lat = r["latencies"]
        rows.append({"server": server, "request": what, "in flight": inflight,
                     "req/s": len(lat) / r["elapsed"], "rows/s": len(lat) * n / r["elapsed"],
                     "p50 ms": _q(lat, 0.5), "p99 ms": _q(lat, 0.99), "errors": r["errors"],
                     "gen cpu": f"{r['cpu'] / r['elapsed']:.0%}",
                     "answered rows": answered + len(lat) * n})
        answered = 0
        print(f"  {server:<22} {what:<9} x{inflight:<3} {rows[-1]['req/s']:8.0f} req/s  "
              f"p50 {rows[-1]['p50 ms']:7.1f} ms  p99 {rows[-1]['p99 ms']:7.1f} ms  "
              f"errors {r['errors']}", flush=True)
    return rows


def promotions(home: Path, cfg: Path, url: str) -> dict[str, Any]:
    """10 promotions under steady load: failed requests, seconds until each new version
    answered alone."""
    os.environ.update(REGROW_HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true")
    for key in ("MLFLOW_TRACKING_URI", "REGROW_DATABASE_URL"):
        os.environ.pop(key, None)
    from regrow.tasks.registry import governance as gov
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    registry, store = Registry(settings), Store(settings.database_url)
    lead, tail = 2.0, TARGET_SWAP_S + 2  # load before the first and after the last promotion
    seconds = lead + PROMOTIONS * PROMOTION_GAP + tail
    gen = run_load(url, f"/v1/models/{MODEL}/predict", 8, 1, seconds, versions=True,
                   background=True)
    time.sleep(lead)
    moves: list[tuple[float, str]] = []
    for i in range(PROMOTIONS):
        target = "2" if registry.alias_version(MODEL, "champion") == "1" else "1"
        gov.promote(registry, store, MODEL, target, by="bench", reason=f"promotion {i + 1}",
                    override_gate="benchmark")
        moves.append((time.time(), target))
        time.sleep(PROMOTION_GAP)
    result = result_of(gen)
    answers = result["answers"]
    delays = []
    for k, (at, target) in enumerate(moves):
        until = moves[k + 1][0] if k + 1 < len(moves) else float("inf")
        after = [(t, v) for t, v in answers if at <= t < until]
        # the first moment from which every answer names the new version
        last_old = max((t for t, v in after if v != target), default=at)
        new = [t for t, v in after if v == target and t >= last_old]
        delays.append(new[0] - at if new else float("inf"))
    return {"requests": len(answers), "errors": result["errors"],
            "error_samples": result["error_samples"], "delays": delays}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.loadgen:
        return loadgen_main(args)
    with tempfile.TemporaryDirectory(prefix="regrow-bench-serving-") as tmp:
        home = Path(args.home or tmp)
        home.mkdir(parents=True, exist_ok=True)
        print("training two versions ...", flush=True)
        cfg = train(home)
        rows: list[dict[str, Any]] = []
        servers = [("mlflow models serve", mlflow_cmd),
                   ("regrow, log on", lambda p: regrow_cmd(cfg, p)),
                   ("regrow, log off", lambda p: regrow_cmd(cfg, p, "--no-log")),
                   ("regrow, log on, 2 workers", lambda p: regrow_cmd(cfg, p, "--workers", "2"))]
        logged: dict[str, float] = {}
        for name, make in servers:
            port = free_port()
            proc = start(make(port), home, port, name.replace(" ", "-").replace(",", ""))
            try:
                rows += measure(name, f"http://127.0.0.1:{port}", args.seconds)
                if name == "regrow, log on":
                    logged = log_counts(f"http://127.0.0.1:{port}")
            finally:
                stop(proc)
        port = free_port()
        proc = start(regrow_cmd(cfg, port), home, port, "regrow-promotions")
        try:
            promo = promotions(home, cfg, f"http://127.0.0.1:{port}")
        finally:
            stop(proc)
    return report(rows, promo, logged)


def log_counts(url: str) -> dict[str, float]:
    """The prediction log's counters of a running service (``/metrics``), once its queue has
    been written."""
    import httpx

    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        values = {line.split()[0].removeprefix("regrow_serving_log_"): float(line.split()[1])
                  for line in text.splitlines() if line.startswith("regrow_serving_log_")}
        if values.get("queue_rows", 0) == 0 or time.monotonic() > deadline:
            return values
        time.sleep(0.5)


def report(rows: list[dict[str, Any]], promo: dict[str, Any],
           logged: dict[str, float] | None = None) -> int:
    def cell(server: str, inflight: int, request: str = "1 row") -> dict[str, Any]:
        return next(r for r in rows if r["server"] == server and r["in flight"] == inflight
                    and r["request"] == request)

    base = {(r["request"], r["in flight"]): r["req/s"] for r in rows
            if r["server"] == "mlflow models serve"}
    for r in rows:
        r["x mlflow"] = r["req/s"] / base[(r["request"], r["in flight"])]
    cols = ["server", "request", "in flight", "req/s", "rows/s", "p50 ms", "p99 ms", "errors",
            "x mlflow", "gen cpu"]
    print()
    print(" | ".join(f"{c:>12}" if i else f"{c:<26}" for i, c in enumerate(cols)))
    for r in rows:
        print(" | ".join(
            (f"{r[c]:<26}" if i == 0 else f"{r[c]:>12.1f}" if isinstance(r[c], float)
             else f"{r[c]!s:>12}") for i, c in enumerate(cols)))
    on, off = cell("regrow, log on", 32), cell("regrow, log off", 32)
    speedup = on["x mlflow"]
    cost = 1 - on["req/s"] / off["req/s"]
    delays = promo["delays"]
    verdicts = [
        (f"32 in flight, log on: {speedup:.1f}x mlflow models serve (target >= "
         f"{TARGET_SPEEDUP:g}x)", speedup >= TARGET_SPEEDUP),
        (f"32 in flight, log on: p99 {on['p99 ms']:.1f} ms (target <= {TARGET_P99_MS:g} ms)",
         on["p99 ms"] <= TARGET_P99_MS and on["errors"] == 0),
        (f"logging costs {cost:.1%} of the throughput at 32 in flight (target <= "
         f"{TARGET_LOG_COST:.0%})", cost <= TARGET_LOG_COST),
        (f"{len(delays)} promotions under load ({promo['requests']} requests): "
         f"{promo['errors']} failed, new version answering alone after "
         f"{max(delays):.2f} s at most (median {sorted(delays)[len(delays) // 2]:.2f} s; "
         f"target 0 failed, <= {TARGET_SWAP_S:g} s)",
         promo["errors"] == 0 and max(delays) <= TARGET_SWAP_S),
    ]
    notes = [f"{'met' if ok else 'NOT MET'}: {text}" for text, ok in verdicts]
    if logged:
        answered = sum(r["answered rows"] for r in rows if r["server"] == "regrow, log on")
        notes.append(
            f"prediction log of the 'log on' server: {answered} rows answered, "
            f"{logged.get('written_rows_total', 0):.0f} written, "
            f"{logged.get('dropped_rows_total', 0):.0f} dropped, "
            f"{logged.get('failed_rows_total', 0):.0f} failed; the serving process spent "
            f"{logged.get('hand_over_seconds_total', 0):.2f} s handing them to its writer")
    print()
    for line in notes:
        print(line)
    if promo["error_samples"]:
        print("errors during promotions, e.g.:", promo["error_samples"])
    record("serving", [{c: r[c] for c in cols} for r in rows],
           "mlflow models serve of the same champion (--env-manager local, its defaults), "
           "started in the same run, driven by the same closed-loop generator (a separate "
           "asyncio process, minimal HTTP/1.1 keep-alive client) on MLflow's /invocations",
           tables={"promotions under load": [
               {"promotion": i + 1, "new version answering alone after s": d}
               for i, d in enumerate(delays)]},
           notes=notes)
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
