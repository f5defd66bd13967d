"""Classes named in a config: imported only from scikit-learn or the modules it lists."""

from __future__ import annotations

import importlib
import inspect

from configs.schema import Config, ConfigError


def allowed_class(config: Config, path: str, where: str) -> type:
    """Import the class at `path`, refusing anything outside the config's allowlist.

    Only scikit-learn and the modules listed under ``modules`` are ever imported, and the
    result must be a class: a function or any other callable is refused before it could run.

    Raises:
        ConfigError: naming `where`: not an allowed module, not importable, or not a class.
    """
    if not config.module_allowed(path):
        raise ConfigError(f"{where}: {path!r} is not from scikit-learn or a module listed in "
                          "'modules'")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{where}: cannot import {path!r}: {err}") from None
    if not inspect.isclass(cls):
        raise ConfigError(f"{where}: {path!r} is not a class")
    return cls
