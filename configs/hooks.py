"""What the config loader asks of the layers above it, filled in by the package that wires
them (`regrow/__init__.py`): configs never import the code that reads data.

`task_inference(data, folder)` gets a config's ``data`` mapping (with its source and target,
without a task) and the config's folder (relative paths resolve against it), and returns the
task (binary, multiclass or regression) and one sentence saying why; it raises `ValueError`
with one sentence when the target cannot be read or holds no task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

TaskInference = Callable[[Mapping[str, Any], Path], tuple[str, str]]

task_inference: TaskInference | None = None
