"""The warm process of `regrow up` (``python -m regrow.app.warm_main SOCKET``): the runtime's
warm server (`regrow.runtime.warm`) answering with this command line."""

from __future__ import annotations

import sys
from pathlib import Path

from regrow.runtime.warm import serve

# What the warm process imports before it answers: every library a command may need.
WARM_IMPORTS = ("regrow.app.cli", "regrow.app.report", "regrow.flows.training",
                "regrow.flows.monitoring", "regrow.app.backtest_cli", "regrow.app.reproduce_cli",
                "regrow.app.demo", "regrow.tasks.monitoring.drift", "regrow.tasks.data.validate",
                "regrow.tasks.registry.card", "great_expectations", "evidently", "mlflow.sklearn",
                "skops.io", "sklearn.ensemble", "sklearn.linear_model", "mlflow.pyfunc",
                "prefect.flow_engine", "prefect.task_engine", "pyarrow.dataset",
                "pyarrow.parquet")


def run_command(argv: list[str]) -> int:
    """One forwarded command, run here as the command line would (never forwarded again)."""
    from regrow.app.cli import main

    return main(argv, warm=False)


if __name__ == "__main__":
    serve(Path(sys.argv[1]), run_command, WARM_IMPORTS)
