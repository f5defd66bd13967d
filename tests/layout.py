"""The layers contract (`make lint`, and `tests/test_layout.py`).

regrow's code lives in five layers, each allowed to import only from itself and the layers
below it::

    app      regrow (the Python API), regrow.app      the command line, the HTTP receiver
    runtime  regrow.runtime                           control plane, warm processes, lifeline
    flows    regrow.flows                             Prefect flows, their steps, deployments
    tasks    regrow.tasks                             plain, typed units of work, by stage
    configs  regrow.configs                           the config schema and its grammar

Every import counts, at the top of a module or inside a function (a "hidden" import is still
an import), and the module graph has no cycles. File names do not repeat across layers.

``python -m tests.layout`` prints each breach and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each installed package's source lives in the repository (pyproject's package-dir).
SOURCES = {"regrow": ROOT / "regrow", "regrow.configs": ROOT / "configs",
           "regrow.tasks": ROOT / "tasks", "regrow.flows": ROOT / "flows"}
LAYERS = ("app", "runtime", "flows", "tasks", "configs")  # top to bottom
LAYER_OF = {"regrow.app": "app", "regrow.runtime": "runtime", "regrow.flows": "flows",
            "regrow.tasks": "tasks", "regrow.configs": "configs"}
LINKS = {"flows", "tasks", "configs"}  # regrow/<name> links to the top-level folder


def modules() -> dict[str, Path]:
    """Every module of the `regrow` namespace, by dotted name."""
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder)
            if package == "regrow" and rel.parts[0] in LINKS:
                continue  # the same files, reached through the link
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def layer(module: str) -> str:
    """The layer a module belongs to (the API in `regrow/__init__.py` is the app's)."""
    for prefix, name in LAYER_OF.items():
        if module == prefix or module.startswith(prefix + "."):
            return name
    return "app"


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other regrow modules, wherever in the file they are."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" for a in node.names] or [node.module]
                targets = [t if t in mods else node.module for t in targets]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that reach into a higher layer."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    return [f"{src} ({layer(src)}) imports {dst} ({layer(dst)})"
            for src, dsts in sorted(graph.items()) for dst in sorted(dsts)
            if rank[layer(dst)] < rank[layer(src)]]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def repeated_names(mods: dict[str, Path]) -> list[str]:
    """Module file names used in more than one layer."""
    by_name: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        if path.name != "__init__.py":
            by_name[path.stem].add(layer(name))
    return [f"{stem}.py in {', '.join(sorted(layers))}" for stem, layers in sorted(by_name.items())
            if len(layers) > 1]


def breaches() -> list[str]:
    """Every breach of the contract, one sentence each."""
    mods = modules()
    graph = imports(mods)
    return ([f"upward import: {line}" for line in upward(graph)]
            + [f"import cycle: {' -> '.join(group)}" for group in cycles(graph)]
            + [f"file name in several layers: {line}" for line in repeated_names(mods)])


def main() -> int:
    found = breaches()
    for line in found:
        print(line)
    mods = modules()
    print(f"layers contract: {len(mods)} modules, {sum(map(len, imports(mods).values()))} imports,"
          f" {len(found)} breaches")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
