"""`regrow init` (a config from a table in seconds) and `regrow config show` (a config with
every default and inferred value written out)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

EXIT_BAD_INPUT = 2


def _model_name(data: str, table: str | None) -> str:
    stem = table or Path(data.split("?")[0]).stem or "model"
    return re.sub(r"[^A-Za-z0-9_.\-]+", "-", stem).strip("-._") or "model"


def _written_path(data: str, out: Path) -> str:
    """The file's path as the config writes it: relative to the config's folder when it lies
    under it, else absolute (a relative path in a config resolves against its folder)."""
    p = Path(data).expanduser().resolve()
    try:
        return str(p.relative_to(out.resolve().parent))
    except ValueError:
        return str(p)


def run_init(args: argparse.Namespace) -> int:
    """Profile a table and write (or print) a config `regrow train` accepts as it is."""
    from regrow.configs.schema import ConfigError, FileSource
    from regrow.tasks.data.init_config import check_rendered, render
    from regrow.tasks.data.profile import ProfileError, profile, source_from

    name = args.name or _model_name(args.data, args.table)
    out = Path(args.out or f"{name}.yaml")
    if out.exists() and not (args.force or args.print):
        print(f"error: {out} exists; choose another --out, or --force to replace it",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    started = time.perf_counter()
    try:
        source = source_from(args.data, args.table, args.query)
        if isinstance(source, FileSource):
            source = FileSource(path=_written_path(args.data, out))
        found = profile(source, args.target, config_path=out.resolve(), id_column=args.id,
                        time_column=args.time, max_rows=args.sample_rows)
        command = "regrow init " + " ".join(_shown_args(args))
        text = render(found, source, name, command)
        check_rendered(text, str(out.resolve()))
    except (ProfileError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    seconds = time.perf_counter() - started
    if args.print:
        print(text, end="")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
    feats = {r: found.role(r) for r in ("numeric", "categorical", "datetime")}
    dropped = {c.name: c.why for c in found.columns if c.role == "drop"}
    summary = {"config": None if args.print else str(out), "model": name, "task": found.task,
               "task_why": found.task_why, "id_column": found.id_column,
               "time_column": found.time_column, "rows_profiled": found.rows,
               "features": feats, "dropped": dropped, "warnings": found.warnings,
               "seconds": round(seconds, 2)}
    stream = sys.stderr if args.print else sys.stdout
    if args.json and not args.print:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{'printed' if args.print else 'wrote ' + str(out)}: model {name!r}, task "
          f"{found.task} ({found.task_why}); id {found.id_column or '-'}, time "
          f"{found.time_column or '-'}; {sum(map(len, feats.values()))} features from "
          f"{found.rows:,} rows profiled in {seconds:.1f} s", file=stream)
    for col, why in dropped.items():
        print(f"  dropped {col}: {why}", file=stream)
    for w in found.warnings:
        print(f"  warning: {w}", file=stream)
    if not args.print:
        print(f"next: regrow train {out}", file=stream)
    return 0


def _shown_args(args: argparse.Namespace) -> list[str]:
    from regrow.tasks.data.ingest import mask_url

    shown = [mask_url(args.data), "--target", args.target]
    for flag in ("table", "name", "id", "time", "out"):
        if getattr(args, flag):
            shown += [f"--{flag}", str(getattr(args, flag))]
    return shown


def run_config_show(args: argparse.Namespace) -> int:
    """Print a config as it is used: every default written out, inferred keys said why."""
    import yaml

    from regrow.configs.schema import ConfigError, load_config, mask_credentials

    overrides = dict(_parse(o) for o in args.set or [])
    try:
        loaded = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plain = loaded.config.model_dump(mode="json")
    if args.json:
        print(json.dumps({"config": plain, "inferred": loaded.inferred}, indent=2))
        return 0
    head = [f"# {loaded.path} as regrow uses it: every default written out."]
    head += [f"# {key} inferred from the data: {why}" for key, why in loaded.inferred.items()]
    text = yaml.safe_dump(plain, sort_keys=False, width=100, allow_unicode=True)
    print("\n".join(head) + os.linesep + mask_credentials(text), end="")
    return 0


def _parse(text: str) -> tuple[str, object]:
    from regrow.configs.schema import parse_override

    return parse_override(text)
