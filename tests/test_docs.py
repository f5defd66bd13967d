"""The docs site builds strictly, its generated references cover the code, the README stays short.

The site is built the way `make docs` builds it: docs/gen_reference.py, then
`mkdocs build --strict` (here into a temporary folder), where a broken link, a missing page or
a missing anchor is an error (mkdocs.yml's `validation`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from regrow.app.cli import build_parser
from regrow.configs.schema import Config

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}


def _mkdocs(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=config.parent, env=ENV, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def generated() -> Path:
    """docs/reference/, as docs/gen_reference.py writes it."""
    out = subprocess.run([sys.executable, "docs/gen_reference.py"], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return REFERENCE


def test_the_site_builds_strictly(generated, tmp_path):
    out = _mkdocs(ROOT / "mkdocs.yml", tmp_path / "site")
    assert out.returncode == 0, f"mkdocs build --strict failed:\n{out.stdout}\n{out.stderr}"
    for page in ("index.html", "reference/cli/index.html", "reference/config/index.html",
                 "reference/api/index.html", "reference/modules/index.html",
                 "reference/benchmarks/index.html", "architecture/index.html"):
        assert (tmp_path / "site" / page).is_file(), page
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    for name in ("train", "score", "labels", "watch", "retrain", "status", "TrainingOutcome"):
        assert f'id="regrow.{name}"' in api or f">{name}<" in api, name


def test_a_broken_link_or_anchor_fails_the_build(generated, tmp_path):
    """The strict build is what catches them: a copy of the site with one of each fails."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    config = (ROOT / "mkdocs.yml").read_text().replace("paths: [.]", f"paths: [{ROOT}]")
    (tmp_path / "mkdocs.yml").write_text(config)
    index = tmp_path / "docs" / "index.md"
    index.write_text(index.read_text() + "\n[gone](no-such-page.md) [lost](commands.md#no-such"
                     "-anchor)\n")
    out = _mkdocs(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert out.returncode != 0
    assert "no-such-page.md" in out.stderr + out.stdout
    assert "no-such-anchor" in out.stderr + out.stdout


def test_the_readme_is_a_front_page_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    # the project's contract: what `make demo` and `make test` do
    assert ("make demo     # creates .venv, installs everything (pinned, via uv: seconds), runs "
            "`regrow demo`") in text
    assert ("make test     # installs the same environment plus dev tools, runs the whole test "
            "suite") in text


def _commands(parser: argparse.ArgumentParser, path: str = "regrow"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{path} {name}", sub
                yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_is_in_the_cli_reference(generated):
    page = (generated / "cli.md").read_text()
    headings = set(re.findall(r"^## `(regrow[^`]*)`", page, re.M))
    commands = dict(_commands(build_parser()))
    assert set(commands) <= headings, sorted(set(commands) - headings)
    for name, parser in commands.items():
        section = page.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help") and action.help != argparse.SUPPRESS:
                    assert option in section, f"{name}: {option}"


def test_every_config_key_is_in_the_config_reference(generated):
    page = (generated / "config.md").read_text()
    top = page.split("## Top-level keys", 1)[1].split("\n## ", 1)[0]
    for key in Config.model_fields:
        assert f"| `{key}` |" in top, key
    for key in Config.model_fields["monitoring"].annotation.model_fields:
        assert f"| `monitoring.{key}` |" in page, key


def test_the_benchmark_page_shows_recorded_runs_and_names_the_rest(tmp_path, monkeypatch):
    import tests.bench as bench

    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    monkeypatch.setattr(sys, "argv", ["tests/bench/__main__.py", "governance", "--repeats", "2"])
    bench.record("governance", [{"command": "`regrow status`", "runs": 2, "median s": 1.23456}],
                 "`regrow --help`", tables={"extra": [{"a": None}]}, notes=["a note"])
    data = json.loads((tmp_path / "governance.json").read_text())
    assert data["command"] == "python -m tests.bench governance --repeats 2"
    assert data["rows"][0]["median s"] == 1.2346 and data["machine"]["cores"]
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    monkeypatch.setattr(gen, "BENCH_RESULTS", tmp_path)
    page = gen.benchmarks_page()
    governance = page.split("## `governance`", 1)[1].split("\n## ", 1)[0]
    assert "| `regrow status` | 2 | 1.2346 |" in governance
    assert "python -m tests.bench governance --repeats 2" in governance
    assert "**extra**" in governance and "a note" in governance
    training = page.split("## `training`", 1)[1].split("\n## ", 1)[0]
    assert "Not run yet" in training
