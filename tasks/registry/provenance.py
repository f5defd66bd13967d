"""What a training run records about itself: code version, config, trigger."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


def package_version() -> str:
    """The installed regrow version."""
    try:
        return metadata.version("regrow")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the source tree regrow runs from, when it is a git checkout."""
    where = where or Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class Trigger:
    """Why a training run started: kind (manual, schedule, drift, webhook, ui, demo, or
    reproduce), reason, and a reference to what asked (request id, drift check id, delivery
    id, or for a reproduction the run it reproduces)."""

    kind: str = "manual"
    reason: str = ""
    ref: str | None = None
    actor: str = "cli"

    def tags(self) -> dict[str, str]:
        """MLflow run tags for the trigger."""
        t = {"regrow.trigger": self.kind, "regrow.trigger_reason": self.reason or "-",
             "regrow.actor": self.actor}
        if self.ref:
            t["regrow.trigger_ref"] = self.ref
            if self.kind == "reproduce":  # the ref is the reproduced run's id
                t["regrow.reproduces"] = self.ref
        return t
