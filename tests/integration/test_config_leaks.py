"""The issue's URL reproductions through the real CLI and drivers, against closed ports.

Each runs ``python -m exporter`` as an operator would, so asyncpg, redis-py and aiokafka parse
the configured URLs themselves; a canary in the password must appear in no output line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .net import free_port

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI with only ``env`` (plus PATH/HOME), every service on a closed port."""
    closed = free_port()
    base = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    base |= {
        "TIMESCALEDB_URL": f"postgresql://u:pw@127.0.0.1:{closed}/db",
        "REDIS_URL": f"redis://127.0.0.1:{closed}/0",
        "KAFKA_BROKERS": f"127.0.0.1:{closed}",
        "INGEST_LOG_LEVEL": "debug",
    }
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        env={**base, **{k: v.replace("CLOSED", str(closed)) for k, v in env.items()}},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )


def test_a_raw_at_in_the_password_reaches_no_output_of_probe() -> None:
    """Leak 1: asyncpg used to fail on port 'Cc3@127.0.0.1:...' and print it everywhere."""
    url = "postgresql://monitor:Aa1@Bb2:Cc3@127.0.0.1:CLOSED/ingest"
    result = _cli("probe", "--format", "json", TIMESCALEDB_URL=url)
    assert result.returncode == 1, result.stderr
    assert '"reason": "refused"' in result.stdout
    for part in ("Aa1", "Bb2", "Cc3"):
        assert part not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:Zp@ss/Qv7x@127.0.0.1:CLOSED/db",
        "postgresql://u:Zp9?Qv7x@127.0.0.1:CLOSED/db",
        "postgresql://u:Zp9#Qv7x@127.0.0.1:CLOSED/db",
    ],
)
def test_a_raw_delimiter_in_the_password_never_becomes_a_host(url: str) -> None:
    """A raw '/', '?' or '#' in the password is no longer cut into a host and a port."""
    result = _cli("probe", "--format", "json", TIMESCALEDB_URL=url)
    assert result.returncode == 1, result.stderr
    assert '"reason": "refused"' in result.stdout
    assert "Qv7x" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_query_password_with_a_raw_at_is_masked_in_the_manifest() -> None:
    """Leak 2: the endpoint showed the value's tail as a host."""
    url = "postgresql://u:pw@127.0.0.1:CLOSED/db?password=Aa1@Bb2"
    result = _cli("manifest", TIMESCALEDB_URL=url)
    assert result.returncode == 0, result.stderr
    assert "Bb2" not in result.stdout + result.stderr
    assert "Aa1" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["check-config", "probe"])
def test_a_raw_ampersand_in_a_query_password_exits_2_unquoted(command: str) -> None:
    """Leak 3: asyncpg's `bad query field: '<tail>'` reached every surface; now exit 2."""
    url = "postgresql://u:pw@127.0.0.1:CLOSED/db?password=Aa1&Bb2"
    result = _cli(command, TIMESCALEDB_URL=url)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "TIMESCALEDB_URL" in result.stderr
    assert "Bb2" not in result.stdout + result.stderr


@pytest.mark.parametrize("query", ["db=Qz9canary", "socket_timeout=Qz9canary"])
@pytest.mark.parametrize("command", ["check-config", "probe"])
def test_a_redis_url_with_a_bad_typed_value_exits_2(command: str, query: str) -> None:
    """Crash 1: check-config said valid, then probe died with a traceback printing the value."""
    result = _cli(command, REDIS_URL=f"redis://127.0.0.1:CLOSED/0?{query}")
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr
    assert "Traceback" not in result.stderr
    assert "Qz9canary" not in result.stdout + result.stderr


def test_a_secret_file_feeds_the_driver_and_never_shows(tmp_path: Path) -> None:
    """Crash 7: REDIS_URL_FILE was ignored; now its URL is used, its password masked everywhere."""
    secret = tmp_path / "redis-url"
    secret.write_text(f"redis://default:Fi1e-Cn7pw@127.0.0.1:{free_port()}/0\n")
    secret.chmod(0o644)
    # REDIS_URL unset: were the file ignored, the default URL would reach the local Redis.
    result = _cli("probe", "--format", "json", REDIS_URL="", REDIS_URL_FILE=str(secret))
    assert result.returncode == 1, result.stderr
    redis = json.loads(result.stdout)["reports"][0]["connectors"]["redis"]
    assert {check["reason"] for check in redis["checks"]} == {"refused"}
    assert "Fi1e-Cn7pw" not in result.stdout + result.stderr
    assert '"secret_file_world_readable"' in result.stderr
    assert "REDIS_URL_FILE" in result.stderr


def test_check_config_refuses_a_variable_set_twice(tmp_path: Path) -> None:
    """Crash 7: X and X_FILE both set is an error naming both, exit 2."""
    secret = tmp_path / "pw"
    secret.write_text("Fi1e-Cn7pw\n")
    result = _cli("check-config", KAFKA_SASL_PASSWORD="x", KAFKA_SASL_PASSWORD_FILE=str(secret))
    assert result.returncode == 2
    assert "KAFKA_SASL_PASSWORD_FILE: set only one of" in result.stderr
    assert "Fi1e-Cn7pw" not in result.stderr
