"""The command line: exit codes, one-line errors without tracebacks, redacted manifest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m exporter`` with a clean environment plus ``env``."""
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_check_config_accepts_the_embedded_default() -> None:
    """`check-config` with no configuration exits 0."""
    result = run_cli("check-config")
    assert result.returncode == 0, result.stderr
    assert "configuration ok" in result.stdout


def test_check_config_rejects_a_bad_boolean_with_exit_2() -> None:
    """A bad TIMESCALE_FAILOVER_DRILL exits 2 with one line naming it and no traceback."""
    result = run_cli("check-config", TIMESCALE_FAILOVER_DRILL="maybe")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "TIMESCALE_FAILOVER_DRILL" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_usage_exits_2() -> None:
    """An unknown subcommand is a usage error (exit 2)."""
    assert run_cli("frobnicate").returncode == 2


def test_run_with_a_bad_listen_address_exits_2() -> None:
    """`run --web.listen-address` with garbage is rejected before anything starts."""
    result = run_cli("run", "--web.listen-address", "nowhere")
    assert result.returncode == 2
    assert "web.listen-address" in result.stderr or "listen_address" in result.stderr


def test_missing_config_file_exits_2(tmp_path: Path) -> None:
    """A config file that does not exist exits 2, naming the file."""
    result = run_cli("check-config", "--config.file", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "nope.yaml" in result.stderr


@pytest.mark.parametrize(
    ("url", "canaries"),
    [
        (
            "postgresql://u:Zp%40ss:w0rd@host/db?sslpassword=Qx7tok",
            ("Zp%40ss", "Zp@ss", "w0rd", "Qx7tok"),
        ),
        ("postgresql://u:Zp@ss/w0rd@host:5432/db?password=Qx7tok", ("Zp@ss", "w0rd", "Qx7tok")),
        ("postgres://u:a%2Fb%3Ac@host/db?token=Tk9zz&sslmode=require", ("a%2Fb", "a/b", "Tk9zz")),
    ],
)
def test_manifest_never_prints_a_password(url: str, canaries: tuple[str, ...]) -> None:
    """`manifest` prints redacted JSON with none of the password's forms, hosts still visible."""
    result = run_cli(
        "manifest",
        TIMESCALEDB_URL=url,
        REDIS_URL="redis://default:R3dis-Cn7@cache:6379/0",
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="kafka-svc",
        KAFKA_SASL_PASSWORD="Kf-Cn7-pw",
    )
    assert result.returncode == 0, result.stderr
    for canary in (*canaries, "R3dis-Cn7", "Kf-Cn7-pw"):
        assert canary not in result.stdout + result.stderr
    data = json.loads(result.stdout)
    timescale = data["deployments"][0]["connectors"][0]
    assert timescale["name"] == "timescale"
    assert "host" in timescale["endpoint"]
    assert "***" in timescale["endpoint"]


def test_manifest_includes_failover_metadata_when_drills_are_on() -> None:
    """With drills enabled the manifest output carries the failover metadata."""
    result = run_cli(
        "manifest",
        INGEST_DIMENSIONS="daily_bars,macro_events",
        TIMESCALE_FAILOVER_DRILL="true",
        TIMESCALE_FAILOVER_DRILL_DIMENSIONS="daily_bars",
        TIMESCALE_FAILOVER_DRILL_LABEL="q4-dr",
    )
    assert result.returncode == 0, result.stderr
    failover = json.loads(result.stdout)["failover"]
    assert failover["enabled"] is True
    assert failover["dimensions"] == ["daily_bars"]
    assert failover["label"] == "q4-dr"


@pytest.mark.parametrize("command", ["manifest", "probe"])
def test_an_unknown_deployment_exits_2_naming_the_known_ones(command: str) -> None:
    """`--deployment` with a name that is not configured is a usage error listing the names."""
    result = run_cli(command, "--deployment", "nowhere", INGEST_DEPLOYMENT="eu-primary")
    assert result.returncode == 2
    assert "--deployment" in result.stderr
    assert "eu-primary" in result.stderr
    assert "Traceback" not in result.stderr
