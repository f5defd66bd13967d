"""Benchmark: a signed webhook accepted -> the training flow run Running on the server.

Starts a real ``prefect server``, ``regrow serve`` for one synthetic model and the webhook
receiver, then sends N signed retrain webhooks one after another (each waits for its training
to finish, so the policy admits the next one). For each it measures, from the 202 answer:
the flow run created by the event trigger, the run Running (the runner polled, started a
process, the process imported the flow), and the run finished.

    python -m tests.bench dispatch [--runs=10] [--poll=1]

``--poll`` is PREFECT_RUNNER_POLL_FREQUENCY for the serving process (Prefect's default is 10 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench import record

ROOT = Path(__file__).resolve().parents[2]
SECRET = "bench-secret-not-for-production"


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=ROOT)


def _config(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.helpers import BINARY_CONFIG, binary_frame, merge, write_case

    cfg = merge(BINARY_CONFIG, {"registry": {"model_name": "bench-dispatch"},
                                "retrain": {"cooldown": "1s", "max_trainings": 1000},
                                "candidates": {"threads": 1}})
    return write_case(folder, binary_frame(2000), cfg)


def _runs_for(client, deployment_id, request_id: int):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
        id=DeploymentFilterId(any_=[deployment_id])))
    return [r for r in runs if (r.parameters.get("request") or {}).get("request_id") == request_id]


def main(argv: list[str]) -> int:
    """Run the benchmark and print its table."""
    p = argparse.ArgumentParser(prog="python -m tests.bench dispatch")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--poll", type=float, default=1.0, help="runner poll interval, seconds")
    p.add_argument("--quick", action="store_true", help="3 runs")
    args = p.parse_args(argv)
    runs = 3 if args.quick else args.runs

    import httpx

    from regrow.app.webhook import sign
    from tests.procs import free_port, stop, wait_http

    tmp = Path(tempfile.mkdtemp(prefix="regrow-bench-dispatch-"))
    cfg = _config(tmp / "model")
    api_port, hook_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}/api"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "REGROW_"))}
    base.update(PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    procs = []
    try:
        t0 = time.monotonic()
        procs.append(_start([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(api_port)],
                            {**base, "PREFECT_HOME": str(tmp / "prefect")}, tmp / "server.log"))
        wait_http(f"{api}/health")
        print(f"[dispatch] prefect server up in {time.monotonic() - t0:.1f} s")
        env = {**base, "PREFECT_API_URL": api, "REGROW_HOME": str(tmp / "home"),
               "PREFECT_RUNNER_POLL_FREQUENCY": str(args.poll), "REGROW_WEBHOOK_SECRET": SECRET}
        procs.append(_start([sys.executable, "-m", "regrow.app.cli", "serve", str(cfg)], env,
                            tmp / "serve.log"))
        procs.append(_start([sys.executable, "-m", "regrow.app.webhook", str(cfg), "--port",
                             str(hook_port)], env, tmp / "webhook.log"))
        wait_http(f"http://127.0.0.1:{hook_port}/healthz")
        os.environ["PREFECT_API_URL"] = api
        from prefect import get_client

        with get_client(sync_client=True) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    dep = client.read_deployment_by_name("regrow-train-request/train-bench-dispatch")
                    break
                except Exception:  # noqa: BLE001 - not created yet
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            rows = []
            for i in range(runs):
                body = json.dumps({"model": "bench-dispatch", "reason": f"bench {i}"}).encode()
                headers = sign(SECRET, body, int(time.time()), delivery_id=uuid.uuid4().hex)
                sent = time.monotonic()
                answer = httpx.post(f"http://127.0.0.1:{hook_port}/v1/hooks/retrain",
                                    content=body, headers=headers, timeout=10)
                accepted = time.monotonic()
                data = answer.json()
                if answer.status_code != 202 or data.get("verdict") != "admitted":
                    print(f"[dispatch] run {i}: not admitted: {answer.status_code} {data}")
                    return 1
                created = running = None
                while True:
                    found = _runs_for(client, dep.id, data["request_id"])
                    now = time.monotonic()
                    if found and created is None:
                        created = now
                    if found and running is None and found[0].state and (
                            found[0].state.is_running() or found[0].state.is_final()):
                        running = now
                    if found and found[0].state and found[0].state.is_final():
                        if not found[0].state.is_completed():
                            print(f"[dispatch] run {i} ended {found[0].state.name}; see {tmp}")
                            return 1
                        break
                    if now - accepted > 600:
                        print(f"[dispatch] run {i} timed out; logs in {tmp}")
                        return 1
                    time.sleep(0.05)
                rows.append({"answer_ms": (accepted - sent) * 1000, "created": created - accepted,
                             "running": running - accepted, "finished": now - accepted})
                print(f"[dispatch] run {i}: 202 in {rows[-1]['answer_ms']:.0f} ms, created "
                      f"+{rows[-1]['created']:.2f} s, Running +{rows[-1]['running']:.2f} s, "
                      f"finished +{rows[-1]['finished']:.1f} s")
                time.sleep(1.2)  # the model's 1 s cooldown
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        print(f"\nwebhook accepted -> training flow run (runner poll {args.poll} s, {runs} runs, "
              f"medians; min..max)")
        print(f"{'measure':<34}{'median':>10}{'min':>10}{'max':>10}")
        for key, label, unit in (("answer_ms", "webhook answered (202)", "ms"),
                                 ("created", "accepted -> flow run created", "s"),
                                 ("running", "accepted -> flow run Running", "s"),
                                 ("finished", "accepted -> training finished", "s")):
            vals = [r[key] for r in rows]
            print(f"{label + ' [' + unit + ']':<34}{med[key]:>10.2f}{min(vals):>10.2f}"
                  f"{max(vals):>10.2f}")
        verdict = "MET" if med["running"] <= 3.0 else "NOT MET"
        print(f"target accepted -> Running median <= 3 s: {verdict} ({med['running']:.2f} s)")
        record("dispatch", [
            {"measure": label, "unit": unit, "median": med[key],
             "min": min(r[key] for r in rows), "max": max(r[key] for r in rows)}
            for key, label, unit in (("answer_ms", "webhook answered (202)", "ms"),
                                     ("created", "accepted -> flow run created", "s"),
                                     ("running", "accepted -> flow run Running", "s"),
                                     ("finished", "accepted -> training finished", "s"))],
            "none in the run: times from the receiver's 202 answer",
            notes=[f"runner poll {args.poll} s, {runs} runs",
                   f"target accepted -> Running median <= 3 s: {verdict} "
                   f"({med['running']:.2f} s)"])
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc, timeout=20)
