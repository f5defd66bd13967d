"""regrow's Python API, for notebooks and for other Prefect flows.

Each call is what the command of the same name does, with the same config file, the same
checks and the same records, and returns the typed outcome the command prints::

    import regrow

    outcome = regrow.train("configs/rainfall.yaml", reason="weekly refresh")
    print(outcome.decision["verdict"], outcome.champion_after)
    regrow.score("configs/rainfall.yaml", "new_rows.parquet")     # or a pandas DataFrame
    check = regrow.watch("configs/rainfall.yaml", retrain=False)
    print(regrow.status("configs/rainfall.yaml")["champion"])

Called inside a Prefect flow, `train`, `score`, `watch` and `retrain` run as its subflows.
State goes where the commands put it (``REGROW_HOME``, ``MLFLOW_TRACKING_URI``,
``REGROW_DATABASE_URL``, ``PREFECT_API_URL``: set before the first call). Importing this
package imports nothing heavy; each function imports what it needs.

Bad input raises the exception the command reports as one sentence (`ConfigError`,
`ValidationFailed`, `ScoringError`, ...); the champion never moves on an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from regrow.flows.monitoring import DriftOutcome, RetrainOutcome
    from regrow.flows.training import TrainingOutcome
    from regrow.tasks.monitoring.scoring import LabelResult, ScoringResult

__all__ = ["train", "score", "labels", "watch", "retrain", "status"]


def _infer_task(section: Any, folder: Path) -> tuple[str, str]:
    """A config that leaves out data.task: the task its target asks for (see configs.hooks)."""
    from regrow.tasks.data.profile import infer_task_of

    return infer_task_of(section, folder)


from regrow.configs import hooks as _hooks  # noqa: E402 - the wiring, after what it wires

_hooks.task_inference = _infer_task


def _setup(flows: bool = True) -> None:
    """The process environment; with `flows`, a new Prefect home's ready database (for the
    temporary server Prefect starts when no server is configured)."""
    import os

    from regrow.runtime.prefect_home import seed_prefect_home
    from regrow.tasks.store.settings import configure_process_env

    settings = configure_process_env(verbose=True)  # keep the caller's logging as it is
    if flows and not os.environ.get("PREFECT_API_URL"):
        seed_prefect_home(settings)


def train(config: str | Path, *, overrides: dict[str, Any] | None = None, reason: str = "",
          trigger: str = "manual") -> TrainingOutcome:
    """Train the config's candidates, gate the best and promote it if it passes
    (`regrow train`). Returns the `TrainingOutcome`: data, candidates, holdout, the gate's
    decision, the version and the champion before and after."""
    _setup()
    from regrow.flows.training import train_flow

    return train_flow(str(config), overrides=overrides, trigger=trigger, reason=reason,
                      actor="python")


def score(config: str | Path, rows: str | Path | pd.DataFrame, *,
          overrides: dict[str, Any] | None = None) -> ScoringResult:
    """Score rows with the champion and log them to the prediction log (`regrow score`):
    a CSV or Parquet path, or a DataFrame."""
    _setup()
    from regrow.flows.monitoring import score_flow

    if isinstance(rows, (str, Path)):
        return score_flow(str(config), str(rows), None, overrides)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="regrow-score-") as tmp:
        path = Path(tmp) / "rows.parquet"
        rows.to_parquet(path, index=False)
        return score_flow(str(config), str(path), None, overrides)


def labels(config: str | Path, rows: pd.DataFrame, *,
           overrides: dict[str, Any] | None = None) -> LabelResult:
    """Record labels that arrived later, joined to logged predictions by the id column
    (`regrow labels`)."""
    _setup(flows=False)
    from regrow.configs.schema import load_config
    from regrow.tasks.monitoring.scoring import record_labels
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    loaded = load_config(config, overrides)
    return record_labels(loaded.config, rows, Store(Settings.from_env().database_url))


def watch(config: str | Path, *, retrain: bool = True,
          overrides: dict[str, Any] | None = None) -> DriftOutcome:
    """One drift check of the champion's latest window (`regrow watch`); with `retrain`, a
    persistent degradation asks the retrain policy for a training."""
    _setup()
    from regrow.flows.monitoring import drift_check_flow

    return drift_check_flow(str(config), overrides, retrain=retrain)


def retrain(config: str | Path, reason: str, *, actor: str = "python",
            overrides: dict[str, Any] | None = None) -> RetrainOutcome:
    """Ask for a retrain through the policy (`regrow retrain`): admitted, it trains; refused,
    the outcome says why (cooling down, over budget, circuit open, ...)."""
    _setup()
    from regrow.flows.monitoring import retrain_flow

    return retrain_flow(str(config), reason, kind="manual", overrides=overrides, actor=actor)


def status(config: str | Path, *, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The champion, recent drift checks, retrain requests and trainings, as
    `regrow status --json` prints them."""
    _setup(flows=False)
    from regrow.app.report import status as collect
    from regrow.configs.schema import load_config

    return collect(load_config(config, overrides))
