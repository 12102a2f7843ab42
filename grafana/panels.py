"""Shared builders: the datasource and chained variables, queries and panels in house style.

Every query reads the single ``datasource`` variable and carries the ``job`` / ``instance``
(and, for per-deployment series, ``deployment``) matchers, so one dashboard serves any number
of exporters and deployments. ``{sel}`` in an expression stands for the full matcher set,
``{isel}`` for the process-wide one (series without a ``deployment`` label).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, stat, timeseries
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh, VariableSort

__all__ = ["DATASOURCE", "ISEL", "SEL", "board", "series_panel", "stat_panel"]

#: Every panel, query and variable points at this: the ``datasource`` variable.
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
ISEL = 'job=~"$job", instance=~"$instance"'
SEL = ISEL + ', deployment=~"$deployment"'


def _expr(template: str) -> str:
    """Fill ``{sel`` / ``{isel`` in a query template (more matchers may follow: ``{sel, x}``)."""
    return template.replace("{sel", "{" + SEL).replace("{isel", "{" + ISEL)


def _variable(name: str, query: str, description: str) -> dashboard.QueryVariable:
    """Return a multi-select query variable with ``.+`` as its all value."""
    return (
        dashboard.QueryVariable(name)
        .label(name)
        .description(description)
        .datasource(DATASOURCE)
        .query(query)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
    )


def board(uid: str, title: str, description: str) -> dashboard.Dashboard:
    """Return an empty dashboard with the datasource and the chained job/instance/deployment."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["ingest-exporter"])
        .time("now-1h", "now")
        .refresh("30s")
        .editable()
        .with_variable(
            dashboard.DatasourceVariable("datasource")
            .label("Data source")
            .description("The Prometheus that scrapes ingest-exporter.")
            .type("prometheus")
        )
        .with_variable(
            _variable(
                "job",
                "label_values(ingest_exporter_build_info, job)",
                "Prometheus jobs that scrape an ingest-exporter.",
            )
        )
        .with_variable(
            _variable(
                "instance",
                'label_values(ingest_exporter_build_info{job=~"$job"}, instance)',
                "Exporter instances of the selected jobs.",
            )
        )
        .with_variable(
            _variable(
                "deployment",
                f"label_values(ingest_connector_up{{{ISEL}}}, deployment)",
                "Deployments the selected exporters probe.",
            )
        )
    )


def _targets(queries: list[tuple[str, str]]) -> list[Builder[Dataquery]]:
    """Return one Prometheus query per ``(expression, legend)``, refIds A, B, ..."""
    return [
        prom.Dataquery()
        .expr(_expr(expr))
        .legend_format(legend)
        .ref_id(chr(ord("A") + index))
        .datasource(DATASOURCE)
        for index, (expr, legend) in enumerate(queries)
    ]


def series_panel(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    width: int = 12,
) -> timeseries.Panel:
    """Return a time series panel."""
    return (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .height(8)
        .span(width)
    )


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: list[tuple[str, str]],
    *,
    width: int = 6,
) -> stat.Panel:
    """Return a stat panel (the last value of each series)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets(queries))
        .height(5)
        .span(width)
    )
