"""The ``regrow`` command. Heavy libraries are imported inside the commands that use them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _overrides(items: list[str] | None) -> dict[str, Any]:
    from configs.schema import parse_override

    return dict(parse_override(i) for i in items or [])


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the config JSON schema."""
    from configs.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate config files; print the problems of each."""
    from configs.schema import ConfigError, load_config

    status = 0
    for path in args.configs:
        try:
            loaded = load_config(path, _overrides(args.set))
        except ConfigError as err:
            print(f"INVALID {err}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        c = loaded.config
        print(f"OK {path}: model {c.registry.model_name!r}, task {c.data.task}, "
              f"{len(c.candidates.estimators)} candidate(s), primary metric {c.gate.primary_metric}")
    return status


def cmd_train(args: argparse.Namespace) -> int:
    """Run the training flow locally and print its summary."""
    from configs.schema import ConfigError, load_config

    try:
        overrides = _overrides(args.set)
        load_config(args.config, overrides)  # fail fast, before any orchestration starts
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from flows.report import run_training

    return run_training(args.config, overrides, as_json=args.json, reason=args.reason,
                        trigger="manual")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the end-to-end demo."""
    from flows.demo import run_demo

    return run_demo(as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (cheap: no heavy imports)."""
    p = argparse.ArgumentParser(prog="regrow", description="Keep tabular models fresh: "
                                "validated training, gated promotion, drift-triggered retraining.")
    p.add_argument("-v", "--verbose", action="store_true", help="show Prefect and library logs")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train candidates for a config and gate the winner")
    t.add_argument("config")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config key, e.g. --set split.cutoff=2020-01-01 (repeatable)")
    t.add_argument("--reason", default="manual run from the command line")
    t.add_argument("--json", action="store_true", help="print the summary as JSON")
    t.set_defaults(func=cmd_train)

    c = sub.add_parser("config", help="inspect configs")
    csub = c.add_subparsers(dest="config_command", required=True)
    ch = csub.add_parser("check", help="validate config files")
    ch.add_argument("configs", nargs="+")
    ch.add_argument("--set", action="append", metavar="KEY=VALUE")
    ch.set_defaults(func=cmd_config_check)
    sc = csub.add_parser("schema", help="print the config JSON schema")
    sc.set_defaults(func=cmd_config_schema)

    d = sub.add_parser("demo", help="train twice on a public weather table; show the gate decide")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``regrow`` console script."""
    args = build_parser().parse_args(argv)
    from tasks.settings import configure_process_env

    configure_process_env(verbose=args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
