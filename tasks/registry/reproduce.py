"""Reproducing a training run: what it recorded, whether the data is still the same, and
whether the new holdout metric matches the old one.

Plain logic for `regrow reproduce`; MLflow is reached only through `tasks.registry.mlflow_registry`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regrow.configs.schema import (
    MASK,
    OVERRIDES_MARKER,
    ConfigError,
    LoadedConfig,
    config_from_text,
    overrides_block,
    unmask_like,
)
from regrow.tasks.registry.mlflow_registry import Registry

# Same code, same data, same seeds on the same machine give the same numbers; the margin only
# absorbs float noise across BLAS builds. Pass a larger `--tolerance` across machines.
DEFAULT_TOLERANCE = 1e-9
REPRODUCED, DIFFERS = "reproduced", "differs"


class ReproduceError(ValueError):
    """A run cannot be reproduced as asked: unknown run or version, or its record is incomplete."""


class DataChanged(ReproduceError):
    """The data read now is not the data the run trained on."""

    def __init__(self, run_id: str, recorded: str, current: str):
        self.recorded, self.current = recorded, current
        super().__init__(f"the data changed since run {run_id}: recorded fingerprint {recorded}, "
                         f"now {current}; refusing to reproduce (pass --allow-data-change to "
                         "train on the data as it is now and see the difference)")


@dataclass(frozen=True)
class RecordedRun:
    """What a training run recorded about how it was made.

    Attributes:
        run_id / experiment_id / status: the MLflow run.
        config_path: the config file it was read from (relative data paths resolve against
            its folder).
        config_text: the file's text as recorded, without the overrides.
        overrides: the dotted-key overrides it ran with.
        config_sha256: the recorded hash of text + overrides (None for runs without it).
        seed: the recorded `candidates.seed`.
        fingerprint: the recorded data fingerprint (None when the run never read its data).
        metrics: the run's metrics (`holdout_<metric>` among them once it evaluated).
        trigger: the recorded trigger kind.
    """

    run_id: str
    experiment_id: str
    status: str
    config_path: str
    config_text: str
    overrides: dict[str, Any]
    config_sha256: str | None
    seed: str | None
    fingerprint: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    trigger: str | None = None


@dataclass(frozen=True)
class Comparison:
    """The reproduced primary metric against the original, on each run's holdout."""

    metric: str
    original: float | None
    reproduced: float | None
    difference: float | None  # reproduced - original
    tolerance: float
    verdict: str  # reproduced | differs

    @property
    def ok(self) -> bool:
        """True when the reproduction matched within the tolerance."""
        return self.verdict == REPRODUCED


def split_recorded_text(text: str, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """Separate a recorded config text into the file's text and the overrides appended to it.

    Args:
        text: the run's `config/config.yaml` (`LoadedConfig.text`).
        overrides: the run's `config/overrides.json`, when it has one.

    Returns:
        (the file's text, the overrides). The appended block is only taken as overrides when
        it is exactly what `configs.schema.overrides_block` writes, so a config that merely
        contains the marker comment is left whole (a top-level `overrides` key is invalid
        anyway). The values come from the YAML block, which keeps their YAML types (a date
        stays a date), with `overrides.json` deciding which keys there are.

    Raises:
        ReproduceError: `overrides.json` and the appended block disagree.
    """
    at = text.rfind(OVERRIDES_MARKER)
    appended: dict[str, Any] = {}
    base = text
    if at >= 0:
        try:
            tail = yaml.safe_load(text[at + len(OVERRIDES_MARKER):])
        except yaml.YAMLError:
            tail = None
        if (isinstance(tail, dict) and set(tail) == {"overrides"}
                and isinstance(tail["overrides"], dict) and tail["overrides"]
                and text.endswith(overrides_block(tail["overrides"]))):
            appended, base = dict(tail["overrides"]), text[:at]
    if overrides is not None and set(overrides) != set(appended):
        raise ReproduceError(f"the recorded overrides disagree: config/overrides.json has "
                             f"{sorted(overrides)}, config/config.yaml {sorted(appended)}")
    return base, appended


def run_for_version(registry: Registry, model_name: str, version: str) -> str:
    """The run that produced a registered version.

    Raises:
        ReproduceError: the model has no such version, or the version has no run.
    """
    found = registry.find_version(model_name, str(version))
    run_id = found.run_id if found is not None else None
    if not run_id:
        raise ReproduceError(f"model {model_name!r} has no version {version!r} in the registry "
                             f"at {registry.settings.tracking_uri}")
    return run_id


def recover(registry: Registry, run_id: str) -> RecordedRun:
    """Read what a run recorded: config text, overrides, seed, data fingerprint, metrics.

    Raises:
        ReproduceError: no such run, or the run is not a regrow training run with a
            recorded config.
    """
    info = registry.find_run(run_id)
    if info is None:
        raise ReproduceError(f"no MLflow run {run_id!r} in {registry.settings.tracking_uri}")
    tags = info["tags"]
    if tags.get("regrow.reproduces"):
        raise ReproduceError(f"run {run_id} is itself a reproduction (of run "
                             f"{tags['regrow.reproduces']}); reproduce that one")
    text = registry.read_text_artifact(run_id, "config/config.yaml")
    if text is None or "regrow.config_path" not in tags:
        raise ReproduceError(f"run {run_id} recorded no config (config/config.yaml and tag "
                             "regrow.config_path); it is not a regrow training run")
    listed = registry.read_json_artifact(run_id, "config/overrides.json")  # None: older run
    base, overrides = split_recorded_text(text, listed if isinstance(listed, dict) else None)
    return RecordedRun(run_id=run_id, experiment_id=info["experiment_id"], status=info["status"],
                       config_path=tags["regrow.config_path"], config_text=base,
                       overrides=overrides, config_sha256=tags.get("regrow.config_sha256"),
                       seed=tags.get("regrow.seed"), fingerprint=tags.get("regrow.data.fingerprint"),
                       metrics=dict(info["metrics"]), trigger=tags.get("regrow.trigger"))


def recorded_config(run: RecordedRun) -> tuple[LoadedConfig, list[str]]:
    """The run's config, rebuilt from its recorded text and overrides, with notes on anything
    that differs from the record (hash, seed) or from the file as it is now.

    Raises:
        ReproduceError: the recorded text no longer validates (e.g. the schema changed).
    """
    current = Path(run.config_path)
    text, notes = run.config_text, []
    if MASK in text:  # URL credentials are masked when recorded: put back those the file holds
        text = unmask_like(text, current.read_text(encoding="utf-8") if current.is_file() else "")
        if re.search(r"://[^\s@]*:" + re.escape(MASK) + "@", text):
            notes.append(f"the recorded config has URL credentials masked and {current} no "
                         "longer holds them; keep them in ${VAR} references to reproduce")
    try:
        loaded = config_from_text(text, run.config_path, run.overrides)
    except ConfigError as err:
        raise ReproduceError(f"the config recorded with run {run.run_id} does not validate "
                             f"now: {err}") from None
    if run.config_sha256 and loaded.sha256 != run.config_sha256:
        notes.append(f"the rebuilt config hashes to {loaded.sha256}, the run recorded "
                     f"{run.config_sha256}")
    if run.seed is not None and str(loaded.config.candidates.seed) != run.seed:
        notes.append(f"seed {loaded.config.candidates.seed} differs from the recorded {run.seed}")
    if current.is_file() and current.read_text(encoding="utf-8") != text:
        notes.append(f"{current} changed since the run; the recorded text was used")
    return loaded, notes


@dataclass(frozen=True)
class Plan:
    """Everything needed to train a recorded run again, checked before anything trains."""

    run: RecordedRun
    loaded: LoadedConfig
    metric: str
    original: float
    notes: list[str]


def plan(registry: Registry, run_id: str) -> Plan:
    """Recover a run, rebuild its config and read its holdout value of the primary metric.

    Raises:
        ReproduceError: see `recover`, `recorded_config` and `original_metric`.
    """
    run = recover(registry, run_id)
    loaded, notes = recorded_config(run)
    metric = loaded.config.gate.primary_metric
    return Plan(run, loaded, metric, original_metric(run, metric), notes)


def original_metric(run: RecordedRun, metric: str) -> float:
    """The run's holdout value of the primary metric.

    Raises:
        ReproduceError: the run never evaluated a candidate (it failed before).
    """
    value = run.metrics.get(f"holdout_{metric}")
    if value is None:
        raise ReproduceError(f"run {run.run_id} has no holdout_{metric} metric (status "
                             f"{run.status}); only runs that evaluated a candidate can be reproduced")
    return float(value)


def check_data(run: RecordedRun, current: str, allow_change: bool) -> bool:
    """Whether the data changed since the run.

    Raises:
        DataChanged: it did, and changes are not allowed.
        ReproduceError: the run recorded no fingerprint.
    """
    if not run.fingerprint:
        raise ReproduceError(f"run {run.run_id} recorded no data fingerprint "
                             "(tag regrow.data.fingerprint)")
    changed = current != run.fingerprint
    if changed and not allow_change:
        raise DataChanged(run.run_id, run.fingerprint, current)
    return changed


def check_tolerance(tolerance: float) -> float:
    """The tolerance, if it is a finite number >= 0.

    Raises:
        ReproduceError: it is not.
    """
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ReproduceError(f"--tolerance must be a finite number >= 0, not {tolerance}")
    return tolerance


def compare(metric: str, original: float | None, reproduced: float | None,
            tolerance: float = DEFAULT_TOLERANCE) -> Comparison:
    """Reproduced when both values exist and differ by at most `tolerance` (absolute).

    Raises:
        ReproduceError: a negative or non-finite tolerance.
    """
    check_tolerance(tolerance)
    if original is None or math.isnan(original) or reproduced is None or math.isnan(reproduced):
        return Comparison(metric, original, reproduced, None, tolerance, DIFFERS)
    diff = float(reproduced) - float(original)
    return Comparison(metric, original, reproduced, diff, tolerance,
                      REPRODUCED if abs(diff) <= tolerance else DIFFERS)
