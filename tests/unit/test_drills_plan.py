"""Drill plans: what is refused before anything runs, and what a plan records of itself."""

from __future__ import annotations

import re

import pytest

from exporter.config import build_institutional_ingest_config
from exporter.drills.plan import Scenario, new_drill_id, pin_host, plan_failover_drill
from exporter.errors import DrillRefused
from exporter.redaction import Redactor

from .drill_samples import settings


@pytest.mark.parametrize(
    ("drill", "scenario", "dimensions", "key"),
    [
        ({"enabled": False}, "fallback", (), "failover_drill.enabled"),
        ({}, "chaos", (), "scenario"),
        ({}, "fallback", ("ticks",), "dimension"),
        ({}, "kill", (), "failover_drill.inject_command"),
        ({}, "switchover", (), "failover_drill.inject_command"),
    ],
)
def test_requests_that_cannot_run_are_refused_by_key(
    drill: dict[str, object], scenario: str, dimensions: tuple[str, ...], key: str
) -> None:
    """Drills off, an unknown scenario or dimension, a fault with no command: refused."""
    with pytest.raises(DrillRefused) as caught:
        plan_failover_drill(settings(**drill), scenario=scenario, dimensions=dimensions)
    assert caught.value.key == key


def test_fallback_without_a_replica_is_refused() -> None:
    """The fallback scenario reads a replica: without TIMESCALE_REPLICA_URL it is refused."""
    plain = build_institutional_ingest_config(
        environ={"INGEST_DIMENSIONS": "trades", "TIMESCALE_FAILOVER_DRILL": "true"}
    )
    with pytest.raises(DrillRefused, match="TIMESCALE_REPLICA_URL"):
        plan_failover_drill(plain, scenario="fallback")
    observe = plan_failover_drill(plain, scenario="observe")
    assert observe.measure_fallback is False


def test_an_odd_dimension_name_is_not_echoed() -> None:
    """A requested dimension that is not a plain name is refused without quoting it."""
    with pytest.raises(DrillRefused) as caught:
        plan_failover_drill(settings(), scenario="fallback", dimensions=("x'; drop--",))
    assert "drop" not in str(caught.value)


def test_a_plan_resolves_the_settings() -> None:
    """Defaults: every drill dimension, the write endpoint = the URL, fallback measured."""
    plan = plan_failover_drill(
        settings(inject_command=["true"], run_fallback=True), scenario="kill", initiator="t"
    )
    assert plan.scenario is Scenario.KILL
    assert plan.injects
    assert [d.name for d in plan.dimensions] == ["trades"]
    assert plan.measure_fallback is True
    assert plan.write_url.get_secret_value().endswith("@127.0.0.1:55432/ingest")
    assert plan.probe_timeout == 2.0
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", plan.drill_id)


def test_settings_used_carry_no_credential() -> None:
    """The record's settings: endpoints redacted, the command's secret options masked."""
    argv = ["patronictl", "--password=Swordfish-42", "--token", "Tok-Canary-7", "switchover"]
    plan = plan_failover_drill(settings(inject_command=argv), scenario="switchover")
    used = plan.settings_used(Redactor())
    text = str(used)
    assert "pw-Canary9" not in text
    assert "Swordfish-42" not in text
    assert "Tok-Canary-7" not in text
    assert used["inject_command"] == [
        "patronictl",
        "--password=***",
        "--token",
        "***",
        "switchover",
    ]
    assert used["replica_endpoint"] == "postgresql://ingest:***@replica:5432/ingest"


def test_pin_host_aims_a_multi_host_url_at_one_server() -> None:
    """The watched primary: one host, same credentials and database, no session attrs."""
    url = "postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write&sslmode=require"
    assert pin_host(url, "10.0.0.7", 5433) == "postgresql://u:p@10.0.0.7:5433/db?sslmode=require"
    assert pin_host("postgresql://h/db", "::1", 5432) == "postgresql://[::1]:5432/db"


def test_drill_ids_sort_by_start_time() -> None:
    """Ids begin with the UTC start second, so sorting them sorts by time."""
    first, second = new_drill_id(1_796_398_200.0), new_drill_id(1_796_398_201.0)
    assert first.startswith("20261204T153000Z-")
    assert first < second
