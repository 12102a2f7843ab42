"""``ingest-exporter drill``: refusals are exit 2 with one line, before anything runs."""

from __future__ import annotations

from tests.clirun import run_cli


def test_drill_with_drills_disabled_exits_2() -> None:
    """Drills off: exit 2, one line naming the setting, no traceback."""
    result = run_cli("drill", "--scenario", "fallback", REDIS_URL="redis://127.0.0.1:1/0")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "ingest-exporter: drill refused: failover_drill.enabled: failover drills are disabled"
    )


def test_kill_without_an_injection_command_exits_2() -> None:
    """The exporter never kills a server itself: without a command, kill is refused."""
    result = run_cli(
        "drill",
        "--scenario",
        "kill",
        INGEST_DIMENSIONS="trades",
        TIMESCALE_FAILOVER_DRILL="true",
    )
    assert result.returncode == 2
    assert "failover_drill.inject_command" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unknown_scenario_is_a_usage_error() -> None:
    """Argparse refuses a scenario that does not exist: exit 2."""
    result = run_cli("drill", "--scenario", "chaos")
    assert result.returncode == 2
    assert "argument --scenario: invalid choice" in result.stderr
