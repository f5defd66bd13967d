"""The layers contract holds (`tests/layout.py`), and the checker sees what it must refuse."""

from __future__ import annotations

from tests import layout


def test_the_code_keeps_the_layers_contract():
    assert layout.breaches() == []


def test_the_checker_counts_imports_inside_functions_and_sees_every_package():
    mods = layout.modules()
    graph = layout.imports(mods)
    assert {"regrow", "regrow.app.cli", "regrow.runtime.control", "regrow.flows.training",
            "regrow.tasks.store.database", "regrow.configs.schema"} <= set(mods)
    # regrow.app.cli imports the training report only inside a command's function.
    assert "regrow.app.report" in graph["regrow.app.cli"]
    assert layout.layer("regrow") == "app" and layout.layer("regrow.tasks.data.ingest") == "tasks"


def test_the_checker_reports_an_upward_import_and_a_cycle():
    graph = {"regrow.tasks.a": {"regrow.flows.b"}, "regrow.flows.b": {"regrow.tasks.a"}}
    assert layout.upward(graph) == ["regrow.tasks.a (tasks) imports regrow.flows.b (flows)"]
    assert layout.cycles(graph) == [["regrow.flows.b", "regrow.tasks.a"]]
