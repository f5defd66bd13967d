"""Configs named by file or by folder (`regrow serve`, `regrow up`): a folder stands for every
``*.yaml`` and ``*.yml`` file directly in it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from regrow.configs.schema import ConfigError, LoadedConfig, load_config

SUFFIXES = (".yaml", ".yml")


def config_paths(paths: Sequence[str | Path]) -> list[Path]:
    """The config files `paths` name: a file as given, a folder as every ``*.yaml``/``*.yml``
    file directly in it (sorted by name; hidden files left out); each file once.

    Raises:
        ConfigError: a path that does not exist, or a folder without any config file.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES
                           and f.is_file() and not f.name.startswith("."))
            if not found:
                raise ConfigError(f"{p}: no config in this folder (a folder stands for its "
                                  f"{' and '.join('*' + s for s in SUFFIXES)} files)")
        elif p.exists():
            found = [p]
        else:
            raise ConfigError(f"{p}: no such config file or folder")
        for f in found:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                out.append(f)
    return out


def load_configs(paths: Sequence[str | Path]) -> list[LoadedConfig]:
    """Every config `paths` name (`config_paths`), validated; all problems at once.

    Raises:
        ConfigError: one line per file that cannot be used, each naming the file and the key.
    """
    loaded, problems = [], []
    for path in config_paths(paths):
        try:
            loaded.append(load_config(path))
        except ConfigError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n".join(problems))
    return loaded
