"""The ``regrow`` command. Heavy libraries are imported inside the commands that use them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1


def _overrides(items: list[str] | None) -> dict[str, Any]:
    from regrow.configs.schema import parse_override

    return dict(parse_override(i) for i in items or [])


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Bring the monitoring store's schema to this release's revision, keeping its rows."""
    from regrow.tasks.store.database import StoreSchemaError
    from regrow.tasks.store.migrate import upgrade
    from regrow.tasks.store.settings import Settings

    url = args.database_url or Settings.from_env().database_url
    try:
        result = upgrade(url)
    except StoreSchemaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    from dataclasses import asdict

    print(json.dumps(asdict(result)) if args.json else result.describe())
    return 0


def cmd_db_current(args: argparse.Namespace) -> int:
    """The store's schema revision against this release's."""
    import sqlalchemy as sa

    from regrow.tasks.store import database as st
    from regrow.tasks.store.settings import Settings

    engine = sa.create_engine(args.database_url or Settings.from_env().database_url)
    try:
        found = st.schema_revision(engine)
        tables = st.regrow_tables(engine) if found is None else None
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    state = ("current" if found == st.SCHEMA_REVISION else "empty" if found is None and not tables
             else "unversioned (regrow 0.1.0)" if found is None else
             "behind" if found < st.SCHEMA_REVISION else "newer")
    if args.json:
        print(json.dumps({"url": where, "revision": found, "expected": st.SCHEMA_REVISION,
                          "state": state}))
    else:
        print(f"{where}: schema revision {found or 'none'}, this regrow uses "
              f"{st.SCHEMA_REVISION}: {state}" + ("; run `regrow db upgrade`"
                                                  if state in ("behind", "unversioned (regrow 0.1.0)")
                                                  else ""))
    return 0 if state in ("current", "empty") else 1


def cmd_config_schema(args: argparse.Namespace) -> int:
    """Print the config JSON schema."""
    from regrow.configs.schema import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_config_estimators(args: argparse.Namespace) -> int:
    """List the estimator short names a config may use, with their class and tasks."""
    from regrow.configs.schema import ESTIMATORS

    rows = [{"name": k, "class": path, "tasks": list(tasks)}
            for k, (path, tasks) in sorted(ESTIMATORS.items())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'tasks':<26}  class")
    for r in rows:
        print(f"{r['name']:<{width}}  {', '.join(r['tasks']):<26}  {r['class']}")
    print("\nor a dotted path to any scikit-learn estimator class (from sklearn.* or a module "
          "listed under `modules`), e.g. estimator: sklearn.svm.SVC")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    """Validate config files; print the problems of each."""
    from regrow.configs.schema import ConfigError, load_config

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


def cmd_init(args: argparse.Namespace) -> int:
    """Profile a table and write a config `regrow train` accepts as it is."""
    from regrow.app.init_cli import run_init

    return run_init(args)


def cmd_config_show(args: argparse.Namespace) -> int:
    """Print a config with every default and inferred value written out."""
    from regrow.app.init_cli import run_config_show

    return run_config_show(args)


def cmd_train(args: argparse.Namespace) -> int:
    """Run the training flow locally and print its summary."""
    from regrow.configs.schema import ConfigError, load_config

    try:
        overrides = _overrides(args.set)
        loaded = load_config(args.config, overrides)  # fail fast, before orchestration starts
        from regrow.tasks.data.features import check_transformers
        from regrow.tasks.model.imports import config_folder
        from regrow.tasks.model.train import check_estimators

        with config_folder(loaded.path.parent):  # listed modules: installed, or beside the config
            check_estimators(loaded.config)  # imports and checks classes; calls nothing
            check_transformers(loaded.config)  # the same for custom transformers (constructors only)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.app.report import run_training

    return run_training(args.config, overrides, as_json=args.json, reason=args.reason,
                        trigger="manual")


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the end-to-end demo."""
    from regrow.app.demo import run_demo

    return run_demo(as_json=args.json)


def _load_or_exit(args: argparse.Namespace):
    from regrow.configs.schema import ConfigError, load_config

    try:
        return load_config(args.config, _overrides(getattr(args, "set", None)))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def _emit(obj: Any, as_json: bool, text: str) -> None:
    from dataclasses import asdict, is_dataclass

    if as_json:
        plain = asdict(obj) if is_dataclass(obj) and not isinstance(obj, type) else obj
        print(json.dumps(plain, indent=2, default=str))
    else:
        print(text)


def cmd_score(args: argparse.Namespace) -> int:
    """Score rows with the champion; predictions go to the monitoring store."""
    _load_or_exit(args)
    from regrow.app.report import guarded
    from regrow.flows.monitoring import score_flow

    res = guarded(lambda: score_flow(args.config, args.input, args.query,
                                     _overrides(args.set)), args.json)
    if isinstance(res, int):
        return res
    text = f"scored {res.rows} rows with {res.model} v{res.version} (batch {res.batch_id})"
    if res.shadow_version:
        text += (f"\nbaking: v{res.shadow_version} (previous champion) scored {res.shadow_rows} "
                 "of them as a shadow")
    if res.ignored_columns:
        text += f"\nignored columns not used by the model: {res.ignored_columns}"
    for col, vals in res.unseen_categories.items():
        text += f"\nunseen categories in {col!r} (scored as unknown): {vals}"
    _emit(res, args.json, text)
    return 0


def _champion_classes(loaded) -> tuple[list[str] | None, str]:
    """The classes the champion was trained on (its version's ``regrow.classes`` tag), which
    labels must be among when the config declares no ``expectations.allowed`` for the target;
    (None, "") when they are declared, the target is numeric, or nothing records them."""
    cfg = loaded.config
    if cfg.data.task == "regression" or cfg.data.target in cfg.expectations.allowed:
        return None, ""
    from regrow.tasks.registry.mlflow_registry import CHAMPION, Registry
    from regrow.tasks.store.settings import Settings

    reg, model = Registry(Settings.from_env()), cfg.registry.model_name
    version = reg.alias_version(model, CHAMPION)
    tag = reg.version_info(model, version).tags.get("regrow.classes") if version else None
    if not tag:
        return None, ""
    return json.loads(tag), f"the classes champion v{version} was trained on"


def cmd_labels(args: argparse.Namespace) -> int:
    """Record labels that arrived later; report ids with no prediction."""
    loaded = _load_or_exit(args)
    from regrow.app.report import guarded
    from regrow.tasks.data.ingest import read_rows
    from regrow.tasks.monitoring.scoring import record_labels
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    def go():
        frame = read_rows(loaded, args.input, None)
        classes, source = _champion_classes(loaded)
        return record_labels(loaded.config, frame, Store(Settings.from_env().database_url),
                             classes, source)

    res = guarded(go, args.json)
    if isinstance(res, int):
        return res
    text = f"{res.received} labels received: {res.describe()}"
    if res.unknown_ids:
        text += (f"\n{len(res.unknown_ids)} label(s) for ids with no prediction (kept, not "
                 f"joined): {res.unknown_ids[:10]}{' ...' if len(res.unknown_ids) > 10 else ''}")
    _emit(res, args.json, text)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Run one drift check now."""
    _load_or_exit(args)
    from regrow.app.report import guarded, render_drift
    from regrow.flows.monitoring import drift_check_flow

    res = guarded(lambda: drift_check_flow(args.config, _overrides(args.set),
                                           retrain=not args.no_retrain), args.json)
    if isinstance(res, int):
        return res
    _emit(res, args.json, render_drift(res))
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    """A manual retrain request through the policy. The policy answers first, from the
    monitoring store alone; only an admitted request starts Prefect (a temporary server when
    none is configured) and its training, so a refused one costs no server start."""
    import os
    from types import SimpleNamespace

    loaded = _load_or_exit(args)
    from regrow.app.report import guarded, render_retrain
    from regrow.tasks.policy import retrain as policy
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    model, rules = loaded.config.registry.model_name, loaded.config.retrain
    store = Store(Settings.from_env().database_url)
    try:
        answer = policy.request_retrain(store, model, rules, kind="manual", reason=args.reason)
    except ValueError as err:  # an empty reason
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not answer.admitted:
        if os.environ.get("PREFECT_API_URL"):  # a server that keeps the notice (none is started)
            from regrow.flows.events import circuit_refused, retrain_answered

            retrain_answered(model, answer, "manual", args.reason)
            circuit_refused(store, model, rules, answer.verdict, "manual")
        refused: Any = SimpleNamespace(request_id=answer.request_id, verdict=answer.verdict,
                                       detail=answer.detail, training=None, error=None,
                                       dispatched=None)  # a RetrainOutcome's fields, no import
        _emit(vars(refused), args.json, render_retrain(refused))
        return 0
    from regrow.flows.progress import from_cli
    from regrow.runtime import early

    from_cli(args.command, args.json, args.verbose, True)  # "starting the run on ..."
    early.start(args.command)  # before Prefect is imported: it reads PREFECT_API_URL once
    with early.flow_settings(args.command, checked=True):
        from regrow.flows import dispatch
        from regrow.flows.events import retrain_answered
        from regrow.flows.model_env import Env
        from regrow.flows.monitoring import RetrainOutcome, execute_request

        retrain_answered(model, answer, "manual", args.reason)  # before the training it starts
        overrides = _overrides(args.set) or None
        if dispatch.mode() == "events":  # served: the training deployment runs it
            event = dispatch.emit_admitted(model, answer.request_id, "manual", args.reason, None,
                                           overrides)
            res = RetrainOutcome(answer.request_id, answer.verdict, answer.detail,
                                 dispatched=f"event {dispatch.ADMITTED_EVENT} {event}")
        else:
            res = guarded(lambda: execute_request(Env.of(loaded), answer, kind="manual",
                                                  reason=args.reason, ref=None,
                                                  overrides=overrides, actor=args.actor),
                          args.json)
    if isinstance(res, int):
        return res
    _emit(res, args.json, render_retrain(res))
    return 0 if res.error is None else EXIT_FAILED


def cmd_reset_circuit(args: argparse.Namespace) -> int:
    """Close the circuit breaker after a person has looked at the rejections."""
    loaded = _load_or_exit(args)
    from regrow.tasks.policy.retrain import reset_circuit
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    reset_circuit(Store(Settings.from_env().database_url), loaded.config.registry.model_name,
                  args.actor, args.reason)
    print(f"circuit reset for {loaded.config.registry.model_name} by {args.actor}: {args.reason}")
    from regrow.flows.events import circuit_reset

    _unsent(circuit_reset(loaded.config.registry.model_name, args.actor, args.reason))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Champion, recent drift checks, retrain requests and trainings of one model; without a
    config, one row per model of the state directory (`tasks.store.fleet`)."""
    if args.config is None:
        return _fleet_status(args)
    loaded = _load_or_exit(args)
    from regrow.app.report import render_status, status

    info = status(loaded)
    _emit(info, args.json, render_status(info))
    return 0


def _fleet_status(args: argparse.Namespace) -> int:
    """Every model of the state directory, those needing a person first."""
    if args.set:
        print("error: --set needs a config: `regrow status CONFIG --set KEY=VALUE`",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    stale = None
    if args.stale_after:
        from regrow.configs.schema import parse_duration

        try:
            stale = parse_duration(args.stale_after)
        except ValueError as err:
            print(f"error: --stale-after: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    from regrow.app.report import fleet_status, render_fleet

    fleet = fleet_status(stale)
    if args.json:
        print(json.dumps(fleet.to_dict(), indent=2))
    else:
        print(render_fleet(fleet))
    return 0


def _governance(args: argparse.Namespace):
    """(loaded config, registry, store) for the governance commands."""
    loaded = _load_or_exit(args)
    from regrow.tasks.registry.mlflow_registry import Registry
    from regrow.tasks.store.database import Store
    from regrow.tasks.store.settings import Settings

    settings = Settings.from_env()
    return loaded, Registry(settings), Store(settings.database_url)


def cmd_history(args: argparse.Namespace) -> int:
    """Every alias move of a model: who, why, the gate record and the trigger."""
    loaded, reg, store = _governance(args)
    from regrow.tasks.registry import governance as gov
    model = loaded.config.registry.model_name
    found = gov.outside_moves(reg, store, model, "regrow history")
    entries = gov.history(reg, store, model)
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    from regrow.app.term import shown  # text from outside: actors, reasons, refs

    for f in found:
        print(f"note: {shown(f.describe())} was moved outside regrow (not in the history until "
              "the next promotion or rollback records it as actor 'external')")
    if not entries:
        print(f"model {model}: no alias moves recorded yet")
    for e in entries:
        move = gov.AliasMove(model, e.alias, e.old_version, e.new_version, e.reason, e.actor)
        print(f"{e.at}  {shown(move.describe()):<28} by {shown(e.actor)}")
        print(f"    why: {shown(e.reason)}")
        if e.new_version:
            print(f"    v{e.new_version}: gate {e.gate_verdict or '?'}"
                  + (f" ({shown(e.gate_reasons)})" if e.gate_reasons else "")
                  + f"; trained on trigger {shown(e.trigger or '?')}: "
                  + shown(e.trigger_reason or "-")
                  + (f" [{shown(e.trigger_ref)}]" if e.trigger_ref else ""))
        if e.approval:
            print(f"    approval: {shown(e.approval)}")
    return 0


def _unsent(warning: str | None) -> None:
    """A command's event that did not reach Prefect: one line on stderr (what it told of stands)."""
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def _alias_command(args: argparse.Namespace, act) -> int:
    """Run a promotion or rollback (`act(registry, store, model, config)` -> moves); a request
    that cannot be done is one sentence and exit 2."""
    from dataclasses import asdict

    from regrow.tasks.registry.governance import GovernanceError

    loaded, reg, store = _governance(args)
    model = loaded.config.registry.model_name
    try:
        moves = act(reg, store, model, loaded.config)
    except GovernanceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps([asdict(m) for m in moves], indent=2))
    for m in [] if args.json else moves:
        print(f"{m.model} {m.describe()} ({m.reason})")
    sys.stdout.flush()  # the move is said before the event is sent
    from regrow.flows.events import person_moved

    _unsent(person_moved(reg, model, moves, args.by, args.reason,
                         getattr(args, "override_gate", None)))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """A person promotes a version (a failed gate needs --override-gate with a reason)."""
    from regrow.tasks.registry.governance import promote

    return _alias_command(args, lambda reg, store, model, cfg: promote(
        reg, store, model, str(args.version), by=args.by, reason=args.reason,
        override_gate=args.override_gate, bake=cfg.promotion.bake))


def cmd_rollback(args: argparse.Namespace) -> int:
    """Put the previous champion (or --to N) back, recorded."""
    from regrow.tasks.registry.governance import rollback

    return _alias_command(args, lambda reg, store, model, cfg: rollback(
        reg, store, model, by=args.by, reason=args.reason,
        to=None if args.to is None else str(args.to)))


def cmd_card(args: argparse.Namespace) -> int:
    """Print or write the model card of a version (default: the champion), from current records."""
    from pathlib import Path

    loaded, reg, store = _governance(args)
    from regrow.tasks.registry.card import CardError, build_card
    from regrow.tasks.registry.governance import outside_moves

    model = loaded.config.registry.model_name
    for found in outside_moves(reg, store, model, "regrow card"):  # the card shows alias history
        print(f"note: {found.describe()} was moved outside regrow (not in the history until the "
              "next promotion or rollback records it)", file=sys.stderr)
    try:
        card = build_card(reg, store, model, None if args.version is None else str(args.version))
    except CardError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    as_html = args.html or (args.out or "").lower().endswith((".html", ".htm"))
    text = card.to_html() if as_html else card.to_markdown()
    if not args.out:
        print(text, end="")
        return 0
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"error: --out {args.out}: {err.strerror or err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote the model card of {card.model} v{card.version} to {args.out}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    """Remove a model's local report files older than --older-than (default: the config's
    monitoring.keep_reports_days); --dry-run only counts them."""
    from regrow.configs.schema import parse_duration
    from regrow.tasks.store.retention import prune_reports
    from regrow.tasks.store.settings import Settings

    loaded = _load_or_exit(args)
    model = loaded.config.registry.model_name
    try:
        seconds = (parse_duration(args.older_than) if args.older_than
                   else loaded.config.monitoring.keep_reports_days * 86400.0)
    except ValueError as err:
        print(f"error: --older-than: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    result = prune_reports(Settings.from_env().reports_dir / model, seconds, args.dry_run)
    _emit({**result.__dict__, "megabytes": round(result.megabytes, 3)}, args.json,
          f"{model}: {result.describe()}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve the deployments of the given configs (needs PREFECT_API_URL for a real server)."""
    import os

    # Prefect's runner polls for scheduled and triggered runs every 10 s by default: a webhook
    # or UI run would wait up to that long before it starts. 1 s (one small query a second)
    # keeps accepted -> Running near 2 s; set it higher for a remote server and many models.
    # Set before Prefect is imported.
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    from regrow.configs.folders import load_configs
    from regrow.configs.schema import ConfigError

    try:  # a folder stands for its *.yaml and *.yml configs; every broken one is named
        args.configs = [str(c.path) for c in load_configs(args.configs)]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.app.outage import check_stores

    check_stores()  # served runs need both: a store that does not answer is said now, once
    if not os.environ.get("PREFECT_API_URL"):
        print("note: PREFECT_API_URL is not set; serving against a temporary local server "
              "(its UI and schedules vanish with this process)", file=sys.stderr)
    from regrow.flows.events import NotifySetupError
    from regrow.flows.serve import DuplicateModel, serve_configs
    from regrow.runtime.warm_runs import start_runs_warm

    try:
        serve_configs(args.configs, limit=args.limit, start_warm=start_runs_warm)
    except (NotifySetupError, DuplicateModel) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Create the deployments of the given configs on a Prefect work pool, for workers."""
    import os

    from regrow.configs.folders import load_configs
    from regrow.configs.schema import ConfigError

    try:
        paths = [str(c.path) for c in load_configs(args.configs)]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not os.environ.get("PREFECT_API_URL"):
        print("error: PREFECT_API_URL is not set: deployments on a work pool need the Prefect "
              "server its workers poll (a temporary one would vanish with this command)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.flows.events import NotifySetupError
    from regrow.flows.serve import DuplicateModel, PoolMissing, deploy_configs

    try:
        names = deploy_configs(paths, args.pool, create_pool=args.create_pool)
    except (NotifySetupError, DuplicateModel, PoolMissing) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"deployed {len(names)} deployments of {len(paths)} config(s) on work pool "
          f"{args.pool!r}; start workers with `prefect worker start --pool {args.pool}`:\n"
          + "\n".join(f"  {n}" for n in names))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the flow runs of a Prefect work pool, started warm."""
    import os

    if not os.environ.get("PREFECT_API_URL"):
        print("error: PREFECT_API_URL is not set: a worker polls the Prefect server its "
              "deployments are on (`regrow deploy`)", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Prefect's workers ask for due runs every 10 s by default, and a slot freed by a run that
    # ended waits for the next ask: a round of short drift checks was bounded by that wait,
    # not by the machine. 2 s (one small query every 2 s per worker) unless set otherwise.
    # Set before Prefect is imported.
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", "2")
    from regrow.runtime.warm_worker import run_worker

    run_worker(args.pool, args.limit, args.name, run_once=args.run_once)
    return 0


def cmd_notify(args: argparse.Namespace) -> int:
    """Create (or update) the notification automations of the given configs on the Prefect
    server, as `regrow serve` does; with --print, print them as a file for
    `prefect automation create --from-file` instead."""
    configs = []
    for path in args.configs:
        args.config = path
        configs.append(_load_or_exit(args))
    from prefect.settings import PREFECT_API_URL

    from regrow.flows import events as notify
    server = bool(PREFECT_API_URL.value())  # the user's (env or profile), or `regrow up`'s
    if not server and not args.print:
        print("error: regrow notify keeps automations on a Prefect server, and none is "
              "configured (a temporary server would forget them when this command ends): run "
              "`regrow up`, or set PREFECT_API_URL to your server; `regrow notify --print` "
              "writes them as a file instead", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.print:
            import yaml

            docs = []
            for loaded in configs:
                cfg = loaded.config
                if cfg.notify is not None:
                    bid = notify.block_id(cfg.notify.block, str(loaded.path)) if server \
                        else notify.PLACEHOLDER_BLOCK_ID
                    docs += notify.automations_file(bid, cfg.notify.window_seconds,
                                                    cfg.registry.model_name,
                                                    cfg.notify.on)["automations"]
            if not server and docs:
                print(f"note: no Prefect server is configured, so the block id is left as "
                      f"{notify.PLACEHOLDER_BLOCK_ID}: replace it with your block's (`prefect "
                      "block inspect <type>/<name>` shows it)", file=sys.stderr)
            print(yaml.safe_dump({"automations": docs}, sort_keys=False), end="")
            return 0
        for loaded in configs:
            print(notify.describe_sync(loaded, notify.sync_automations(loaded)))
    except notify.NotifySetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start the local control plane in the background (Prefect server and UI, MLflow UI,
    `regrow serve` and the webhook receiver for the given configs)."""
    if args.status:
        return cmd_ps(args)
    if not sys.platform.startswith("linux"):
        print("error: the local control plane needs Linux (it tracks its processes in /proc)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.configs.folders import load_configs
    from regrow.configs.schema import ConfigError

    try:  # a folder stands for its configs: the plane serves (and records) each file
        loaded = load_configs(args.configs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    models = [c.config.registry.model_name for c in loaded]
    from regrow.runtime import control
    opts = control.Options(configs=tuple(str(c.path) for c in loaded), host=args.host,
                           prefect_port=args.prefect_port, mlflow_port=args.mlflow_port,
                           webhook_port=args.webhook_port, timeout=args.timeout)
    try:
        return control.up(opts, models, out=lambda line: print(line, flush=True))
    except control.PlaneError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_down(args: argparse.Namespace) -> int:
    """Stop every part of the local control plane (idempotent)."""
    from regrow.runtime import control
    return control.down(out=lambda line: print(line, flush=True))


def cmd_ps(args: argparse.Namespace) -> int:
    """Each part of the local control plane: pid, URL and health."""
    from regrow.runtime import control
    info = control.status()
    print(json.dumps(info, indent=2) if args.json else control.render(info))
    return 0


def _resume(args: argparse.Namespace, approve: bool) -> int:
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    try:
        run_id = UUID(args.flow_run_id)
    except ValueError:
        print(f"error: {args.flow_run_id!r} is not a flow run id", file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.flows.approval import paused_run

    try:
        run_id = paused_run(run_id)
        resume_flow_run(run_id, run_input={"approve": approve, "approver": args.by,
                                           "reason": args.reason})
    except ObjectNotFound:
        print(f"error: there is no flow run {run_id} on this Prefect API", file=sys.stderr)
        return EXIT_BAD_INPUT
    except RuntimeError as err:
        print(f"error: cannot resume flow run {run_id}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{'approved' if approve else 'rejected'} the promotion waiting in flow run {run_id} "
          f"(by {args.by}: {args.reason})")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    """Approve a promotion waiting for a person."""
    return _resume(args, True)


def cmd_reject(args: argparse.Namespace) -> int:
    """Reject a promotion waiting for a person."""
    return _resume(args, False)


def cmd_webhook(args: argparse.Namespace) -> int:
    """Run the signed-webhook receiver for the given configs."""
    from regrow.configs.schema import ConfigError, load_config

    try:
        configs = [load_config(p) for p in args.configs]
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    from regrow.app.webhook import run

    try:
        run(configs, host=args.host, port=args.port, max_body=args.max_body,
            tolerance_seconds=args.tolerance, log_level=args.log_level,
            access_log=not args.no_access_log, header_timeout=args.header_timeout,
            body_timeout=args.body_timeout, max_connections=args.max_connections)
    except ValueError as err:  # e.g. no secret configured
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_predict_server(args: argparse.Namespace) -> int:
    """Serve the champions of the given configs online (see regrow/app/predict_server.py)."""
    from regrow.app.predict_server import ServiceConfigError, options_from, run
    from regrow.configs.schema import ConfigError

    try:
        run(options_from(args))
    except (ConfigError, ServiceConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    """Replay history under the config: what the policy would have done, window by window."""
    loaded = _load_or_exit(args)
    from regrow.app.backtest_cli import run_backtest, run_compare
    from regrow.tasks.monitoring.backtest import Options
    from regrow.tasks.store.settings import Settings

    opts = Options(window=args.window or str(loaded.config.monitoring.window.rows
                                            or loaded.config.monitoring.window.period),
                   label_delay=args.label_delay, start=args.start,
                   train_window=args.train_window, tick=args.tick)
    if args.compare or args.variants:
        return run_compare(loaded, opts, args.compare or [], args.variants,
                           training_cost=args.training_cost, path=args.history,
                           query=args.query, out=args.out, as_json=args.json,
                           reports_dir=Settings.from_env().reports_dir)
    return run_backtest(loaded, opts, path=args.history, query=args.query, out=args.out,
                        as_json=args.json, reports_dir=Settings.from_env().reports_dir)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Train a recorded run again and compare its holdout metric (exit 0 same, 1 different)."""
    from regrow.app.reproduce_cli import run_reproduce

    return run_reproduce(args.target, args.version, allow_data_change=args.allow_data_change,
                         tolerance=args.tolerance, as_json=args.json)


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

    it = sub.add_parser("init", help="profile a table (file or SQL) and write a commented "
                        "config that `regrow train` accepts as it is")
    it.add_argument("data", metavar="DATA", help="a CSV or Parquet file, or a SQLAlchemy URL "
                    "(with --table or --query); ${VAR} in a URL is read from the environment")
    it.add_argument("--target", required=True, metavar="COLUMN", help="the column to predict")
    it.add_argument("--table", help="the table behind a URL")
    it.add_argument("--query", help="a query behind a URL (instead of --table)")
    it.add_argument("--name", help="the model's registry name (default: the file's or table's "
                    "name)")
    it.add_argument("--id", metavar="COLUMN", help="the id column (default: a unique column "
                    "named like an id, if any)")
    it.add_argument("--time", metavar="COLUMN", help="the time column (default: the first "
                    "column of dates, date-times, years or epoch numbers, if any)")
    it.add_argument("--out", metavar="FILE", help="where the config goes (default: NAME.yaml)")
    it.add_argument("--force", action="store_true", help="replace an existing --out file")
    it.add_argument("--print", action="store_true", help="print the config instead of "
                    "writing it")
    it.add_argument("--sample-rows", type=int, default=200_000, metavar="N",
                    help="profile the table's first N rows (default 200000)")
    it.add_argument("--json", action="store_true", help="print the summary as JSON")
    it.set_defaults(func=cmd_init)

    db = sub.add_parser("db", help="the monitoring store's schema: current revision, upgrade")
    dsub = db.add_subparsers(dest="db_command", required=True)
    for name, func, help_ in (
            ("upgrade", cmd_db_upgrade, "migrate the store to this release's schema, keeping "
             "every row (a store regrow 0.1.0 made is recognised)"),
            ("current", cmd_db_current, "print the store's schema revision; exit 1 when it "
             "needs `regrow db upgrade`")):
        dp = dsub.add_parser(name, help=help_)
        dp.add_argument("--database-url", help="the store (default: REGROW_DATABASE_URL, else "
                        "$REGROW_HOME/regrow.db)")
        dp.add_argument("--json", action="store_true")
        dp.set_defaults(func=func)
    c = sub.add_parser("config", help="inspect configs")
    csub = c.add_subparsers(dest="config_command", required=True)
    ch = csub.add_parser("check", help="validate config files")
    ch.add_argument("configs", nargs="+")
    ch.add_argument("--set", action="append", metavar="KEY=VALUE")
    ch.set_defaults(func=cmd_config_check)
    sw = csub.add_parser("show", help="print a config as regrow uses it: every default "
                         "written out, inferred values said why")
    sw.add_argument("config")
    sw.add_argument("--set", action="append", metavar="KEY=VALUE")
    sw.add_argument("--json", action="store_true")
    sw.set_defaults(func=cmd_config_show)
    sc = csub.add_parser("schema", help="print the config JSON schema")
    sc.set_defaults(func=cmd_config_schema)
    ce = csub.add_parser("estimators", help="list the estimator short names for candidates")
    ce.add_argument("--json", action="store_true")
    ce.set_defaults(func=cmd_config_estimators)

    def model_cmd(name: str, help_: str, func, json_flag: bool = True) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("config")
        sp.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
        if json_flag:
            sp.add_argument("--json", action="store_true")
        sp.set_defaults(func=func)
        return sp

    s = model_cmd("score", "score new rows with the champion", cmd_score)
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="CSV or Parquet file of rows")
    src.add_argument("--query", help="SQL query on the config's SQL source")
    lb = model_cmd("labels", "record labels that arrived later (joined by id)", cmd_labels)
    lb.add_argument("--input", required=True, help="CSV or Parquet with the id and target columns")
    w = model_cmd("watch", "run one drift check now", cmd_watch)
    w.add_argument("--no-retrain", action="store_true", help="check only; ask for no retrain")
    st = sub.add_parser("status", help="one model: champion, drift checks, retrain requests, "
                        "trainings; without CONFIG, every model of the state directory, one row "
                        "each, those needing a person first")
    st.add_argument("config", nargs="?", help="a model's config (omit it for every model)")
    st.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    st.add_argument("--json", action="store_true")
    st.add_argument("--stale-after", metavar="DURATION", help="without CONFIG: a champion "
                    "promoted longer ago needs a person (default 30d; e.g. 12h, 90d)")
    st.set_defaults(func=cmd_status)
    r = model_cmd("retrain", "ask for a retrain through the policy", cmd_retrain)
    r.add_argument("--reason", required=True)
    r.add_argument("--actor", default="cli", help="who asks (recorded)")
    rc = model_cmd("reset-circuit", "close the circuit breaker after repeated gate rejections",
                   cmd_reset_circuit, json_flag=False)
    rc.add_argument("--reason", required=True)
    rc.add_argument("--actor", required=True, help="the person resetting it (recorded)")

    model_cmd("history", "every alias move: who, why, gate record, trigger", cmd_history)
    pr = model_cmd("promote", "make a version champion by hand (recorded)", cmd_promote)
    pr.add_argument("--version", required=True, help="the version to promote")
    pr.add_argument("--by", required=True, help="who decides (recorded)")
    pr.add_argument("--reason", required=True)
    pr.add_argument("--override-gate", metavar="REASON", default=None,
                    help="promote a version that failed its gate; the reason is recorded")
    rb = model_cmd("rollback", "put the previous champion back (recorded)", cmd_rollback)
    rb.add_argument("--to", default=None, help="a version to go back to (default: the previous "
                    "champion)")
    rb.add_argument("--by", required=True, help="who decides (recorded)")
    rb.add_argument("--reason", required=True)
    cd = model_cmd("card", "print or write a version's model card", cmd_card, json_flag=False)
    cd.add_argument("--version", type=int, help="the version (default: the champion)")
    cd.add_argument("--out", help="write to this file (.html: the HTML page) instead of printing")
    cd.add_argument("--html", action="store_true", help="HTML instead of Markdown")
    pn = model_cmd("prune", "remove a model's local report files older than its retention",
                   cmd_prune)
    pn.add_argument("--older-than", metavar="DURATION", help="e.g. 30d, 12h (default: the "
                    "config's monitoring.keep_reports_days)")
    pn.add_argument("--dry-run", action="store_true", help="count what would go; remove nothing")

    sv = sub.add_parser("serve", help="serve training, drift-check and scoring deployments")
    sv.add_argument("configs", nargs="+", metavar="CONFIG", help="a config file, or a folder: "
                    "every *.yaml and *.yml config directly in it")
    sv.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    sv.set_defaults(func=cmd_serve, set=None)
    dp = sub.add_parser("deploy", help="create the deployments `serve` would serve on a Prefect "
                        "work pool instead, for workers on this machine or others")
    dp.add_argument("configs", nargs="+", metavar="CONFIG", help="a config file, or a folder: "
                    "every *.yaml and *.yml config directly in it")
    dp.add_argument("--pool", required=True, help="the work pool (e.g. a process pool)")
    dp.add_argument("--create-pool", action="store_true", help="create it as a process pool "
                    "when the server has none of that name")
    dp.set_defaults(func=cmd_deploy, set=None)
    wk = sub.add_parser("worker", help="run a Prefect process work pool's flow runs (`regrow "
                        "deploy`), each started as a fork of a process that imported the stack")
    wk.add_argument("--pool", required=True, help="the work pool to poll")
    wk.add_argument("--limit", type=int, default=None, help="max concurrent flow runs (about "
                    "one per core)")
    wk.add_argument("--name", default=None, help="the worker's name (default: Prefect's)")
    wk.add_argument("--run-once", action="store_true", help="take the runs due now, then stop")
    wk.set_defaults(func=cmd_worker, set=None)
    nf = sub.add_parser("notify", help="create the notification automations of CONFIGs on the "
                        "Prefect server (as `serve` does), or --print them as a file")
    nf.add_argument("configs", nargs="+")
    nf.add_argument("--print", action="store_true", help="print them for `prefect automation "
                    "create --from-file` instead of creating them")
    nf.set_defaults(func=cmd_notify, set=None)
    up = sub.add_parser("up", help="start the local control plane in the background: Prefect "
                        "server and UI, MLflow UI, `serve` (and the webhook receiver) for CONFIGs")
    up.add_argument("configs", nargs="*", metavar="CONFIG", help="a config file, or a folder of "
                    "them (every *.yaml and *.yml directly in it)")
    up.add_argument("--host", default="127.0.0.1", help="address every part binds (default "
                    "127.0.0.1); any other address needs PREFECT_SERVER_API_AUTH_STRING and "
                    "MLflow's basic auth (MLFLOW_AUTH_ADMIN_PASSWORD) set")
    up.add_argument("--prefect-port", type=int, default=4200)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--webhook-port", type=int, default=8787,
                    help="used when REGROW_WEBHOOK_SECRET is set")
    up.add_argument("--timeout", type=float, default=180.0,
                    help="seconds each part may take to answer (default 180)")
    up.add_argument("--status", action="store_true", help="show the parts (as `regrow ps`)")
    up.add_argument("--json", action="store_true", help="with --status: print JSON")
    up.set_defaults(func=cmd_up)
    dn = sub.add_parser("down", help="stop the local control plane")
    dn.set_defaults(func=cmd_down)
    ps = sub.add_parser("ps", help="the parts of the local control plane: pid, URL, health")
    ps.add_argument("--json", action="store_true")
    ps.set_defaults(func=cmd_ps)
    for name, func, verb in (("approve", cmd_approve, "approve"), ("reject", cmd_reject, "reject")):
        ap = sub.add_parser(name, help=f"{verb} a promotion waiting in a paused training run")
        ap.add_argument("flow_run_id")
        ap.add_argument("--by", required=True, help="who decides (recorded)")
        ap.add_argument("--reason", default="-" if name == "approve" else None,
                        required=name == "reject")
        ap.set_defaults(func=func)
    wh = sub.add_parser("webhook", help="run the signed webhook receiver")
    wh.add_argument("configs", nargs="+")
    wh.add_argument("--host", default="127.0.0.1")
    wh.add_argument("--port", type=int, default=8787)
    wh.add_argument("--max-body", type=int, default=1024 * 1024, help="largest body in bytes")
    wh.add_argument("--tolerance", type=int, default=300, help="accepted timestamp skew, seconds")
    wh.add_argument("--log-level", default="info")
    wh.add_argument("--no-access-log", action="store_true")
    wh.add_argument("--header-timeout", type=float, default=5.0,
                    help="seconds for a request's headers (the connection is closed after)")
    wh.add_argument("--body-timeout", type=float, default=10.0,
                    help="seconds for a request's body (408 after)")
    wh.add_argument("--max-connections", type=int, default=100,
                    help="open connections at once (503 above)")
    wh.set_defaults(func=cmd_webhook)

    ps_ = sub.add_parser("predict-server", help="serve the champions online (MLflow's scoring "
                         "protocol), following every promotion, logging what is served")
    from regrow.app.predict_server import add_arguments

    add_arguments(ps_)
    ps_.set_defaults(func=cmd_predict_server)

    bk = model_cmd("backtest", "replay history: what the drift checks, the policy and the gate "
                   "would have done, window by window (touches no live state)", cmd_backtest)
    hist = bk.add_mutually_exclusive_group()
    hist.add_argument("--history", metavar="FILE", help="CSV or Parquet with the inputs, the "
                      "target and the time column (default: the config's data.source)")
    hist.add_argument("--query", help="SQL query on the config's SQL source")
    bk.add_argument("--window", metavar="ROWS|PERIOD", help="rows per window (1000) or a period "
                    "of event time (30d); default monitoring.window")
    bk.add_argument("--label-delay", default="0", metavar="0|DURATION|WINDOWS|never",
                    help="when labels arrive: with the window (0, default), a duration after "
                    "each row's time (7d), a number of windows later (2), or never")
    bk.add_argument("--start", metavar="TIME|ROW", help="where the replay starts; the first "
                    "champion trains on what came before (default: the middle of the history)")
    bk.add_argument("--train-window", metavar="ROWS|PERIOD", help="what a training sees: the "
                    "latest rows or period with arrived labels (default: all of them)")
    bk.add_argument("--tick", default="1d", help="simulated time between windows when the "
                    "config has no time column (default 1d)")
    bk.add_argument("--out", metavar="DIR", help="where the HTML and JSON reports go (default "
                    "$REGROW_HOME/reports/<model>/)")
    bk.add_argument("--compare", action="append", metavar="KEY=V1,V2",
                    help="replay each value of a config key (repeatable: every combination) "
                    "beside the config as given, and rank them")
    bk.add_argument("--variants", metavar="FILE", help="YAML of named variants to compare: "
                    "name: {key.path: value, ...}")
    bk.add_argument("--training-cost", type=float, default=0.0, metavar="METRIC",
                    help="with --compare: what one training costs, in the primary metric's "
                    "units, when variants are ranked (default 0)")

    rp = sub.add_parser("reproduce", help="train a recorded run again and compare its holdout "
                        "metric; registers nothing")
    rp.add_argument("target", metavar="RUN_ID | CONFIG", help="an MLflow run id, or a config "
                    "file with --version")
    rp.add_argument("--version", help="reproduce this registered version of CONFIG's model")
    rp.add_argument("--allow-data-change", action="store_true",
                    help="train even if the data's fingerprint changed, and report the difference")
    rp.add_argument("--tolerance", type=float, default=1e-9,
                    help="largest absolute difference of the primary metric that counts as "
                    "reproduced (default 1e-9)")
    rp.add_argument("--json", action="store_true")
    rp.set_defaults(func=cmd_reproduce)

    d = sub.add_parser("demo", help="train twice on a public weather table; show the gate decide")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_demo)
    return p


# Commands that train: they run at a lower CPU priority (`REGROW_TRAIN_NICE`).
TRAINS = ("train", "retrain", "reproduce", "backtest", "demo")


def main(argv: list[str] | None = None, warm: bool = True) -> int:
    """Entry point of the ``regrow`` console script.

    With `warm` (the default), a command runs in the control plane's warm process when one is
    up and would behave the same (see `regrow.runtime.warm`); otherwise here.
    """
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    from regrow.tasks.store.settings import configure_process_env

    settings = configure_process_env(verbose=args.verbose)
    if warm and not args.verbose:
        from regrow.runtime.warm import LOCAL_ONLY, forward

        if args.command not in LOCAL_ONLY:
            code = forward(argv, settings.home)
            if code is not None:
                return code
    from regrow.flows.progress import from_cli, valid_config
    from regrow.runtime import early
    from regrow.runtime.lifeline import hold

    hold()  # helpers (the temporary Prefect server) end with this command, even on kill -9
    if args.command in TRAINS:
        from regrow.tasks.store.settings import SettingError, lower_priority_for_training

        try:  # set before the temporary Prefect server starts: it serves this command only
            lower_priority_for_training()
        except SettingError as err:
            print(f"error: {err}", file=sys.stderr)
            return EXIT_BAD_INPUT
    config, overrides = getattr(args, "config", None), getattr(args, "set", None)
    # the config is loaded once here; the command loads it again and reports any problem;
    # a retrain request starts its server only once the policy admits it (`cmd_retrain`)
    runnable = args.command in early.COMMANDS and args.command not in early.ASKS_FIRST \
        and (config is None or valid_config(config, overrides))
    from_cli(args.command, getattr(args, "json", False), args.verbose, runnable)
    try:
        if runnable:
            early.start(args.command)  # a temporary Prefect server boots while this imports
        with early.flow_settings(args.command):
            code = args.func(args)
        sys.stdout.flush()  # a reader gone (`regrow status | head -1`) shows here
        return code
    except BrokenPipeError:
        from regrow.app.outage import quiet_stdout

        quiet_stdout()  # nobody reads the rest: stop quietly, as `head` expects
        return EXIT_FAILED
    except Exception as err:
        # imported only now: light commands (ps, down) do not load SQLAlchemy
        from regrow.app.outage import describe
        from regrow.tasks.store.database import StoreSchemaError

        # an earlier release's store, a store or server that does not answer, a state
        # directory that cannot be written: one sentence, nothing half-done, exit 1
        message = str(err) if isinstance(err, StoreSchemaError) else describe(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        if getattr(args, "json", False):  # the JSON reader gets the sentence too
            print(json.dumps({"status": "failed", "error": message, "kind": "schema"
                              if isinstance(err, StoreSchemaError) else "unavailable"}))
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
