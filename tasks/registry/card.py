"""Model cards: one page per registered version, built only from what regrow recorded.

The sources are the version's MLflow run (tags, params, metrics and the artifacts
``config/config.yaml``, ``features.json``, ``candidates.json``, ``validation/report.json``,
``gate/decision.json``), the version's own tags (approval) and the monitoring store (alias
history, drift checks). A card regenerated later therefore shows the same training facts plus
whatever happened to the version since. The card is one typed structure rendered twice: as
Markdown and as a small self-contained HTML page (the jinja2 template
``templates/model_card.html.j2`` beside this module, autoescaped).

Text from outside regrow -- trigger reasons, refs and actors, approvers and their reasons,
alias moves recorded from other tools, a data path a request chose -- is marked `Outside` and
rendered inert by `tasks.policy.untrusted` (Markdown syntax and control characters escaped);
every cell of the HTML page has its control characters made visible too.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup, escape

from regrow.tasks.policy.untrusted import markdown, visible
from regrow.tasks.registry.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    ModelVersionInfo,
    Registry,
)
from regrow.tasks.store.database import Store, version_drift_checks

CARD_MD, CARD_HTML = "card/model_card.md", "card/model_card.html"
# Beside this module (resolved: the strict editable install links each file on its own, so
# a development checkout finds them where they are; a wheel ships them as package data).
TEMPLATES = Path(__file__).resolve().parent / "templates"
LINK_PREFIX = "Model card: "
_COMPARATORS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than",
                "==": "equal to"}


class CardError(ValueError):
    """The card cannot be built: no such model or version, or no champion to default to."""


@dataclass(frozen=True)
class Table:
    """A table block: header names and rows of already formatted cells."""

    headers: list[str]
    rows: list[list[str]]


class Outside(str):
    """Text from outside regrow, shown as it is and never as Markdown or HTML."""

    __slots__ = ()


@dataclass(frozen=True)
class Text:
    """A paragraph of regrow's own words with `Outside` parts."""

    parts: tuple[str, ...]


Block = str | Table | list[str] | Text  # a paragraph, a table, a bullet list


@dataclass(frozen=True)
class Section:
    """A titled part of the card."""

    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass(frozen=True)
class ModelCard:
    """A model card: what one registered version is, how it was made and what became of it."""

    model: str
    version: str
    run_id: str
    generated_at: str
    sections: list[Section]

    @property
    def title(self) -> str:
        """The card's heading."""
        return f"Model card: {self.model} v{self.version}"

    @property
    def intro(self) -> str:
        """The line under the heading: when and from what the card was built."""
        return (f"Generated {self.generated_at} from MLflow run {self.run_id}, the version's tags "
                f"and the monitoring store. `regrow card CONFIG --version {self.version}` rebuilds "
                "it with the latest approvals, alias moves and drift checks.")

    def to_markdown(self) -> str:
        """The card as Markdown (GitHub-flavoured tables)."""
        out = [f"# {self.title}", "", self.intro, ""]
        for sec in self.sections:
            out += [f"## {sec.title}", ""]
            for block in sec.blocks:
                if isinstance(block, Table):
                    out.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                    out.append("|" + "---|" * len(block.headers))
                    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
                elif isinstance(block, list):
                    out += [f"- {_md_cell(item)}" for item in block]
                elif isinstance(block, Text):
                    out.append("".join(markdown(p) if isinstance(p, Outside) else p
                                       for p in block.parts))
                else:
                    out.append(block)
                out.append("")
        return "\n".join(out).rstrip() + "\n"

    def to_html(self) -> str:
        """The card as one self-contained HTML page (inline style, no scripts, no fetches),
        rendered from ``templates/model_card.html.j2``."""
        return _html_template().render(card=self)


def _md_cell(value: str) -> str:
    if isinstance(value, Outside):
        return markdown(value)
    return visible(str(value).replace("\n", " ").replace("|", "\\|"))


def _code_spans(value: Any) -> Markup:
    """Escaped text (control characters made visible); `code spans` become <code>."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(visible(value)))))


@functools.cache
def _html_template() -> jinja2.Template:
    """The card's HTML page template, loaded once. Autoescaped: a block is a `table`, a list
    of `bullets` or a paragraph, and text is escaped unless it passes `code_spans`."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["code_spans"] = _code_spans
    env.filters["shown"] = visible  # then autoescaped
    env.tests["table"] = lambda block: isinstance(block, Table)
    env.tests["bullets"] = lambda block: isinstance(block, list)
    env.tests["text"] = lambda block: isinstance(block, Text)
    env.tests["outside"] = lambda part: isinstance(part, Outside)
    return env.get_template("model_card.html.j2")


def fmt(value: Any) -> str:
    """A number for people: integers as they are, other numbers to 4 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value) or value == 0:
            return str(value)
        digits = min(10, max(0, 3 - math.floor(math.log10(abs(value)))))
        return f"{value:.{digits}f}"
    return str(value)


def comparator_text(comparator: str | None) -> str:
    """``>=`` -> ``at least`` and so on (unknown comparators are returned as they are)."""
    return _COMPARATORS.get(comparator or "", comparator or "")


def _when(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ", timespec="seconds") + " UTC"
    return str(value)


def _ms(value: int | None) -> str:
    return "-" if value is None else _when(dt.datetime.fromtimestamp(value / 1000, dt.UTC))


@dataclass(frozen=True)
class _Records:
    """Everything recorded about one version, read once."""

    info: ModelVersionInfo
    run: dict[str, Any]
    config: Any  # configs.schema.Config, or None when the recorded config cannot be re-read
    config_error: str | None
    features: dict[str, Any] | None
    candidates: list[dict[str, Any]]
    validation: dict[str, Any] | None
    decision: dict[str, Any] | None
    history: list[dict[str, Any]]
    checks: list[dict[str, Any]]

    @property
    def tags(self) -> dict[str, str]:
        return self.run["tags"]

    @property
    def params(self) -> dict[str, str]:
        return self.run["params"]

    @property
    def metrics(self) -> dict[str, float]:
        return self.run["metrics"]

    @property
    def metric(self) -> str:
        return (self.info.tags.get("regrow.metric")
                or (self.config.gate.primary_metric if self.config else "")
                or "primary metric")


def _recorded_config(text: str | None) -> tuple[Any, str | None]:
    """The config the run recorded (with its overrides applied), validated again."""
    from regrow.configs.schema import ConfigError, apply_overrides, parse_config

    if not text:
        return None, "the run recorded no config"
    try:
        data = yaml.safe_load(text)
        if isinstance(data, dict) and isinstance(data.get("overrides"), dict):
            data = apply_overrides(data, data.pop("overrides"))
        return parse_config(data, "config/config.yaml"), None
    except (yaml.YAMLError, ConfigError) as err:
        return None, str(err).splitlines()[0]


def _read(registry: Registry, store: Store, info: ModelVersionInfo) -> _Records:
    run_id = info.run_id or ""
    config, error = _recorded_config(registry.read_text_artifact(run_id, "config/config.yaml"))
    features = registry.read_json_artifact(run_id, "features.json")
    if not isinstance(features, dict):  # trained before features.json: the reference knows roles
        features = registry.read_json_artifact(run_id, "reference/meta.json")
    history = [h for h in store.alias_history(info.name)
               if info.version in (h["old_version"], h["new_version"])]
    return _Records(
        info=info, run=registry.run_info(run_id), config=config, config_error=error,
        features=features if isinstance(features, dict) else None,
        candidates=registry.read_json_artifact(run_id, "candidates.json") or [],
        validation=registry.read_json_artifact(run_id, "validation/report.json"),
        decision=registry.read_json_artifact(run_id, "gate/decision.json"),
        history=history, checks=version_drift_checks(store, info.name, info.version))


def resolve_version(registry: Registry, model: str, version: str | None) -> ModelVersionInfo:
    """The version to describe: the given one, or the champion.

    Raises:
        CardError: no champion and no version given; the version does not exist; the version
            was not registered from a run.
    """
    if version is None:
        version = registry.alias_version(model, CHAMPION)
        if version is None:
            raise CardError(f"model {model!r} has no champion; pass --version N "
                            "to describe another version")
    info = registry.find_version(model, str(version))
    if info is None:
        known = registry.version_numbers(model)
        have = f"its versions are {', '.join(known)}" if known else "it has no registered versions"
        raise CardError(f"model {model!r} has no version {version} ({have})")
    if not info.run_id:
        raise CardError(f"model {model!r} v{version} was not registered from a run; "
                        "there is nothing recorded to describe")
    return info


def build_card(registry: Registry, store: Store, model: str, version: str | None = None,
               *, now: dt.datetime | None = None) -> ModelCard:
    """Build the card of one version (default: the champion) from the current records.

    Raises:
        CardError: see `resolve_version`.
    """
    info = resolve_version(registry, model, version)
    rec = _read(registry, store, info)
    sections: list[Section | None] = [
        _overview(rec), _data(rec), _features(rec), _candidates(rec), _holdout(rec), _gate(rec),
        _trigger(rec), _approval(rec), _shadow(rec), _aliases(rec), _drift(rec)]
    generated = _when(now or dt.datetime.now(dt.UTC))
    return ModelCard(model, info.version, info.run_id or "", generated,
                     [s for s in sections if s is not None])


# ----------------------------------------------------------------------------- sections

def _overview(rec: _Records) -> Section:
    t, info = rec.tags, rec.info
    cfg = rec.config
    rows = [
        ["model", f"{info.name} v{info.version}"],
        ["registered", _ms(info.created_ms)],
        ["aliases now", ", ".join(sorted(info.aliases)) or "none"],
        ["task", f"{cfg.data.task}, target {cfg.data.target}" if cfg else "-"],
        ["primary metric", rec.metric],
        ["gate verdict", info.tags.get("regrow.gate.verdict") or t.get("regrow.gate.verdict", "-")],
        ["MLflow run", f"{info.run_id} ({rec.run['status']})"],
        ["model URI", info.source or "-"],
        ["config", f"{t.get('regrow.config_path', '-')} (sha256 {t.get('regrow.config_sha256', '-')})"],
        ["regrow version", t.get("regrow.version", "-")],
        ["git commit", t.get("regrow.git_commit", "-")],
        ["seed", t.get("regrow.seed", "-")],
    ]
    blocks: list[Block] = [Table(["", ""], rows)]
    if rec.config_error:
        blocks.append(Text(("The recorded config could not be read again (",
                            Outside(rec.config_error), "); the sections below use the run's "
                            "tags, params and artifacts only.")))
    return Section("Overview", blocks)


def _data(rec: _Records) -> Section:
    t, p = rec.tags, rec.params
    rows = [["source", Outside(t.get("regrow.data.source", "-"))],
            ["fingerprint (sha256)", t.get("regrow.data.fingerprint", "-")],
            ["rows", t.get("regrow.data.rows", "-")],
            ["time range", f"{t.get('regrow.data.time_min') or '-'} .. {t.get('regrow.data.time_max') or '-'}"
             if t.get("regrow.data.time_min") else "no time column"]]
    if "split.method" in p:
        cutoff = p.get("split.cutoff")
        rows.append(["split", f"{p['split.method']}: {p.get('split.train_rows', '-')} training / "
                              f"{p.get('split.holdout_rows', '-')} holdout rows"
                     + (f", holdout from {cutoff}" if cutoff and cutoff != "None" else "")])
    v = rec.validation
    if isinstance(v, dict) and isinstance(v.get("outcomes"), list):
        met = sum(1 for o in v["outcomes"] if o.get("success"))
        rows.append(["validation", f"{met}/{len(v['outcomes'])} expectations met on "
                                   f"{v.get('rows', '-')} rows (Great Expectations)"])
    return Section("Data", [Table(["", ""], rows)])


def _listed_roles(rec: _Records) -> dict[str, list[str]]:
    """The inputs by role: features.json, else the reference's meta, else the run params."""
    f = rec.features or {}
    roles: dict[str, list[str]] = {}
    for role in ("numeric", "categorical", "datetime"):
        value = f.get(role)
        if value is None and f"features.{role}" in rec.params:
            try:
                value = ast.literal_eval(rec.params[f"features.{role}"])
            except (ValueError, SyntaxError):
                value = None
        roles[role] = [str(c) for c in value or []]
    return roles


def _features(rec: _Records) -> Section:
    cfg = rec.config
    roles = _listed_roles(rec)
    rows = []
    for role, cols in roles.items():
        listed = set(getattr(cfg.features, role)) if cfg else set()
        for col in cols:
            how = f"listed in features.{role}" if col in listed else (
                "inferred from its dtype" if cfg else "-")
            rows.append([col, role, how])
    derived = [d for d in (rec.features or {}).get("derived") or [] if isinstance(d, dict)]
    sources = [str(c) for c in (rec.features or {}).get("sources") or []]
    for col in sources:
        readers = [str(d.get("name")) for d in derived if col in (d.get("sources") or [])]
        rows.append([col, "source", "read by derived feature(s) " + ", ".join(readers)])
    blocks: list[Block] = [Table(["column", "role", "how"], rows) if rows
                           else "No feature roles were recorded for this run."]
    if derived:
        blocks.append("Derived features (computed inside the model's Pipeline, fitted on the "
                      "training part; see the run's features.md for their statistics):")
        blocks.append(Table(["feature", "outputs", "transform", "sources", "role"], [
            [str(d.get("name")), ", ".join(map(str, d.get("outputs") or [])),
             str(d.get("transform")), ", ".join(map(str, d.get("sources") or [])),
             str(d.get("role"))] for d in derived]))
    notes = [str(n) for n in (rec.features or {}).get("notes") or []]
    unused: dict[str, list[str]] = {}
    if cfg:
        d = cfg.data
        unused.setdefault(d.target, []).append(f"target ({d.task})")
        if d.id_column:
            unused.setdefault(d.id_column, []).append("id column: names rows, not a feature")
        if d.time_column and d.time_column not in roles["datetime"]:
            unused.setdefault(d.time_column, []).append("time column: orders the split")
        for col in cfg.features.drop:
            unused.setdefault(col, []).append("listed in features.drop")
    inputs = {c for cols in roles.values() for c in cols} | set(sources)
    unused = {c: why for c, why in unused.items() if c not in sources}
    for note in notes:
        m = re.match(r"column '(.+?)' skipped: (.*)", note)
        if m:
            unused.setdefault(m.group(1), []).append(f"skipped: {m.group(2)}")
    for col in (rec.features or {}).get("columns") or []:
        if col not in inputs and col not in unused:
            unused[col] = ["not listed, and features.infer is off" if cfg and not cfg.features.infer
                           else "not used"]
    if unused:
        blocks.append("Columns the model does not read:")
        blocks.append(Table(["column", "why"], [[c, "; ".join(why)] for c, why in unused.items()]))
    other = [n for n in notes if not re.match(r"column '(.+?)' skipped: ", n)]
    if other:
        blocks.append(other)
    if cfg:
        f = cfg.features
        blocks.append(f"Preprocessing: numeric imputation {f.numeric_imputation}, scaling {f.scaling}; "
                      f"categorical imputation {f.categorical_imputation}, one-hot encoding "
                      f"(unknown categories: {f.one_hot.handle_unknown}).")
    return Section("Features", blocks)


def _params_text(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in sorted(params.items()))  # as configured, unrounded


def _candidates(rec: _Records) -> Section:
    best = rec.params.get("best_candidate")
    rows = []
    for c in rec.candidates:
        name = c.get("name", "?")
        rows.append([name + (" (chosen)" if name == best else ""), str(c.get("estimator", "-")),
                     f"{fmt(c.get('cv_score'))} +- {fmt(c.get('cv_std'))}",
                     _params_text(c.get("best_params")), fmt(c.get("fit_seconds"))])
    folds = f"{rec.config.candidates.cv_folds}-fold " if rec.config else ""
    blocks: list[Block] = [f"Each candidate was tuned by {folds}cross-validation on the training "
                           f"part; the score is the mean +- standard deviation of {rec.metric} "
                           "over the folds at the best parameters."]
    blocks.append(Table(["candidate", "estimator", f"CV {rec.metric}", "best parameters",
                         "fit seconds"], rows) if rows else "No candidates were recorded.")
    return Section("Candidates", blocks)


def _holdout(rec: _Records) -> Section:
    m, metric = rec.metrics, rec.metric
    names = sorted(k.removeprefix("holdout_") for k in m
                   if k.startswith("holdout_") and not k.endswith(("_ci_low", "_ci_high")))
    champ = (rec.decision or {}).get("champion_version")
    has_champ = any(k.startswith("champion_holdout_") for k in m)
    head = ["metric", f"v{rec.info.version}"] + ([f"champion v{champ} (same holdout)"] if has_champ else [])
    rows = []
    for name in names:
        row = [name + (" (primary)" if name == metric else ""), fmt(m[f"holdout_{name}"])]
        if has_champ:
            row.append(fmt(m.get(f"champion_holdout_{name}")))
        rows.append(row)
    blocks: list[Block] = [Table(head, rows) if rows else "No holdout metrics were recorded."]
    lo, hi = m.get(f"holdout_{metric}_ci_low"), m.get(f"holdout_{metric}_ci_high")
    if lo is not None and hi is not None:
        n = f" over {rec.config.gate.bootstrap_samples} resamples" if rec.config else ""
        blocks.append(f"{metric}: {fmt(m.get(f'holdout_{metric}'))}, bootstrap 95% interval "
                      f"{fmt(lo)} .. {fmt(hi)}{n} of the holdout.")
    slices = [r for r in (rec.decision or {}).get("rules", []) if str(r.get("rule")).startswith("slice:")]
    if slices:
        srows = []
        for r in slices:
            detail = r.get("detail") or ""
            rows_m = re.match(r"(\d+) rows:? ?", detail)
            srows.append([str(r["rule"]).removeprefix("slice:"), rows_m.group(1) if rows_m else "-",
                          fmt(r.get("measured")), detail[rows_m.end():] if rows_m else detail])
        blocks += ["Per slice:", Table(["slice", "rows", metric, "note"], srows)]
    return Section("Holdout evaluation", blocks)


def _gate(rec: _Records) -> Section:
    d = rec.decision
    if not isinstance(d, dict):
        return Section("Gate decision", ["No gate decision was recorded."])
    rows = []
    for r in d.get("rules", []):
        thr = r.get("threshold")
        need = "-" if thr is None else f"{comparator_text(r.get('comparator'))} {fmt(thr)}"
        rows.append([str(r.get("rule")), str(r.get("metric")), fmt(r.get("measured")), need,
                     "pass" if r.get("passed") else "FAIL", r.get("detail") or ""])
    against = (f"compared with champion v{d['champion_version']} on the same holdout"
               if d.get("champion_version") else "no champion to compare with")
    blocks: list[Block] = [f"Verdict: {d.get('verdict', '-')} ({against}"
                           + ("; borderline: passes only within the allowed regression" if d.get("borderline")
                              else "") + ").",
                           Table(["rule", "metric", "measured", "required", "result", "detail"], rows)]
    if d.get("reasons"):
        blocks.append([str(r) for r in d["reasons"]])
    return Section("Gate decision", blocks)


def _trigger(rec: _Records) -> Section:
    t = rec.tags
    rows = [[label, Outside(t.get(f"regrow.{key}", "-"))] for label, key in (
        ("kind", "trigger"), ("reason", "trigger_reason"), ("reference", "trigger_ref"),
        ("actor", "actor"))]
    return Section("Why it was trained", [Table(["", ""], rows)])


def _approval(rec: _Records) -> Section:
    vt = rec.info.tags
    blocks: list[Block] = []
    if "regrow.approval" in vt:
        rows = [[label, Outside(vt.get(f"regrow.{key}", "-"))] for label, key in (
            ("decision", "approval"), ("approver", "approver"), ("reason", "approval_reason"),
            ("via", "approval_via"))]
        blocks.append(Table(["", ""], rows))
    if "regrow.gate_override" in vt:
        blocks.append(Text(("The gate was overridden to promote this version by hand: ",
                            Outside(vt["regrow.gate_override"]), ".")))
    if not blocks:
        mode = rec.config.promotion.mode if rec.config else None
        text = "No approval by a person is recorded on this version"
        text += f" (promotion mode {mode}" + ("; the gate decides alone)." if mode == "auto" else ").") \
            if mode else "."
        blocks.append(text)
    return Section("Approval", blocks)


def _shadow(rec: _Records) -> Section | None:
    """A version that is or was a challenger in shadow (``promotion.mode: shadow``): its trial
    as the judgement step recorded it in the version's tags (`tasks.registry.challenger`; the
    run keeps the tags of the start), and when it started, took over or was retired (alias
    history). None for a version that never was in a shadow trial."""
    from regrow.tasks.registry import challenger as ch

    tags = rec.info.tags if ch.TAG_STATE in rec.info.tags else rec.tags
    state = tags.get(ch.TAG_STATE)
    if not state:
        return None
    v, champion = rec.info.version, tags.get(ch.TAG_CHAMPION) or "-"
    try:
        windows = [w for w in ch.windows_of(tags) if w.counted and w.gain is not None]
    except (ValueError, TypeError):
        windows = []
    trial = rec.config.promotion.shadow if rec.config else None
    ours = [h for h in rec.history if str(h["reason"] or "").startswith(ch.REASON_PREFIX)]
    started = next((h for h in ours if h["alias"] == CHALLENGER and h["new_version"] == v), None)
    took_over = next((h for h in reversed(ours)
                      if h["alias"] == CHAMPION and h["new_version"] == v), None)
    left = next((h for h in reversed(rec.history) if h["alias"] == CHALLENGER
                 and h["old_version"] == v and h["new_version"] != v), None)
    need = f"{trial.windows} window(s)" if trial else "its windows"
    if state == ch.RUNNING:
        text = (f"v{v} passed its gate and scores in shadow beside champion v{champion}; it "
                f"takes over only if it beats v{champion} on matured labels of {need}.")
        decided = None
    elif state == ch.PROMOTED and took_over is not None:
        text = (f"v{v} took over as champion from v{champion} after its shadow trial: it beat "
                f"v{champion} on matured labels of {need}.")
        decided = took_over
    elif state == ch.PROMOTED:
        text = (f"v{v} beat champion v{champion} in its shadow trial but did not take over: "
                "champion had moved meanwhile.")
        decided = None
    else:
        text = (f"v{v} was retired from its shadow trial against champion v{champion} and no "
                "longer scores.")
        decided = left
    rows = [["state", state], ["judged against", f"champion v{champion}"],
            ["started", _when(started["at"]) if started else "-"],
            ["windows judged", f"{len(windows)}" + (f" of {trial.windows}" if trial else "")],
            ["rows counted up to", tags.get(ch.TAG_UNTIL) or "-"],
            ["judgement", tags.get(ch.TAG_DETAIL) or "-"],
            ["decided", _when(decided["at"]) if decided else "-"]]
    blocks: list[Block] = [text, Table(["", ""], rows)]
    if windows:
        level = f"{trial.confidence:.0%} " if trial else ""
        blocks.append(f"Each window: the challenger's {rec.metric} gain over the champion on "
                      f"the same matured rows, with its {level}paired bootstrap interval "
                      "(positive: the challenger is better).")
        blocks.append(Table(["window", "rows", f"{rec.metric} gain", "interval"], [
            [str(i), str(w.rows), f"{w.gain:+.4f}",
             "-" if w.low is None or w.high is None else f"{w.low:+.4f} .. {w.high:+.4f}"]
            for i, w in enumerate(windows, 1)]))
    return Section("Shadow trial", blocks)


def _aliases(rec: _Records) -> Section:
    v = rec.info.version
    rows = []
    for h in rec.history:
        old, new = h["old_version"], h["new_version"]
        change = f"{f'v{old}' if old else '(none)'} -> {f'v{new}' if new else '(removed)'}"
        what = "to this version" if new == v else "away from this version"
        rows.append([_when(h["at"]), h["alias"], f"{change} ({what})", Outside(h["actor"] or "-"),
                     Outside(h["reason"] or "-"), h.get("run_id") or "-"])
    if not rows:
        return Section("Alias history", ["No alias has pointed at this version."])
    return Section("Alias history", [Table(["when", "alias", "move", "actor", "reason", "run"], rows)])


def _performance(raw: Any) -> str:
    try:
        perf = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return "-"
    if not isinstance(perf, dict):
        return "-"
    if perf.get("current") is None:
        return perf.get("note") or f"{perf.get('labelled_rows', 0)} labelled rows"
    basis = ("estimated without labels" if perf.get("estimated")
             else f"on {perf.get('labelled_rows')} labelled rows")
    return (f"{perf.get('metric')} {fmt(perf.get('current'))} vs {fmt(perf.get('reference'))} "
            f"{basis}" + (" (degraded)" if perf.get("degraded") else ""))


def _drift(rec: _Records) -> Section:
    champion = any(h["alias"] == CHAMPION and h["new_version"] == rec.info.version for h in rec.history)
    if not rec.checks:
        return Section("Drift checks", ["No drift check has looked at this version yet." if champion
                                        else "Not promoted to champion: no drift checks."])
    rows = []
    for c in rec.checks:
        try:
            cols = ", ".join(json.loads(c["drifted_columns"] or "[]")) or "-"
        except ValueError:
            cols = str(c["drifted_columns"])
        rows.append([str(c["id"]), _when(c["checked_at"]), c["verdict"], str(c["window_rows"]),
                     fmt(c["drift_share"]), cols, fmt(c["prediction_drift"]),
                     _performance(c["performance"]),
                     "-" if c["retrain_request_id"] is None else f"#{c['retrain_request_id']}",
                     c["report_path"] or "-"])
    head = ["check", "when", "verdict", "window rows", "drift share", "drifted columns",
            "prediction drift", "performance", "retrain request", "report"]
    return Section("Drift checks", [Table(head, rows)])


# ----------------------------------------------------------------------------- publishing

@dataclass(frozen=True)
class CardPublication:
    """Where a card was logged, or why it was not (a card never fails a training)."""

    markdown_uri: str | None
    html_uri: str | None
    notes: list[str] = field(default_factory=list)


def with_card_link(description: str, link: str) -> str:
    """A version description with exactly one ``Model card: ...`` line, the given one, last."""
    kept = [line for line in (description or "").splitlines() if not line.startswith(LINK_PREFIX)]
    return "\n".join([*kept, f"{LINK_PREFIX}{link}"]).strip()


def publish_card(registry: Registry, store: Store, model: str, version: str,
                 run_id: str | None = None) -> CardPublication:
    """Build the card of a new version, log it on the version's run (`CARD_MD`, `CARD_HTML`)
    and link it from the version's description.

    Never raises: a failure is returned as a note and, when the run is known (`run_id`, or
    found through the version), tagged on it as ``regrow.card_error``.
    """
    try:
        card = build_card(registry, store, model, version)
        run_id = card.run_id
        registry.log_text(run_id, card.to_markdown(), CARD_MD)
        registry.log_text(run_id, card.to_html(), CARD_HTML)
        base = registry.run_place(run_id)[1].rstrip("/")
        md, page = f"{base}/{CARD_MD}", f"{base}/{CARD_HTML}"
        info = registry.version_info(model, version)
        registry.set_version_description(model, version,
                                         with_card_link(info.description, f"{md} (HTML: {page})"))
        return CardPublication(md, page)
    except Exception as err:  # noqa: BLE001 - the card is documentation; the training stands
        note = f"model card not written: {type(err).__name__}: {err}"
        if run_id:
            try:
                registry.set_tags(run_id, {"regrow.card_error": note})
            except Exception:  # noqa: BLE001 - the note is still returned
                pass
        return CardPublication(None, None, [note])
