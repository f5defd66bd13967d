"""A version's trusted evaluation set: a seeded, capped sample of its own holdout, with labels,
kept with the version so a later gate can tell a collapse of the world from broken labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from regrow.configs.schema import Config
from regrow.tasks.model import evaluate as ev
from regrow.tasks.model.gate import TrustedCheck
from regrow.tasks.model.train import Target


@dataclass(frozen=True)
class TrustedSet:
    """Labelled holdout rows and what the version and the trivial model scored on them."""

    frame: pd.DataFrame
    meta: dict[str, Any]


def build(config: Config, model: Any, train: pd.DataFrame, holdout: pd.DataFrame,
          target: Target, metric: str, scored: ev.Scored | None = None) -> TrustedSet | None:
    """Sample the holdout (at most `gate.trusted_rows`, seeded by `split.seed`) and score the
    version and the trivial model (fitted on `train`) on the sample. None when the cap is 0.

    `scored`: the version's predictions on the whole holdout, row for row (the sample's are
    taken from them instead of predicting again)."""
    n = min(len(holdout), config.gate.trusted_rows)
    if n == 0:
        return None
    positions = np.arange(len(holdout))
    if n < len(holdout):  # the rows `holdout.sample(n, random_state=seed)` picks, by position
        positions = pd.Series(positions).sample(n=n, random_state=config.split.seed).to_numpy()
    sample = holdout.iloc[positions].reset_index(drop=True)
    own = ev.evaluate(model, sample, target, metric,
                      scored=None if scored is None else scored.take(positions))
    base = ev.evaluate_baseline(train, sample, target, metric)
    return TrustedSet(sample, {"rows": n, "metric": metric, "score": own.value,
                               "baseline": base.value, "seed": config.split.seed})


def score(model: Any, trusted: TrustedSet, target: Target, metric: str) -> tuple[float | None, str]:
    """(the model's score on the trusted set, why it could not be scored)."""
    try:
        return ev.evaluate(model, trusted.frame, target, metric).value, ""
    except Exception as err:  # noqa: BLE001 - e.g. an input the old rows do not have: reported
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def usable(trusted: TrustedSet | None, metric: str, version: str) -> TrustedCheck | None:
    """None when the champion's trusted set can judge this metric; else the check that says
    why not."""
    if trusted is None:
        return TrustedCheck(False, note=f"champion v{version} has no trusted evaluation set "
                            "(registered before trusted sets were kept, or trusted_rows: 0)")
    if trusted.meta.get("metric") != metric:
        return TrustedCheck(False, note=f"champion v{version}'s trusted set was scored with "
                            f"{trusted.meta.get('metric')}, not {metric}")
    return None


def check(trusted: TrustedSet | None, champion: Any, candidate: Any, target: Target,
          metric: str, version: str,
          champion_score: tuple[float | None, str] | None = None) -> TrustedCheck:
    """Score champion and candidate on the champion's trusted set (see `tasks.model.gate`);
    `champion_score`: the champion's `score` on it, when already known."""
    refused = usable(trusted, metric, version)
    if refused is not None:
        return refused
    assert trusted is not None
    champ, champ_err = champion_score or score(champion, trusted, target, metric)
    cand, cand_err = score(candidate, trusted, target, metric)
    notes = [f"{who} could not be scored on it: {e}"
             for who, e in (("champion", champ_err), ("candidate", cand_err)) if e]
    return TrustedCheck(True, int(trusted.meta.get("rows", len(trusted.frame))),
                        trusted.meta.get("score"), trusted.meta.get("baseline"), champ, cand,
                        "; ".join(notes))
