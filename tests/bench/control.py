"""The local control plane: how long `regrow up` takes, and what it saves each command.

On a fresh state dir with one small model: `regrow up CONFIG` cold (Prefect and MLflow create
and migrate their databases) until every part answers, then `down` and `up` again (warm), each
on free ports. Commands that need Prefect -- `regrow retrain` answered `cooling_down` (the policy
alone) and `regrow train` of 2,000 rows -- as fresh processes, median of `--repeats`, without the
plane (each starts a temporary Prefect server: the baseline) and with it.

Usage::

    .venv/bin/python -m tests.bench control [--repeats=3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from tests.bench import record, timed_regrow


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench control")
    p.add_argument("--repeats", type=int, default=3)
    args, _ = p.parse_known_args(argv)
    from tests.helpers import BINARY_CONFIG, binary_frame, write_case
    from tests.procs import free_port

    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        home = Path(tmp) / "home"
        cfg = str(write_case(Path(tmp) / "m", binary_frame(2000, seed=1), BINARY_CONFIG))

        def up() -> float:
            return timed_regrow(["up", cfg, "--prefect-port", str(free_port()), "--mlflow-port",
                         str(free_port()), "--webhook-port", str(free_port())], home)

        ups = {"cold": up()}
        print(f"`regrow up` cold: {ups['cold']:.1f} s", flush=True)
        timed_regrow(["down"], home)
        ups["warm"] = up()
        timed_regrow(["down"], home)
        print("setting up: one training ...", flush=True)
        timed_regrow(["train", cfg], home)  # a champion; later retrain requests are cooling down
        commands = {"retrain (cooling_down)": ["retrain", cfg, "--reason", "bench"],
                    "train (2,000 rows)": ["train", cfg, "--reason", "bench"]}
        times: dict[tuple[str, str], list[float]] = {}
        for mode in ("no plane", "plane up"):
            if mode == "plane up":
                up()
            try:
                for _ in range(args.repeats):
                    for name, cmd in commands.items():
                        times.setdefault((name, mode), []).append(timed_regrow(cmd, home))
            finally:
                if mode == "plane up":
                    timed_regrow(["down"], home)
    print("\n| `regrow up` (1 config: prefect, mlflow, serve) | s |")
    print("|---|---|")
    for kind, took in ups.items():
        print(f"| {kind}, until every part answers | {took:.1f} |")
    print("\n| command | runs | no plane: median s | plane up: median s | plane / no plane |")
    print("|---|---|---|---|---|")
    for name in commands:
        base = statistics.median(times[(name, "no plane")])
        med = statistics.median(times[(name, "plane up")])
        print(f"| `regrow {name}` | {len(times[(name, 'plane up')])} | {base:.2f} | {med:.2f} | "
              f"{med / base:.2f}x |")
    table = []
    for name in commands:
        base = statistics.median(times[(name, "no plane")])
        med = statistics.median(times[(name, "plane up")])
        table.append({"command": f"`regrow {name}`", "runs": len(times[(name, "plane up")]),
                      "no plane: median s": base, "plane up: median s": med,
                      "plane / no plane": f"{med / base:.2f}x"})
    record("control", table,
           "each command without the control plane, starting a temporary Prefect server",
           tables={"`regrow up` (1 config: prefect, mlflow, serve)": [
               {"start": f"{kind}, until every part answers", "s": took}
               for kind, took in ups.items()]})
    return 0
