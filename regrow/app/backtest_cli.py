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

WIDTHS = (3, 19, 6, 5, 22, 28, 22, 13, 18, 9, 9)


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



def run_compare(loaded: LoadedConfig, opts: bt.Options, grid: list[str], variants_file: str | None,
                *, training_cost: float = 0.0, path: str | None = None, query: str | None = None,
                out: str | None = None, as_json: bool = False, reports_dir: Path) -> int:
    """Replay several policies on one history and print them ranked (`tasks.monitoring.compare`);
    0 when it ran, 2 for options, variants or data that do not fit (one sentence on stderr)."""
    from regrow.tasks.monitoring import compare as cmp

    try:
        bt.check_options(opts)
        chosen = cmp.variants(grid, variants_file)
        for v in chosen:  # every variant valid before the history is read
            cmp.load_variant(loaded, v)
        if len(chosen) < 2:
            raise bt.BacktestError("--compare: the variants set nothing the config does not "
                                   "already; give other values")
        frame, source = history(loaded, path, query)
        if not as_json:
            print(f"{len(frame)} rows from {source}; replaying {len(chosen)} policies",
                  flush=True)

        def progress(i: int, v: Any, o: Any) -> None:
            if not as_json:
                print(f"  {i}/{len(chosen)} {v.name}: {o.metric} {bt._fmt(o.value)}, "
                      f"{o.trainings} trainings, {o.promotions} promotions", flush=True)

        result = cmp.compare(loaded, frame, opts, chosen, training_cost=training_cost,
                             source=source, progress=progress)
    except (bt.BacktestError, ing.IngestError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    folder = Path(out) if out else reports_dir / result.model
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    jpath = folder / f"backtest-compare-{stamp}.json"
    data = result.to_dict(reports=True)
    jpath.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
    if as_json:
        brief = result.to_dict()
        brief["json_path"] = str(jpath)
        print(json.dumps(brief, indent=2, default=str))
        return 0
    rows = cmp.table_rows(result)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    print(f"\nranked by {result.rule}")
    print("degraded windows: the serving model, in hindsight, short of its holdout value by more "
          "than the configured minimum; worse promotions: worse on the next window than the "
          "model replaced (of those with a next window)")
    best = result.best
    if best.overrides:
        print(f"best: {best.name}; to adopt it:\n  " + "\n  ".join(result.adopt()))
    else:
        print("best: the config as it is; nothing to change")
    print(f"report: {jpath}\n({result.seconds} s)")
    return 0
