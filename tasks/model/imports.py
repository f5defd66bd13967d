"""Classes named in a config: imported only from scikit-learn or the modules it lists."""

from __future__ import annotations

import importlib
import inspect

from regrow.configs.schema import Config, ConfigError


def allowed_class(config: Config, path: str, where: str, kind: str = "",
                  base: type | None = None, needs: str = "a class") -> type:
    """Import the class at `path`, refusing anything outside the config's allowlist.

    Only scikit-learn and the modules listed under ``modules`` are ever imported, and the
    result must be a class (deriving from `base` when given): a function or any other
    callable is refused before it could run. `kind` names what is imported in the messages
    ("estimator"); `needs` says what the class must be ("a class" by default).

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
        what = f"{kind} " if kind else ""
        raise ConfigError(f"{where}: cannot import {what}{path!r}: {err}") from None
    if not inspect.isclass(cls) or (base is not None and not issubclass(cls, base)):
        raise ConfigError(f"{where}: {path!r} is not {needs}")
    return cls
