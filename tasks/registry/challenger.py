"""A challenger in shadow: a candidate that passed its gate scores live batches beside the
champion, and takes over only when it beats the champion on matured labels.

With ``promotion.mode: shadow`` a passing candidate becomes ``challenger`` (the champion does
not move). Every scoring batch is also scored by the challenger (its predictions go to
``shadow_predictions``, never to callers: the same table and functions as the bake,
`tasks.registry.bake`). Each drift check judges one window: the rows both versions scored
whose labels have arrived, and that no earlier window counted (rows scored after the last
counted window's newest row). A window with at least ``min_labels`` such rows counts: the
challenger's paired gain over the champion on exactly those rows, with a paired bootstrap
interval (`tasks.model.evaluate.paired_gain`, as the gate's improvement rule). After
``windows`` counted windows the gains are pooled (weighted by rows; the windows hold
different rows, so their errors add as independent): the challenger takes over when the low
end of the pooled interval is above ``min_gain``, and is retired otherwise.

`judge_window` and `decide` are pure; the trial's state is kept as tags on the challenger's
registered version (`TAG_*`), so `regrow status`, the card and MLflow show it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from regrow.configs.schema import ShadowTrial
from regrow.tasks.store.fleet import SHADOW_REASON

if TYPE_CHECKING:  # scikit-learn stays out of readers of the tags (the model card)
    from regrow.tasks.model.evaluate import Scored

RUNNING, PROMOTED, RETIRED = "running", "promoted", "retired"
TAG_STATE = "regrow.shadow.state"
TAG_CHAMPION = "regrow.shadow.champion"  # the champion it is judged against
TAG_WINDOWS = "regrow.shadow.windows"    # JSON list of `WindowResult`
TAG_UNTIL = "regrow.shadow.judged_until"  # newest scored_at of the rows counted (ISO)
TAG_DETAIL = "regrow.shadow.detail"
# A challenger move's reason starts with this (fleet status tells a shadow trial from approval)
REASON_PREFIX = SHADOW_REASON


@dataclass(frozen=True)
class WindowResult:
    """The challenger against the champion on one window's matured, doubly scored rows."""

    rows: int
    gain: float | None           # challenger minus champion (positive = challenger better)
    low: float | None
    high: float | None
    counted: bool

    def describe(self, metric: str) -> str:
        """One sentence."""
        if not self.counted or self.gain is None:
            return f"{self.rows} labelled rows scored by both: not judged"
        ci = "" if self.low is None else f" (CI {self.low:+.4f}..{self.high:+.4f})"
        return f"{metric} gain of the challenger {self.gain:+.4f}{ci} on {self.rows} rows"


@dataclass(frozen=True)
class Verdict:
    """Where a trial stands after its windows so far."""

    state: str                   # running, promoted, retired
    windows_done: int
    gain: float | None
    low: float | None
    high: float | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


def judge_window(task: str, metric: str, y: np.ndarray, champion: Scored, challenger: Scored,
                 trial: ShadowTrial, *, seed: int = 0) -> WindowResult:
    """The challenger's paired gain over the champion on the same rows `y` (both scored them);
    not counted with fewer than ``min_labels`` rows or an undefined metric."""
    from regrow.tasks.model.evaluate import paired_gain

    n = len(y)
    if n < trial.min_labels:
        return WindowResult(n, None, None, None, False)
    gain = paired_gain(task, metric, y, challenger, champion, samples=trial.bootstrap_samples,
                       seed=seed, confidence=trial.confidence)
    if gain.value is None or math.isnan(gain.value):
        return WindowResult(n, None, None, None, False)
    return WindowResult(n, gain.value, gain.low, gain.high, True)


def decide(windows: list[WindowResult], trial: ShadowTrial, metric: str) -> Verdict:
    """Pool the counted windows; with ``trial.windows`` of them, promote or retire."""
    from regrow.tasks.model.evaluate import z_value

    counted = [w for w in windows if w.counted and w.gain is not None]
    done = len(counted)
    if not counted:
        return Verdict(RUNNING, 0, None, None, None, f"0 of {trial.windows} window(s) judged")
    total = sum(w.rows for w in counted)
    gain = sum(w.rows * (w.gain or 0.0) for w in counted) / total
    low = high = None
    if all(w.low is not None and w.high is not None for w in counted):
        z = z_value(trial.confidence)
        var = sum((w.rows * ((w.high or 0.0) - (w.low or 0.0)) / (2 * z)) ** 2
                  for w in counted) / total ** 2
        low, high = gain - z * math.sqrt(var), gain + z * math.sqrt(var)
    pooled = (f"pooled {metric} gain {gain:+.4f}"
              + ("" if low is None else f" ({trial.confidence:.0%} CI {low:+.4f}..{high:+.4f})")
              + f" over {done} window(s), {total} rows")
    if done < trial.windows:
        return Verdict(RUNNING, done, gain, low, high,
                       f"{done} of {trial.windows} window(s) judged: {pooled}")
    bound = gain if low is None else low
    if bound > trial.min_gain:
        return Verdict(PROMOTED, done, gain, low, high,
                       f"beat the champion: {pooled}, above {trial.min_gain}")
    return Verdict(RETIRED, done, gain, low, high,
                   f"did not beat the champion: {pooled}, not above {trial.min_gain}")


# ----------------------------------------------------------------------- state, as version tags

def start_tags(champion: str) -> dict[str, str]:
    """The tags of a trial that starts against `champion`."""
    return {TAG_STATE: RUNNING, TAG_CHAMPION: champion, TAG_WINDOWS: "[]", TAG_UNTIL: "",
            TAG_DETAIL: f"scores in shadow beside champion v{champion}"}


def windows_of(tags: dict[str, str]) -> list[WindowResult]:
    """The windows a trial has judged, from its version's tags."""
    return [WindowResult(**w) for w in json.loads(tags.get(TAG_WINDOWS) or "[]")]


def window_tags(windows: list[WindowResult], until: str, verdict: Verdict) -> dict[str, str]:
    """The tags after a counted window."""
    return {TAG_WINDOWS: json.dumps([asdict(w) for w in windows]), TAG_UNTIL: until,
            TAG_STATE: verdict.state, TAG_DETAIL: verdict.reason}
