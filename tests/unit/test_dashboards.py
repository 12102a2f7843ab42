"""The committed Grafana dashboards: generated without drift, and linted like dashboard-linter."""

from __future__ import annotations

from typing import Any

import pytest

from exporter.telemetry.catalog import all_specs
from grafana.boards import DASHBOARDS
from grafana.generate import README, README_MARKERS, panel_table, render

from .monitoring_assets import DASHBOARD_DIR, dashboards, declared_names, panels, selectors

BOARDS = dashboards()
DS = "${datasource}"
_COUNTER_SUFFIXES = ("_total", "_bucket", "_count", "_sum")
_PER_DEPLOYMENT = {s.exposed_name for s in all_specs() if "deployment" in s.labels}


def _targets() -> list[tuple[str, str, dict[str, Any]]]:
    """Return ``(dashboard, panel title, target)`` for every query of every dashboard."""
    return [
        (name, panel["title"], target)
        for name, board in BOARDS.items()
        for panel in panels(board)
        for target in panel["targets"]
    ]


def _variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the dashboard's template variables by name."""
    return {v["name"]: v for v in board["templating"]["list"]}


def test_committed_json_is_the_generators_output() -> None:
    """Every dashboard file equals what `make dashboards` writes, and there is no stray file."""
    assert {p.stem for p in DASHBOARD_DIR.glob("*.json")} == set(DASHBOARDS)
    for name in DASHBOARDS:
        committed = (DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8")
        assert committed == render(name), f"{name}.json drifted: run `make dashboards`"


def test_readme_lists_every_panel_of_every_dashboard() -> None:
    """The README's dashboards table is the generator's (run `make dashboards` on drift)."""
    text = README.read_text(encoding="utf-8")
    start, end = README_MARKERS
    assert f"{start}\n{panel_table()}\n{end}" in text


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_one_datasource_variable_and_no_exported_inputs(name: str) -> None:
    """Exactly one `datasource` variable; no `${DS_*}` placeholder and no `__inputs`."""
    board = BOARDS[name]
    sources = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert [v["name"] for v in sources] == ["datasource"]
    assert sources[0]["query"] == "prometheus"
    text = (DASHBOARD_DIR / f"{name}.json").read_text(encoding="utf-8")
    assert "${DS_" not in text
    assert "__inputs" not in board


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_job_instance_deployment_are_chained_multi_select_variables(name: str) -> None:
    """The job, instance, deployment chain: multi-select, `.+` as all, refreshed with the range."""
    variables = _variables(BOARDS[name])
    for var in ("job", "instance", "deployment"):
        v = variables[var]
        assert v["type"] == "query"
        assert v["datasource"]["uid"] == DS
        assert v["multi"] is True
        assert v["includeAll"] is True
        assert v["allValue"] == ".+"
        assert v["refresh"] == 2  # on time range change
    assert '"$job"' in variables["instance"]["query"]
    assert '"$job"' in variables["deployment"]["query"]
    assert '"$instance"' in variables["deployment"]["query"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_has_title_description_unit_and_datasource(name: str) -> None:
    """Each panel names itself, explains itself, has a unit and reads the datasource variable."""
    found = list(panels(BOARDS[name]))
    assert found
    for panel in found:
        assert panel.get("title"), panel
        assert panel.get("description"), panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": DS}, panel["title"]
        assert panel["targets"], panel["title"]


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_panel_description_opens_with_the_question_it_answers(name: str) -> None:
    """The README lists each panel's question: the first sentence of its description."""
    for panel in panels(BOARDS[name]):
        question, mark, rest = panel["description"].partition("? ")
        assert mark, panel["title"]
        assert "." not in question, panel["title"]  # one question, not a statement before it
        assert rest.endswith("."), panel["title"]


def test_every_query_has_a_ref_id_and_reads_the_datasource_variable() -> None:
    """Each target has a unique refId within its panel and the datasource variable."""
    for name, board in BOARDS.items():
        for panel in panels(board):
            ids = [t.get("refId") for t in panel["targets"]]
            assert all(ids), (name, panel["title"])
            assert len(set(ids)) == len(ids), (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == DS


def test_every_selector_carries_the_job_instance_and_deployment_matchers() -> None:
    """Each series selector filters by $job and $instance, and by $deployment where it has one."""
    for name, title, target in _targets():
        found = selectors(target["expr"])
        assert found, (name, title)
        for s in found:
            where = (name, title, s.name)
            assert 'job=~"$job"' in s.matchers, where
            assert 'instance=~"$instance"' in s.matchers, where
            if s.name in _PER_DEPLOYMENT:
                assert 'deployment=~"$deployment"' in s.matchers, where


def test_counters_appear_only_inside_rate_or_increase_over_the_rate_interval() -> None:
    """A counter is never plotted raw, and every range is `$__rate_interval`."""
    for name, title, target in _targets():
        expr = target["expr"]
        assert "[" not in expr.replace("[$__rate_interval]", ""), (name, title)
        for s in selectors(expr):
            if s.name.endswith(_COUNTER_SUFFIXES):
                assert s.before.rstrip().endswith(("rate(", "increase(")), (name, title, s.name)
                assert s.after.startswith("[$__rate_interval]"), (name, title, s.name)


def test_every_metric_a_panel_reads_is_declared_by_the_daemon() -> None:
    """No panel queries a name the daemon's metrics catalog does not declare."""
    declared = declared_names()
    used = {(s.name, title) for _, title, t in _targets() for s in selectors(t["expr"])}
    assert not {u for u in used if u[0] not in declared}
