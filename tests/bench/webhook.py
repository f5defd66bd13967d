"""Webhook receiver benchmark: latency of signed deliveries under a steady open-loop load.

Set-up, all on loopback, all temporary:

- a real ``prefect server start`` (fresh SQLite home) -- the receiver emits its events there;
- the receiver, ``python -m regrow.app.webhook`` (uvicorn, one process, access log off), on a
  SQLite monitoring store in a temporary ``REGROW_HOME`` (or ``--database-url=``);
- a load generator in a second process that starts requests on a fixed schedule (``--rate``
  per second for ``--seconds``; a late answer does not delay the next request), each one
  validly signed, with its own delivery id, for a couple of models: ``retrain`` requests
  (the first per model is admitted and emits ``regrow.retrain.admitted``; the rest are
  coalesced by the policy, each still a full policy decision and a recorded request) and a
  share of ``data-arrived`` deliveries (each emits ``regrow.data.arrived`` to the Prefect
  server). Its client is a minimal asyncio HTTP/1.1 keep-alive client (``--client=httpx``
  for httpx, which costs about 3 ms of CPU per request here and becomes the bottleneck).

Then the same deliveries twice more while ``regrow train`` of the demo config runs in a loop
on the same machine (its own state directory, a temporary Prefect server per command, as a
training admitted by a webhook or started by a person would be): once at normal priority
(``hooks+tr0``, ``REGROW_TRAIN_NICE=0``) and once at regrow's default (``hooks+tr``, nice 10:
trainings yield the CPU to the receiver). ``--no-training`` skips them.

Baseline, same run, same rate: ``GET /healthz`` (HTTP stack and load generator, no
signature, no database, no event). Latency is measured per request from the moment the
generator writes it to the moment the answer is read; "lag" is how late the generator itself
started requests against its schedule (a loaded machine shows up there first). The table
also shows the CPU used by the receiver, the generator and the Prefect server, and the
hooks phase's p50/p99 per 5 s of schedule (bursts from other processes show up as one bad
window).

Usage::

    .venv/bin/python -m tests.bench webhook                  # 200/s for 30 s
    .venv/bin/python -m tests.bench webhook --quick          # 100/s for 5 s
    .venv/bin/python -m tests.bench webhook --rate=300 --seconds=20
    .venv/bin/python -m tests.bench webhook --policy-indexes # with the proposed store indexes

Bounded: at most 600 s and 100,000 requests per phase; the target must be loopback.
Target: p99 <= 50 ms at 200/s, no errors, idle and while a training runs at the default
priority. Exit status 0 when it is met.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tests.bench import record
from tests.procs import free_port, stop, wait_http

ROOT = Path(__file__).resolve().parents[2]
MAX_SECONDS, MAX_REQUESTS = 600, 100_000
TARGET_RATE, TARGET_P99_MS = 200, 50.0
MODELS = ["bench-a", "bench-b"]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.webhook", description=__doc__)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=float, default=float(TARGET_RATE), help="requests per second")
    p.add_argument("--quick", action="store_true", help="100/s for 5 s (a smoke run)")
    p.add_argument("--data-share", type=float, default=0.2,
                   help="share of data-arrived deliveries (the rest are retrain requests)")
    p.add_argument("--baseline-seconds", type=float, default=None,
                   help="length of the /healthz phase (default: min(seconds, 10))")
    p.add_argument("--database-url", default=None,
                   help="monitoring store for the receiver (default: SQLite in a temp home)")
    p.add_argument("--access-log", action="store_true", help="keep uvicorn's access log on")
    p.add_argument("--policy-indexes", action="store_true",
                   help="create the composite retrain_requests indexes proposed for "
                        "tasks/store/database.py before the run (the policy's queries scan a model's "
                        "requests without them)")
    p.add_argument("--no-training", action="store_true",
                   help="skip the two phases with a training running on the same machine")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="load generator client: a minimal asyncio HTTP/1.1 client (default) or "
                        "httpx (about 3 ms of CPU per request here: it becomes the bottleneck)")
    # internal: the load generator's own process
    p.add_argument("--loadgen", default=None, help=argparse.SUPPRESS)
    p.add_argument("--phase", default="hooks", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.rate = 5.0, 100.0
    if not (0 < args.seconds <= MAX_SECONDS) or not (0 < args.rate <= 2000):
        p.error(f"--seconds must be in (0, {MAX_SECONDS}] and --rate in (0, 2000]")
    if args.rate * args.seconds > MAX_REQUESTS:
        p.error(f"rate x seconds must stay <= {MAX_REQUESTS} requests")
    if not 0 <= args.data_share <= 1:
        p.error("--data-share must be within [0, 1]")
    return args


# ------------------------------------------------------------------------------ load generator

def _loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    if host not in {"127.0.0.1", "localhost", "::1"}:
        raise SystemExit(f"refusing to load a non-loopback target: {url}")
    return url


def request_for(i: int, phase: str, run: str, secret: str,
                data_every: int) -> tuple[str, str, bytes, dict[str, str]]:
    """(method, path, body, headers) of request `i`, signed now."""
    from regrow.app.webhook import sign

    if phase == "healthz":
        return "GET", "/healthz", b"", {}
    model = MODELS[i % len(MODELS)]
    data = data_every and i % data_every == data_every - 1
    body = json.dumps({"model": model, "source": {"path": f"/landing/{model}/{i}.csv"}}
                      if data else {"model": model, "reason": f"bench request {i}"}).encode()
    headers = sign(secret, body, int(time.time()), delivery_id=f"bench-{run}-{i}")
    return "POST", f"/v1/hooks/{'data-arrived' if data else 'retrain'}", body, headers


class RawPool:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a fraction of httpx's CPU per
    request, so that on a small machine the generator is not what is measured. Like any
    keep-alive client it retries once, on a fresh connection, when a reused one turns out to
    have been closed by the server (uvicorn closes connections idle for 5 s)."""

    IDLE_SECONDS = 4.0  # below uvicorn's keep-alive timeout

    def __init__(self, url: str, size: int) -> None:
        u = urlparse(url)
        self.host, self.port, self.size = u.hostname or "127.0.0.1", u.port or 80, size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < self.IDLE_SECONDS and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return reader, writer, False

    async def request(self, method: str, path: str, body: bytes,
                      headers: dict[str, str]) -> tuple[int, bytes, float]:
        """Send one request; returns (status, body, seconds from write to last byte read)."""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for attempt in (1, 2):
            reader, writer, reused = await self._connection()
            try:
                t = time.perf_counter()
                writer.write(data)
                status_line = await reader.readline()
                if not status_line:
                    raise ConnectionResetError("connection closed before the response")
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                payload = await reader.readexactly(length)
                elapsed = time.perf_counter() - t
            except (ConnectionError, RuntimeError):
                writer.close()
                if reused and attempt == 1:  # a stale keep-alive connection: nothing was read
                    continue
                raise
            except BaseException:
                writer.close()
                raise
            if len(self.idle) < self.size:
                self.idle.append((reader, writer, time.monotonic()))
            else:
                writer.close()
            return int(status_line.split()[1]), payload, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


async def drive(url: str, rate: float, seconds: float, phase: str, secret: str,
                data_share: float, client: str = "raw") -> dict[str, Any]:
    """Start ``rate * seconds`` requests on a fixed schedule (open loop); return samples
    ``(lag s, latency s, status, verdict, request number)``."""
    request_for(0, phase, "warm-up", secret, 0)  # imports done before the clock starts
    n = int(rate * seconds)
    run = uuid.uuid4().hex[:8]
    every = round(1 / data_share) if data_share > 0 else 0
    samples: list[tuple[float, float, int, str, int]] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    if client == "httpx":
        import httpx

        hx = httpx.AsyncClient(base_url=url, timeout=30, limits=httpx.Limits(
            max_connections=256, max_keepalive_connections=256))

        async def send(method: str, path: str, body: bytes,
                       headers: dict[str, str]) -> tuple[int, bytes, float]:
            t = time.perf_counter()
            res = await hx.request(method, path, content=body or None, headers=headers)
            return res.status_code, res.content, time.perf_counter() - t
    else:
        pool = RawPool(url, 256)
        send = pool.request

    async def one(i: int, due: float) -> None:
        lag = loop.time() - due
        try:
            status, payload, latency = await asyncio.wait_for(
                send(*request_for(i, phase, run, secret, every)), 30)
            answer = json.loads(payload) if payload else {}
            verdict = ("ok" if phase == "healthz" else answer.get("verdict") or "data-arrived") \
                if status in (200, 202) else f"http-{status}"
            samples.append((lag, latency, status, verdict, i))
            if status not in (200, 202) and len(errors) < 10:
                errors.append(f"{status} {payload[:200]!r}")
        except Exception as err:  # noqa: BLE001 - every failure is a sample, not a crash
            samples.append((lag, float("nan"), 0, "transport-error", i))
            if len(errors) < 10:
                errors.append(f"{type(err).__name__}: {err}")

    start = loop.time() + 0.2
    tasks = []
    for i in range(n):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    if client == "httpx":
        await hx.aclose()
    else:
        pool.close()
    return {"samples": samples, "errors": errors, "elapsed": elapsed, "planned": n}


def loadgen_main(args: argparse.Namespace) -> int:
    """The load generator's process: drive the target, print the result as JSON."""
    url = _loopback(args.loadgen)
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        pass
    result = runner(drive(url, args.rate, args.seconds, args.phase,
                          os.environ["REGROW_WEBHOOK_SECRET"], args.data_share, args.client))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


# ------------------------------------------------------------------------------ servers

def start(cmd: list[str], env: dict[str, str], log: Path, health: str,
          timeout: float) -> subprocess.Popen:
    """Start a server process (output to `log`) and wait for its health URL."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(health, timeout, proc=proc, log=log)
    except BaseException:
        stop(proc)
        raise
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------ the run

@dataclass
class Phase:
    """One load phase's numbers."""

    name: str
    planned: int
    sent: int
    elapsed: float
    ok: int
    errors: int
    p50: float
    p90: float
    p99: float
    max: float
    lag_p99: float
    receiver_cpu: float
    generator_cpu: float
    server_cpu: float
    verdicts: dict[str, int]
    error_samples: list[str]
    windows: list[tuple[float, float]]  # (p50, p99) ms per 5 s of the schedule

    @property
    def rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0


def _quantile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, int(round(q * (len(sorted_ms) - 1))))]


def run_phase(name: str, url: str, rate: float, seconds: float, data_share: float,
              env: dict[str, str], receiver_pid: int, client: str, server_pid: int) -> Phase:
    """Run the load generator in its own process for one phase; summarise its samples."""
    import resource

    cpu0, server0 = cpu_seconds(receiver_pid), cpu_seconds(server_pid)
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.webhook", f"--loadgen={url}", f"--phase={name}",
         f"--rate={rate}", f"--seconds={seconds}", f"--data-share={data_share}",
         f"--client={client}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 300)
    cpu, server_cpu = cpu_seconds(receiver_pid) - cpu0, cpu_seconds(server_pid) - server0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    gen_cpu = (children.ru_utime - children0.ru_utime) + (children.ru_stime - children0.ru_stime)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"load generator failed ({out.returncode}):\n{out.stderr[-3000:]}")
    res = json.loads(line[len("RESULT "):])
    samples = res["samples"]
    good = sorted(1000 * s[1] for s in samples if s[2] in (200, 202))
    verdicts: dict[str, int] = {}
    for s in samples:
        verdicts[s[3] or "?"] = verdicts.get(s[3] or "?", 0) + 1
    lags = sorted(1000 * s[0] for s in samples)
    per_window = int(5 * rate) or 1
    by_window: dict[int, list[float]] = {}
    for s in samples:
        if s[2] in (200, 202):
            by_window.setdefault(s[4] // per_window, []).append(1000 * s[1])
    windows = [(_quantile(sorted(v), 0.5), _quantile(sorted(v), 0.99))
               for _, v in sorted(by_window.items())]
    return Phase(name, res["planned"], len(samples), res["elapsed"], len(good),
                 len(samples) - len(good), _quantile(good, 0.5), _quantile(good, 0.9),
                 _quantile(good, 0.99), good[-1] if good else float("nan"),
                 _quantile(lags, 0.99), cpu, gen_cpu, server_cpu, verdicts, res["errors"],
                 windows)


POLICY_INDEXES = [
    "CREATE INDEX IF NOT EXISTS ix_retrain_requests_model_state "
    "ON retrain_requests (model, state, id)",
    "CREATE INDEX IF NOT EXISTS ix_retrain_requests_model_verdict "
    "ON retrain_requests (model, verdict, created_at)",
]


def add_policy_indexes(database_url: str) -> None:
    """Create the store's tables and the proposed policy indexes (see --policy-indexes)."""
    import sqlalchemy as sa

    from regrow.tasks.store.database import Store

    store = Store(database_url)
    try:
        with store.engine.begin() as conn:
            for ddl in POLICY_INDEXES:
                conn.execute(sa.text(ddl))
    finally:
        store.dispose()


def check_store(database_url: str, delivered: int) -> list[str]:
    """What the monitoring store holds after the run, as lines for the report."""
    import sqlalchemy as sa

    from regrow.tasks.store.database import Store, retrain_requests, webhook_deliveries

    store = Store(database_url)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(retrain_requests.c.model, retrain_requests.c.verdict,
                                          sa.func.count()).group_by(
                retrain_requests.c.model, retrain_requests.c.verdict)).all()
            deliveries = conn.execute(sa.select(webhook_deliveries.c.status_code, sa.func.count())
                                      .group_by(webhook_deliveries.c.status_code)).all()
    finally:
        store.dispose()
    admitted = {m: c for m, v, c in rows if v == "admitted"}
    lines = [f"store: retrain requests {sorted((m, v, c) for m, v, c in rows)}",
             f"store: webhook deliveries by status {sorted(deliveries)} "
             f"(sent {delivered} signed deliveries)"]
    if any(c != 1 for c in admitted.values()) or len(admitted) != len(MODELS):
        lines.append(f"!! expected exactly one admitted request per model, got {admitted}")
    return lines


class TrainingLoad:
    """`regrow train` of the demo config, again and again, in its own state directory, while a
    phase runs: a training on the same machine as the receiver, as a webhook-admitted retrain
    or a person's command would be (imports, a temporary Prefect server, validation, the fits,
    logging). `nice` is its ``REGROW_TRAIN_NICE``: 0 for normal priority, None for regrow's
    default."""

    def __init__(self, tmp: Path, env: dict[str, str], nice: int | None) -> None:
        import threading

        from regrow.app.demo import load_rainfall

        data = tmp / "training-load.csv"
        if not data.exists():
            load_rainfall().iloc[:6000].to_csv(data, index=False)
        self.argv = [sys.executable, "-m", "regrow.app.cli", "train",
                     str(ROOT / "configs" / "rainfall.yaml"), "--set",
                     f"data.source.path={data}", "--reason", "webhook bench load"]
        self.env = {**env, "REGROW_HOME": str(tmp / "training-home"), "REGROW_WARM": "off",
                    "REGROW_PROGRESS": "0"}
        if nice is not None:
            self.env["REGROW_TRAIN_NICE"] = str(nice)
        self.log = tmp / "training-load.log"
        self.finished = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        with open(self.log, "a") as out:
            while not self._stop.is_set():
                self._proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out,
                                              stderr=subprocess.STDOUT)
                if self._proc.wait() == 0 and not self._stop.is_set():
                    self.finished += 1

    def __enter__(self) -> TrainingLoad:
        self._thread.start()
        time.sleep(3.0)  # the first training is under way (imports, server) when hooks start
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
        self._thread.join(timeout=60)


def table(phases: list[Phase]) -> str:
    head = (f"{'phase':<9} {'sent':>6} {'rate/s':>7} {'ok':>6} {'errors':>6} {'p50 ms':>7} "
            f"{'p90 ms':>7} {'p99 ms':>7} {'max ms':>7} {'lag p99':>8} {'rx cpu':>7} "
            f"{'gen cpu':>7} {'pf cpu':>7}")
    lines = [head, "-" * len(head)]
    for p in phases:
        lines.append(f"{p.name:<9} {p.sent:>6} {p.rate:>7.1f} {p.ok:>6} {p.errors:>6} "
                     f"{p.p50:>7.2f} {p.p90:>7.2f} {p.p99:>7.2f} {p.max:>7.1f} "
                     f"{p.lag_p99:>8.2f} {100 * p.receiver_cpu / p.elapsed:>6.0f}% "
                     f"{100 * p.generator_cpu / p.elapsed:>6.0f}% "
                     f"{100 * p.server_cpu / p.elapsed:>6.0f}%")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Run the benchmark and print its table. Returns 0 when the target is met, else 1."""
    args = parse_args(argv)
    if args.loadgen:
        return loadgen_main(args)

    def log(msg: str) -> None:
        print(f"[bench webhook] {msg}", file=sys.stderr, flush=True)

    from regrow.app.webhook import DEFAULT_PORT  # noqa: F401 - fail fast if the module is broken
    from tests.helpers import BINARY_CONFIG, merge, write_case

    secret = uuid.uuid4().hex + uuid.uuid4().hex
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PREFECT_", "REGROW_", "MLFLOW_"))}
    base_env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
                    MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(ROOT))
    loads = [load_average()]
    with tempfile.TemporaryDirectory(prefix="regrow-bench-webhook-") as tmp_name:
        tmp = Path(tmp_name)
        configs = [write_case(tmp / "configs" / m, None, merge(BINARY_CONFIG, {
            "registry": {"model_name": m}, "retrain": {"cooldown": "1h"}})) for m in MODELS]
        procs: list[subprocess.Popen] = []
        try:
            t = time.monotonic()
            api_port = free_port()
            api = f"http://127.0.0.1:{api_port}/api"
            procs.append(start(
                [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                 "--port", str(api_port)],
                {**base_env, "PREFECT_HOME": str(tmp / "prefect-server"),
                 "PREFECT_UI_ENABLED": "false"},
                tmp / "prefect-server.log", f"{api}/health", 180))
            log(f"prefect server up in {time.monotonic() - t:.1f} s at {api}")
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            database_url = args.database_url or f"sqlite:///{tmp / 'home' / 'regrow.db'}"
            (tmp / "home").mkdir()
            if args.policy_indexes:
                add_policy_indexes(database_url)
            rx_env = {**base_env, "PREFECT_API_URL": api,
                      "PREFECT_HOME": str(tmp / "prefect-client"),
                      "REGROW_HOME": str(tmp / "home"), "REGROW_DATABASE_URL": database_url,
                      "REGROW_WEBHOOK_SECRET": secret}
            t = time.monotonic()
            receiver = start(
                [sys.executable, "-m", "regrow.app.webhook", "--host", "127.0.0.1", "--port",
                 str(port), "--log-level", "warning",
                 *([] if args.access_log else ["--no-access-log"]), *map(str, configs)],
                rx_env, tmp / "receiver.log", f"{url}/healthz", 120)
            procs.append(receiver)
            log(f"receiver up in {time.monotonic() - t:.1f} s at {url}")
            gen_env = {**base_env, "REGROW_WEBHOOK_SECRET": secret}
            baseline_s = args.baseline_seconds or min(args.seconds, 10.0)
            phases = []
            log(f"baseline: GET /healthz at {args.rate:g}/s for {baseline_s:g} s")
            phases.append(run_phase("healthz", url, args.rate, baseline_s, 0, gen_env,
                                    receiver.pid, args.client, procs[0].pid))
            log(f"hooks: signed deliveries at {args.rate:g}/s for {args.seconds:g} s")
            phases.append(run_phase("hooks", url, args.rate, args.seconds, args.data_share,
                                    gen_env, receiver.pid, args.client, procs[0].pid))
            trainings: dict[str, int] = {}
            for name, nice in ([] if args.no_training else [("hooks+tr0", 0), ("hooks+tr", None)]):
                log(f"{name}: signed deliveries at {args.rate:g}/s for {args.seconds:g} s while "
                    f"`regrow train` runs in a loop (REGROW_TRAIN_NICE="
                    f"{'default' if nice is None else nice})")
                with TrainingLoad(tmp, base_env, nice) as load:
                    phases.append(run_phase(name, url, args.rate, args.seconds, args.data_share,
                                            gen_env, receiver.pid, args.client, procs[0].pid))
                trainings[name] = load.finished
            loads.append(load_average())
            store_lines = check_store(database_url, sum(p.sent for p in phases[1:]))
            rx_log = (tmp / "receiver.log").read_text()
        finally:
            for proc in reversed(procs):
                stop(proc)
    hooks = phases[1]
    print(f"\nwebhook benchmark -- {os.cpu_count()} cores, python {sys.version.split()[0]}, "
          f"load average {' -> '.join(loads)} (1/5/15 min, start -> end)")
    store = "SQLite (temp)" if not args.database_url else "the given URL"
    store += " + proposed policy indexes" if args.policy_indexes else " as tasks/store/database.py makes it"
    print(f"receiver: 1 uvicorn process, store {store}, events to a real Prefect server; "
          f"load: open loop {args.rate:g}/s from a second process ({args.client} client), "
          f"models {MODELS}, "
          f"data-arrived share {args.data_share:g}")
    print(table(phases))
    print("latency: send -> answer read, ok responses only; lag p99: generator behind schedule; "
          "rx/gen/pf cpu: receiver / load generator / Prefect server CPU over the phase "
          "(100% = one core)")
    print("hooks p50/p99 ms per 5 s: "
          + "  ".join(f"{a:.1f}/{b:.1f}" for a, b in hooks.windows))
    print(f"answers (hooks): {dict(sorted(hooks.verdicts.items()))}")
    print("\n".join(store_lines))
    for e in hooks.error_samples:
        print(f"error sample: {e}")
    warnings = [ln for ln in rx_log.splitlines() if "ERROR" in ln or "Traceback" in ln][:5]
    for w in warnings:
        print(f"receiver log: {w}")
    if trainings:
        print("hooks+tr0: a training loop at normal priority; hooks+tr: at regrow's default "
              f"(REGROW_TRAIN_NICE=10). Trainings finished per phase: {trainings}")
        idle = hooks.p99
        for p in phases[2:]:
            print(f"{p.name}: p99 {p.p99:.1f} ms = {p.p99 / idle:.1f}x the idle hooks phase; "
                  f"{p.errors} errors")
    # the target: idle, and while a training runs at regrow's default priority
    judged = [p for p in phases[1:] if p.name != "hooks+tr0"]
    met = all(p.errors == 0 and p.p99 <= TARGET_P99_MS and p.rate >= 0.95 * args.rate
              for p in judged) and not any(ln.startswith("!!") for ln in store_lines)
    print(f"target (p99 <= {TARGET_P99_MS:g} ms, no errors, rate held; idle and while a "
          f"training runs): {'MET' if met else 'NOT MET'} -- "
          + ", ".join(f"{p.name} p99 {p.p99:.1f} ms, {p.errors} errors, {p.rate:.1f}/s"
                      for p in judged))
    record("webhook", [
        {"phase": p.name, "sent": p.sent, "rate/s": p.rate, "ok": p.ok, "errors": p.errors,
         "p50 ms": p.p50, "p90 ms": p.p90, "p99 ms": p.p99, "max ms": p.max,
         "lag p99 ms": p.lag_p99, "rx cpu": f"{100 * p.receiver_cpu / p.elapsed:.0f}%",
         "gen cpu": f"{100 * p.generator_cpu / p.elapsed:.0f}%",
         "pf cpu": f"{100 * p.server_cpu / p.elapsed:.0f}%"} for p in phases],
        "GET /healthz at the same rate (phase healthz); hooks+tr0: while a training loop runs "
        "at normal priority, hooks+tr: at regrow's default (REGROW_TRAIN_NICE=10)",
        notes=[f"receiver: 1 uvicorn process, store {store}; open loop {args.rate:g}/s from a "
               f"second process ({args.client} client); latency: send -> answer read, ok "
               "responses only; rx/gen/pf cpu: receiver / load generator / Prefect server CPU "
               "over the phase (100% = one core)",
               f"answers (hooks): {dict(sorted(hooks.verdicts.items()))}",
               f"target (p99 <= {TARGET_P99_MS:g} ms, no errors, rate held; idle and while a "
               f"training runs): {'MET' if met else 'NOT MET'}"])
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
