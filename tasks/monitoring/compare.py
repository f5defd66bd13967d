"""Several policies replayed on one history (`regrow backtest --compare`), side by side.

Each variant is the config with a few keys set (as ``--set`` sets them): the cross product of
``--compare KEY=V1,V2`` grids, and named variants from a YAML file. Each is replayed by
`tasks.monitoring.backtest.run` on the same history with the same options; the config as
given is always one of them. A variant's figures:

- the primary metric over the replayed rows (in hindsight, every label; row-weighted);
- windows degraded: windows whose serving model, in hindsight, fell short of its own holdout
  value by more than the practical minimum the config as given checks with (one yardstick
  for every variant, whatever tolerance the variant itself uses);
- trainings and promotions;
- worse promotions: promotions whose new champion did worse, on the next window, than the
  champion it replaced on the same rows.

Variants are ranked by the metric less `training_cost` per training (plus, for a metric where
lower is better), ties broken by fewer trainings and then by the order given.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from regrow.configs.schema import METRICS, ConfigError, LoadedConfig, load_config, parse_override
from regrow.tasks.monitoring import backtest as bt
from regrow.tasks.monitoring.assess import metric_drop

AS_GIVEN = "as configured"


@dataclass(frozen=True)
class Variant:
    """One policy to replay: a name and the keys it sets."""

    name: str
    overrides: dict[str, Any]

    def set_lines(self) -> list[str]:
        """The ``--set KEY=VALUE`` options that make the config this variant."""
        return [f"--set {k}={_text(v)}" for k, v in self.overrides.items()]


@dataclass(frozen=True)
class Outcome:
    """One replayed variant's figures (see the module docstring) and its rank score."""

    name: str
    overrides: dict[str, Any]
    metric: str
    value: float | None
    degraded_windows: int
    windows: int
    trainings: int
    promotions: int
    worse_promotions: int
    judged_promotions: int
    score: float | None
    rank: int = 0
    report: bt.BacktestReport | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Comparison:
    """Every variant's outcome, best first, and how they were ranked."""

    model: str
    metric: str
    higher_is_better: bool
    training_cost: float
    rule: str
    outcomes: list[Outcome]
    options: dict[str, Any]
    history_rows: int
    seconds: float

    @property
    def best(self) -> Outcome:
        """The first-ranked variant."""
        return self.outcomes[0]

    def adopt(self) -> list[str]:
        """The ``--set`` lines that make the config the best variant (empty: it is already)."""
        return [f"--set {k}={_text(v)}" for k, v in self.best.overrides.items()]

    def to_dict(self, reports: bool = False) -> dict[str, Any]:
        """JSON-able form; with `reports`, each variant's full backtest report too."""
        out = asdict(self)
        out["best"] = self.best.name
        out["adopt"] = self.adopt()
        for o in out["outcomes"]:
            if not reports:
                o.pop("report")
        return bt._clean(out)


def _text(value: Any) -> str:
    """A value as ``--set`` reads it back (YAML)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def grid(items: list[str]) -> list[dict[str, Any]]:
    """``["retrain.on=performance,drift", "k=1,2"]`` -> the cross product of the settings, in
    the order given. Values are read as ``--set`` reads them (YAML).

    Raises:
        bt.BacktestError: an item without ``=`` or without values (naming it).
    """
    axes: list[list[tuple[str, Any]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        parts = [v.strip() for v in values.split(",")]
        if not sep or not key.strip() or not any(parts):
            raise bt.BacktestError(f"--compare {item!r}: expected KEY=VALUE1,VALUE2 (e.g. "
                                   "retrain.on=performance,drift)")
        axes.append([parse_override(f"{key.strip()}={v}") for v in parts if v])
    return [dict(combo) for combo in itertools.product(*axes)] if axes else []


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def named(path: str | Path) -> list[Variant]:
    """Named variants from a YAML file: ``name: {key.path: value, ...}`` (nested mappings are
    read as dotted keys).

    Raises:
        bt.BacktestError: an unreadable file or one that is not such a mapping (naming it).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise bt.BacktestError(f"--variants {p}: cannot be read: "
                               f"{str(err).splitlines()[0]}") from None
    if not isinstance(data, dict) or not data:
        raise bt.BacktestError(f"--variants {p}: expected a mapping of variant names to the "
                               "keys they set, e.g. 'eager: {retrain.cooldown: 1h}'")
    out = []
    for name, keys in data.items():
        if not isinstance(keys, dict):
            raise bt.BacktestError(f"--variants {p}: variant {name!r} must map keys to values "
                                   f"(got {type(keys).__name__})")
        flat: dict[str, Any] = {}
        _flatten("", keys, flat)
        out.append(Variant(str(name), flat))
    return out


def variants(items: list[str], path: str | Path | None = None) -> list[Variant]:
    """The config as given first, then each grid combination, then the named variants; a
    combination that sets nothing new is the config as given and is not repeated."""
    out = [Variant(AS_GIVEN, {})]
    for combo in grid(items):
        name = ", ".join(f"{k}={_text(v)}" for k, v in combo.items())
        out.append(Variant(name, combo))
    if path is not None:
        out.extend(named(path))
    seen, unique = set(), []
    for v in out:
        key = tuple(sorted((k, _text(x)) for k, x in v.overrides.items()))
        if key not in seen:
            seen.add(key)
            unique.append(v)
    return unique


def load_variant(loaded: LoadedConfig, variant: Variant) -> LoadedConfig:
    """The config as given (with its own overrides) and the variant's keys on top.

    Raises:
        bt.BacktestError: the variant makes the config invalid (naming the variant).
    """
    if not variant.overrides:
        return loaded
    try:
        return load_config(loaded.path, {**loaded.overrides, **variant.overrides})
    except ConfigError as err:
        raise bt.BacktestError(f"variant {variant.name!r}: {err}") from None


def _worse(metric: str, new: float, old: float) -> bool:
    return new < old if METRICS[metric][1] else new > old


def degraded(report: bt.BacktestReport, minimum: tuple[float, str] | None) -> int:
    """Windows whose serving model fell short, in hindsight, of its own holdout value by more
    than `minimum` (value, kind); with None, the windows its checks found degraded."""
    n = 0
    for w in report.windows:
        p = w.performance or {}
        if minimum is None or w.realized is None or p.get("reference") is None:
            n += bool(p.get("degraded"))
            continue
        drop = metric_drop(report.totals.metric, p["reference"], w.realized, minimum[1])
        n += drop > minimum[0]
    return n


def yardstick(report: bt.BacktestReport) -> tuple[float, str] | None:
    """The practical minimum drop (value, kind) the config's checks used, read off a judged
    check of its report; None when no check was judged."""
    for w in report.windows:
        p = w.performance or {}
        if p.get("tolerance") is not None and p.get("tolerance_kind"):
            return float(p["tolerance"]), str(p["tolerance_kind"])
    return None


def worse_promotions(report: bt.BacktestReport) -> tuple[int, int]:
    """(promotions whose new champion did worse on the next window than the one it replaced,
    promotions with a next window to judge them on)."""
    worse = judged = 0
    for w in report.windows:
        if w.replaced_version is None or w.realized is None or w.realized_replaced is None:
            continue
        judged += 1
        worse += _worse(report.totals.metric, w.realized, w.realized_replaced)
    return worse, judged


def significantly_worse(report: bt.BacktestReport) -> int:
    """Promotions whose new champion was worse on the next window than the one it replaced
    beyond sampling noise: the high end of the paired interval of its gain below zero."""
    n = 0
    for w in report.windows:
        high = (w.replaced_gain or {}).get("high")
        n += high is not None and high < 0
    return n


def outcome(variant: Variant, report: bt.BacktestReport, minimum: tuple[float, str] | None,
            cost: float) -> Outcome:
    """A replayed variant's figures and score."""
    t = report.totals
    value = t.with_retraining
    sign = 1.0 if METRICS[t.metric][1] else -1.0
    score = None if value is None else value - sign * cost * t.retrains
    worse, judged = worse_promotions(report)
    return Outcome(variant.name, variant.overrides, t.metric, value, degraded(report, minimum),
                   t.windows, t.retrains, t.promotions, worse, judged, score,
                   report=report)


def rank(outcomes: list[Outcome], metric: str) -> list[Outcome]:
    """Best first: by score (higher or lower by the metric; a variant without one last), then
    fewer trainings, then the order given."""
    higher = METRICS[metric][1]

    def key(pair: tuple[int, Outcome]) -> tuple[float, int, int]:
        i, o = pair
        s = o.score if o.score is not None and not math.isnan(o.score) else None
        return (math.inf if s is None else -s if higher else s, o.trainings, i)

    ordered = [o for _, o in sorted(enumerate(outcomes), key=key)]
    return [Outcome(**{**o.__dict__, "rank": i + 1}) for i, o in enumerate(ordered)]


def rule_text(metric: str, cost: float) -> str:
    """The ranking rule as a sentence."""
    higher = METRICS[metric][1]
    return (f"{metric} over the replayed rows {'less' if higher else 'plus'} {cost:g} per "
            f"training, {'higher' if higher else 'lower'} is better; ties: fewer trainings")


def compare(loaded: LoadedConfig, frame: pd.DataFrame, opts: bt.Options, chosen: list[Variant],
            *, training_cost: float = 0.0, source: str = "",
            progress: Callable[[int, Variant, Outcome], None] | None = None) -> Comparison:
    """Replay every variant on `frame` with `opts` and rank them.

    Raises:
        bt.BacktestError: a variant that makes the config invalid, options that do not fit.
    """
    import time

    t0 = time.perf_counter()
    if training_cost < 0:
        raise bt.BacktestError(f"--training-cost: {training_cost} is negative")
    configs = [load_variant(loaded, v) for v in chosen]  # every variant valid before any runs
    outcomes: list[Outcome] = []
    minimum: tuple[float, str] | None = None
    replayed: list[tuple[dict[str, Any], bt.BacktestReport]] = []
    for i, (variant, cfg) in enumerate(zip(chosen, configs, strict=True)):
        dump = cfg.config.model_dump()
        # a variant whose settings the config has already is the same replay: not run twice
        report = next((r for d, r in replayed if d == dump), None) \
            or bt.run(cfg, frame, opts, source=source)
        replayed.append((dump, report))
        if i == 0:
            minimum = yardstick(report)
        outcomes.append(outcome(variant, report, minimum, training_cost))
        if progress is not None:
            progress(i + 1, variant, outcomes[-1])
    metric = outcomes[0].metric
    return Comparison(loaded.config.registry.model_name, metric, METRICS[metric][1],
                      training_cost, rule_text(metric, training_cost), rank(outcomes, metric),
                      asdict(opts), len(frame), round(time.perf_counter() - t0, 2))


def table_rows(comparison: Comparison) -> list[list[str]]:
    """The comparison table: a header, then one row per variant, best first."""
    m = comparison.metric
    out = [["rank", "variant", m, "degraded windows", "trainings", "promotions",
            "worse promotions", "score"]]
    for o in comparison.outcomes:
        out.append([str(o.rank), o.name, bt._fmt(o.value), f"{o.degraded_windows}/{o.windows}",
                    str(o.trainings), str(o.promotions),
                    f"{o.worse_promotions}/{o.judged_promotions}", bt._fmt(o.score)])
    return out
