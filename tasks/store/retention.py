"""Retention of local report files: what `regrow prune` removes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Pruned:
    """Files older than the cutoff under one model's report folder (removed unless a dry run)."""

    folder: str
    older_than_seconds: float
    dry_run: bool
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    kept: int = 0

    @property
    def megabytes(self) -> float:
        """Size of the pruned files in MB (10^6 bytes)."""
        return self.bytes / 1e6

    def describe(self) -> str:
        """One sentence for people."""
        verb = "would remove" if self.dry_run else "removed"
        days = self.older_than_seconds / 86400
        return (f"{verb} {len(self.files)} report file(s), {self.megabytes:.1f} MB, older than "
                f"{days:g} day(s) under {self.folder}; {self.kept} kept")


def prune_reports(folder: Path, older_than_seconds: float, dry_run: bool = False,
                  now: float | None = None) -> Pruned:
    """Remove files under `folder` (recursively) last modified more than `older_than_seconds`
    ago, then the folders they leave empty. A missing folder prunes nothing."""
    cutoff = (time.time() if now is None else now) - older_than_seconds
    old, size, kept = [], 0, 0
    if folder.is_dir():
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
            stat = path.stat()
            if stat.st_mtime < cutoff:
                old.append(path)
                size += stat.st_size
            else:
                kept += 1
    if not dry_run and folder.is_dir():
        for path in old:
            path.unlink(missing_ok=True)
        for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(sub.iterdir()):
                sub.rmdir()
    return Pruned(str(folder), older_than_seconds, dry_run, [str(p) for p in old], size, kept)
