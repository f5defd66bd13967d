"""Classes named in a config: imported only from scikit-learn or the modules it lists, and found
only in the installed environment or the config's own folder -- never in the working directory.

Under ``python -m`` (and ``python -c``, or a script run from there) ``sys.path`` starts with the
working directory, so a plain `importlib.import_module` of a listed module would run any file
of that name lying where the process happened to start. Here a module is looked up on a search
path of its own: ``sys.path`` without the working directory's entries ('', '.', relative
entries, and the directory itself), followed by the config's folder.

The config's folder comes from `config_folder`, a context set where a run starts with a
`LoadedConfig` (each step of a flow, `flows.steps.step`; the command line's checks before a
training). Without it only the installed environment is searched.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

from regrow.configs.schema import Config, ConfigError

_FOLDER: ContextVar[str | None] = ContextVar("regrow_config_folder", default=None)


@contextlib.contextmanager
def config_folder(folder: str | Path | None) -> Iterator[None]:
    """Within the block, modules a config names may also come from `folder` (the config
    file's own folder); None: only from the installed environment."""
    token = _FOLDER.set(str(Path(folder).resolve()) if folder is not None else None)
    try:
        yield
    finally:
        _FOLDER.reset(token)


def _is_working_directory(entry: str, cwd: str) -> bool:
    if entry in ("", ".") or not os.path.isabs(entry):
        return True
    return os.path.realpath(entry) == cwd


def search_path(folder: str | Path | None = None) -> list[str]:
    """Where a module a config names is looked up: ``sys.path`` without the working
    directory (see the module docstring), then `folder` (default: the `config_folder` set)."""
    cwd = os.path.realpath(os.getcwd())
    found = [p for p in sys.path if isinstance(p, str) and not _is_working_directory(p, cwd)]
    chosen = str(folder) if folder is not None else _FOLDER.get()
    if chosen is not None:
        found.append(str(Path(chosen).resolve()))
    return found


def _find_spec(name: str, path: list[str]) -> ModuleSpec | None:
    """A top-level module's spec as the import system would find it, but with `path` instead
    of ``sys.path`` for every finder."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        if find is None:
            continue
        spec = find(name, path)
        if spec is not None:
            return spec
    return None


def _where(spec: ModuleSpec | None) -> tuple[str, ...]:
    if spec is None:
        return ()
    if spec.origin not in (None, "namespace"):
        return (os.path.realpath(spec.origin),)
    return tuple(os.path.realpath(p) for p in spec.submodule_search_locations or ())


def import_module(module: str, folder: str | Path | None = None) -> ModuleType:
    """Import `module` (dotted) with its top-level package found on `search_path(folder)`.

    A package imported already must be the one that search finds (else it came from
    somewhere else, e.g. the working directory, and is refused). Submodules are found in
    their package, as usual.

    Raises:
        ImportError: not found there, imported already from elsewhere, or failing on import.
    """
    top = module.partition(".")[0]
    path = search_path(folder)
    spec = _find_spec(top, path)
    if spec is None:
        where = "the installed environment" + (f" or {path[-1]}" if (folder or _FOLDER.get())
                                               else "")
        raise ModuleNotFoundError(f"No module named {top!r} in {where} (the working directory "
                                  "is not searched)", name=top)
    present = sys.modules.get(top)
    if present is not None:
        if _where(getattr(present, "__spec__", None)) != _where(spec):
            raise ImportError(f"module {top!r} was imported already from "
                              f"{getattr(present, '__file__', None) or 'elsewhere'}, not from "
                              "the installed environment or the config's folder", name=top)
    elif _where(importlib.util.find_spec(top)) == _where(spec):
        importlib.import_module(top)  # what a plain import finds: let it do the work (and lock)
    else:  # only the config's folder has it, or the working directory would shadow it
        loaded = importlib.util.module_from_spec(spec)
        sys.modules[top] = loaded
        try:
            assert spec.loader is not None
            spec.loader.exec_module(loaded)
        except BaseException:
            sys.modules.pop(top, None)
            raise
    return importlib.import_module(module)


def import_listed(config: Config) -> None:
    """Import the modules `config` lists, as `import_module` finds them, before a model that may
    reference their classes is unpickled: unpickling then finds them imported, and never looks
    in the working directory for them.

    Raises:
        ConfigError: naming the module that cannot be imported from there.
    """
    for name in config.modules:
        try:
            import_module(name)
        except ImportError as err:
            raise ConfigError(f"modules: cannot import {name!r}: {err}") from None


def allowed_class(config: Config, path: str, where: str, kind: str = "",
                  base: type | None = None, needs: str = "a class") -> type:
    """Import the class at `path`, refusing anything outside the config's allowlist.

    Only scikit-learn and the modules listed under ``modules`` are ever imported, found only in
    the installed environment or the config's folder (the `config_folder` context; see the
    module docstring), and the result must be a class (deriving from `base` when given): a
    function or any other callable is refused before it could run. `kind` names what is
    imported in the messages ("estimator"); `needs` says what the class must be ("a class" by
    default).

    Raises:
        ConfigError: naming `where`: not an allowed module, not importable, or not a class.
    """
    if not config.module_allowed(path):
        raise ConfigError(f"{where}: {path!r} is not from scikit-learn or a module listed in "
                          "'modules'")
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(import_module(module), name)
    except (ImportError, AttributeError) as err:
        what = f"{kind} " if kind else ""
        raise ConfigError(f"{where}: cannot import {what}{path!r}: {err}") from None
    if not inspect.isclass(cls) or (base is not None and not issubclass(cls, base)):
        raise ConfigError(f"{where}: {path!r} is not {needs}")
    return cls
