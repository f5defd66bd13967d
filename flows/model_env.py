"""A monitoring run's environment: the config, the stores and the champion, resolved once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from regrow.configs.schema import LoadedConfig, load_config
from regrow.tasks.registry import governance as gov
from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry, RegistryError
from regrow.tasks.store import database as st
from regrow.tasks.store.settings import Settings


class NoChampion(RuntimeError):
    """The model has no champion yet: train first."""


@dataclass
class Env:
    """Config, stores and the champion, resolved once per flow run."""

    loaded: LoadedConfig
    settings: Settings
    registry: Registry
    store: st.Store

    @property
    def model(self) -> str:
        """The registered model name."""
        return self.loaded.config.registry.model_name

    @classmethod
    def open(cls, config_path: str, overrides: dict[str, Any] | None = None) -> Env:
        """Load the config and connect the stores."""
        return cls.of(load_config(config_path, overrides))

    @classmethod
    def of(cls, loaded: LoadedConfig) -> Env:
        """Connect the stores for a config loaded (and checked) already."""
        settings = Settings.from_env()
        return cls(loaded, settings, Registry(settings), st.Store(settings.database_url))

    def champion(self) -> tuple[str, str]:
        """(version, run id) of the champion.

        Raises:
            NoChampion: nothing has been promoted yet.
            RegistryError: the champion was registered without a run.
        """
        for found in gov.outside_moves(self.registry, self.store, self.model,
                                       "a drift check or scoring"):  # a read: shown, not recorded
            print(f"alias moved outside regrow: {found.describe()}")
        version = self.registry.alias_version(self.model, CHAMPION)
        if version is None:
            raise NoChampion(f"model {self.model!r} has no champion yet; run `regrow train` first")
        run_id = self.registry.version_info(self.model, version).run_id
        if run_id is None:  # registered outside any run: no reference, nothing to load
            raise RegistryError(f"champion v{version} of {self.model!r} has no MLflow run")
        return version, run_id
