"""The ``regrow reproduce`` command: find and check the recorded run cheaply (no Prefect,
no scikit-learn imported), then run the reproduce flow and print what it found."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import TYPE_CHECKING

from regrow.tasks.registry import reproduce as rp
from regrow.tasks.registry.mlflow_registry import Registry
from regrow.tasks.store.settings import Settings

if TYPE_CHECKING:
    from regrow.flows.reproduction import ReproduceOutcome

EXIT_DIFFERS, EXIT_BAD_INPUT = 1, 2


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.12g}"


def render(o: ReproduceOutcome) -> str:
    """The human summary of a reproduction."""
    c = o.comparison
    data = (f"CHANGED (allowed): recorded {o.fingerprint_recorded}, now {o.fingerprint_now}"
            if o.data_changed else f"unchanged, fingerprint {o.fingerprint_now}")
    lines = [f"model {o.model_name}: reproducing run {o.reproduces} as run {o.run_id}",
             f"config: {o.config_path} (as recorded), overrides {o.overrides or 'none'}, "
             f"seed {o.seed}",
             f"data: {data}",
             f"holdout {c.metric}: original {_num(c.original)}, reproduced {_num(c.reproduced)}, "
             f"difference {_num(c.difference)} (tolerance {c.tolerance:g})",
             "REPRODUCED" if c.ok else "NOT REPRODUCED: the difference exceeds the tolerance",
             "no version registered, no alias moved",
             f"MLflow: {o.tracking_uri} experiment {o.experiment_id}, run {o.run_id} "
             f"(tag regrow.reproduces={o.reproduces})"]
    lines += [f"note: {n}" for n in o.notes]
    return "\n".join(lines)


def resolve_run(target: str, version: str | None) -> str:
    """The run to reproduce: `target` itself, or the run of version `version` of the model
    configured in the file `target`.

    Raises:
        ReproduceError: no such version, or a config file given without a version.
        ConfigError: the config file is invalid.
    """
    from pathlib import Path

    from regrow.configs.schema import load_config

    if version is None:
        if Path(target).is_file():
            raise rp.ReproduceError(f"{target} is a file: to reproduce a version of its model, "
                                    "add --version N")
        return target
    name = load_config(target).config.registry.model_name
    return rp.run_for_version(Registry(Settings.from_env()), name, version)


def run_reproduce(target: str, version: str | None, *, allow_data_change: bool,
                  tolerance: float, as_json: bool) -> int:
    """Resolve and check the run, reproduce it, print the result. Returns the exit code:
    0 reproduced, 1 not reproduced, 2 bad input (unknown run or version, incomplete record,
    changed data without `allow_data_change`, invalid data)."""
    from regrow.configs.schema import ConfigError

    try:
        rp.check_tolerance(tolerance)
        run_id = resolve_run(target, version)
        rp.plan(Registry(Settings.from_env()), run_id)  # fail fast, before orchestration starts
    except (rp.ReproduceError, ConfigError) as err:
        return _failed(err, as_json)
    from regrow.app.report import known_errors
    from regrow.flows.reproduction import reproduce_flow
    from regrow.runtime.early import flow_settings

    errors: tuple[type[Exception], ...] = (rp.ReproduceError, *known_errors())
    try:
        with flow_settings("reproduce", checked=True):
            outcome = reproduce_flow(run_id, allow_data_change=allow_data_change,
                                     tolerance=tolerance)
    except errors as err:
        return _failed(err, as_json)
    if as_json:
        print(json.dumps({**asdict(outcome), "reproduced": outcome.reproduced}, indent=2,
                         default=str))
    else:
        print(render(outcome))
    return 0 if outcome.reproduced else EXIT_DIFFERS


def _failed(err: Exception, as_json: bool) -> int:
    print(f"error: {err}", file=sys.stderr)
    if as_json:
        body = {"status": "failed", "error": str(err), "kind": type(err).__name__}
        if isinstance(err, rp.DataChanged):
            body.update(fingerprint_recorded=err.recorded, fingerprint_now=err.current)
        print(json.dumps(body))
    return EXIT_BAD_INPUT
