"""Which config a served deployment runs: bound when it is served, checked when it runs.

No parameter of a served deployment names a file (the Prefect API has no login of its own:
anyone who reaches it can create flow runs with any parameters). Instead each deployment is
bound to its model's config when it is served:

- ``regrow serve`` sets ``REGROW_SERVED_CONFIGS`` in its own environment before it starts the
  Prefect runner, and every run process inherits it (the runner starts a run as a child of
  its own environment -- ``prefect.flow_engine.run_flow_in_subprocess``, or the warm fork
  server of `regrow.runtime.warm_runs`, which hands the child the runner's environment too;
  a flow run's ``job_variables`` never reach a runner's run);
- work-pool deployments (``infra/prefect.yaml``) set the same variable through their
  ``job_variables.env``, with the hash computed by a build step when ``prefect deploy`` runs.

The value is JSON: deployment name -> ``{"path": ..., "sha256": ..., "model": ...}`` (``model``
is optional; relative paths resolve against the run's working directory). A run finds its
entry by its deployment's name (`prefect.runtime.deployment`), reads the file once and checks
its sha256 against the bound one: a changed file is refused with a sentence that says to serve
(or deploy) again.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from regrow.configs.schema import LoadedConfig, load_config

ENV = "REGROW_SERVED_CONFIGS"


class NotBound(RuntimeError):
    """A served flow run that has no config bound to its deployment."""


class ConfigChanged(RuntimeError):
    """The bound config file is not the one the deployment was served with."""


class Bound(NamedTuple):
    """The config a deployment is bound to."""

    deployment: str
    path: str
    sha256: str
    model: str | None = None


def encode(bindings: dict[str, LoadedConfig]) -> str:
    """The variable's value for deployment name -> the config it runs."""
    return json.dumps({name: {"path": str(loaded.path), "sha256": loaded.sha256,
                              "model": loaded.config.registry.model_name}
                       for name, loaded in bindings.items()}, sort_keys=True)


def bind(bindings: dict[str, LoadedConfig]) -> None:
    """Bind deployments to their configs for the run processes this process starts from now
    on (they inherit its environment)."""
    os.environ[ENV] = encode(bindings)


def _table() -> dict[str, Any]:
    raw = os.environ.get(ENV, "")
    if not raw.strip():
        return {}
    try:
        table = json.loads(raw)
    except ValueError as err:
        raise NotBound(f"{ENV} is not valid JSON ({err}); serve (or deploy) the deployments "
                       "again") from None
    if not isinstance(table, dict):
        raise NotBound(f"{ENV} must be a JSON object of deployment name -> "
                       '{"path", "sha256"}; serve (or deploy) the deployments again')
    return table


def deployment_name() -> str | None:
    """The name of the current flow run's deployment (None outside a deployment run)."""
    from prefect.runtime import deployment

    return deployment.name


def bound(name: str | None = None) -> Bound:
    """The binding of deployment `name` (default: the current run's deployment).

    Raises:
        NotBound: not a deployment run, or its deployment has no binding.
    """
    name = name if name is not None else deployment_name()
    if not name:
        raise NotBound("this flow runs only as a deployment that `regrow serve` (or `prefect "
                       "deploy` with infra/prefect.yaml) bound to a config; to run a config by "
                       "its path, use the command line (regrow watch / score / retrain)")
    entry = _table().get(name)
    if not isinstance(entry, dict) or not entry.get("path") or not entry.get("sha256"):
        raise NotBound(f"deployment {name!r} has no config bound to it in this process "
                       f"({ENV}); start its runs with `regrow serve CONFIG`, or give its "
                       "work-pool job the variable (see infra/prefect.yaml)")
    return Bound(name, str(entry["path"]), str(entry["sha256"]), entry.get("model") or None)


def load_bound(binding: Bound | None = None) -> LoadedConfig:
    """Read the bound config (once) and check it is the file the deployment was bound to.

    Raises:
        NotBound: see `bound`.
        ConfigChanged: the file's sha256 differs from the bound one.
        configs.schema.ConfigError: the file is gone or no longer a valid config.
    """
    binding = binding or bound()
    loaded = load_config(binding.path)
    if loaded.sha256 != binding.sha256:
        raise ConfigChanged(
            f"{loaded.path} changed since deployment {binding.deployment!r} was served (sha256 "
            f"{binding.sha256[:12]}... then, {loaded.sha256[:12]}... now), so this run does not "
            "use it: restart `regrow serve` (or deploy again) to serve the config as it is now")
    return loaded


def bound_model() -> str:
    """The model the current run's deployment is bound to ("unknown" when it cannot be told;
    for run names, which never fail a run)."""
    try:
        binding = bound()
        return binding.model or load_bound(binding).config.registry.model_name
    except Exception:  # noqa: BLE001 - a name never fails a run; the body reports the problem
        return "unknown"
