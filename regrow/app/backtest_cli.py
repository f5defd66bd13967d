"""``regrow backtest``: replay a model's history under its config and print what the policy
would have done, window by window (see `tasks.monitoring.backtest`)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from regrow.configs.schema import LoadedConfig
from regrow.tasks.data import ingest as ing
from regrow.tasks.monitoring import backtest as bt

WIDTHS = (3, 19, 6, 5, 22, 28, 22, 13, 12, 9, 9)


def _line(cells: list[str]) -> str:
    return "  ".join(c[:w].ljust(w) for c, w in zip(cells, WIDTHS, strict=True)).rstrip()


def history(loaded: LoadedConfig, path: str | None, query: str | None) -> tuple[Any, str]:
    """(the history frame, where it came from): a file, a query on the config's SQL source,
    or the config's own source."""
    if path is None and query is None:
        result = ing.ingest(loaded)
        return result.frame, result.source
    frame = ing.read_rows(loaded, path, query, option="--history")
    return frame, path or "query on data.source"


def run_backtest(loaded: LoadedConfig, opts: bt.Options, *, path: str | None = None,
                 query: str | None = None, out: str | None = None, as_json: bool = False,
                 reports_dir: Path) -> int:
    """Run, print and write the backtest; 0 when it ran, 2 for options or data that do not
    fit (one sentence on stderr)."""
    err = sys.stderr
    try:
        bt.check_options(opts)
        t0 = time.perf_counter()
        if not as_json:
            print(f"reading the history of {loaded.config.registry.model_name} ...", flush=True)
        frame, source = history(loaded, path, query)
        if not as_json:
            print(f"{len(frame)} rows from {source} ({time.perf_counter() - t0:.1f} s); training "
                  "the first champion on the rows before the start ...", flush=True)

        def progress(w: bt.WindowResult) -> None:
            if as_json:
                return
            head, cells = bt.table_rows([w], loaded.config.gate.primary_metric)
            if w.index == 1:  # the header once, when the first window is done
                print(_line(head), flush=True)
            print(_line(cells), flush=True)

        report = bt.run(loaded, frame, opts, source=source, progress=progress)
    except (bt.BacktestError, ing.IngestError) as e:
        print(f"error: {e}", file=err)
        return 2
    report = bt.write(report, Path(out) if out else reports_dir / report.model)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return 0
    f = report.first_champion
    print(f"\nfirst champion v1: {f['best']} on {f['rows']} rows up to {f['until']}, holdout "
          f"{report.totals.metric} {f['holdout'].get(report.totals.metric, float('nan')):.4f}")
    for line in bt.summary_lines(report):
        print(line)
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {report.html_path}\n        {report.json_path}\n({report.seconds} s)")
    return 0

