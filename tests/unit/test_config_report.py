"""Typos and sources: unknown variables get their closest match, endpoints their origin."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter.config import build_institutional_ingest_config, explain_configuration
from exporter.errors import ConfigError
from tests.clirun import run_cli


def unknown(environ: dict[str, str]) -> dict[str, str | None]:
    """Return the unknown variables of ``environ`` with their closest known names."""
    settings = build_institutional_ingest_config(environ=environ)
    report = explain_configuration(settings, environ=environ)
    return {item.name: item.closest for item in report.unknown}


@pytest.mark.parametrize(
    ("typo", "meant"),
    [
        ("REDIS_URLS", "REDIS_URL"),
        ("KAFKA_BROKER", "KAFKA_BROKERS"),
        ("TIMESCALEDB_URI", "TIMESCALEDB_URL"),
        ("INGEST_PROBE_INTERVAL", "INGEST_PROBE_INTERVAL_SECONDS"),
        ("KAFKA_LAG_GROUP", "KAFKA_LAG_GROUPS"),
    ],
)
def test_a_mistyped_variable_is_named_with_the_closest_known_one(typo: str, meant: str) -> None:
    """A project-prefixed name no setting reads is reported with the name it resembles."""
    assert unknown({typo: "x"}) == {typo: meant}


def test_settings_script_variables_and_foreign_names_are_not_reported() -> None:
    """Known settings, the service scripts' own variables and other prefixes are left alone."""
    environ = {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "KAFKA_BOOTSTRAP_SERVERS": "k:9092",
        "INGEST_SERVICES_DIR": "/x",
        "INGEST_PG_BIN": "/usr/lib/postgresql/15/bin",
        "INGEST_KAFKA_JARS": "/x",
        "INGEST_REDIS_SERVER": "/usr/bin/redis-server",
        "TIMESCALE_ADMIN_URL": "postgresql://postgres:pw@h/db",
        "TIMESCALE_REPLICA_URL": "postgresql://u:pw@h/db",
        "PATH": "/bin",
        "OTEL_SERVICE_NAME": "x",
    }
    assert unknown(environ) == {}


def test_an_unrelated_unknown_name_has_no_suggestion() -> None:
    """A name that resembles nothing is still reported, without a guess."""
    assert unknown({"KAFKA_ZZZZZZZZZZZZZZZZZZZZ": "1"}) == {"KAFKA_ZZZZZZZZZZZZZZZZZZZZ": None}


def test_check_config_warns_about_a_typo_and_strict_refuses_it() -> None:
    """`REDIS_URLS=...` is a warning naming REDIS_URL; with --config.strict, exit 2."""
    loose = run_cli("check-config", REDIS_URLS="redis://cache:6379/0")
    assert loose.returncode == 0, loose.stderr
    assert "REDIS_URLS" in loose.stderr
    assert "did you mean REDIS_URL?" in loose.stderr
    strict = run_cli("check-config", "--config.strict", REDIS_URLS="redis://cache:6379/0")
    assert strict.returncode == 2
    [line] = strict.stderr.strip().splitlines()[-1:]
    assert "REDIS_URLS" in line
    assert "REDIS_URL?" in line


def test_check_config_lists_every_endpoint_with_its_source(tmp_path: Path) -> None:
    """Each endpoint is printed redacted, with default, file, env or flag as its source."""
    config = tmp_path / "exporter.yaml"
    config.write_text("redis: {url: 'redis://:file-secret@cache:6380/0'}\n", encoding="utf-8")
    result = run_cli(
        "check-config",
        "--config.file",
        str(config),
        "--web.listen-address",
        "127.0.0.1:9999",
        KAFKA_BROKERS="k1:9092,k2:9092",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  local timescale: postgresql://ingest:***@127.0.0.1:55432/ingest (default)" in lines
    assert "  local redis: redis://:***@cache:6380/0 (file redis.url)" in lines
    assert "  local kafka: k1:9092,k2:9092 (env KAFKA_BROKERS)" in lines
    assert "  web: 127.0.0.1:9999 (flag --web.listen-address)" in lines
    assert "file-secret" not in result.stdout + result.stderr
    assert "local-dev-pw" not in result.stdout


def test_a_deployment_entry_in_the_file_wins_over_the_environment(tmp_path: Path) -> None:
    """The source shown is the one that won: a deployment's own key over the environment."""
    config = tmp_path / "exporter.yaml"
    config.write_text(
        "deployments:\n  - name: eu\n    redis: {url: 'redis://eu-cache:6379/0'}\n",
        encoding="utf-8",
    )
    environ = {"REDIS_URL": "redis://env-cache:6379/0", "TIMESCALEDB_URL": "postgresql://h/db"}
    settings = build_institutional_ingest_config(environ=environ, config_file=config)
    report = explain_configuration(settings, environ=environ, config_file=config)
    sources = {(e.connector, e.source, e.origin) for e in report.endpoints}
    assert ("redis", "file", "deployments[0].redis.url") in sources
    assert ("timescale", "env", "TIMESCALEDB_URL") in sources
    assert report.defaults_in_use() == {"eu.kafka": "127.0.0.1:59092"}


def test_embedded_defaults_are_announced_at_start() -> None:
    """Starting with a local default endpoint logs one warning naming it (redacted)."""
    result = run_cli(
        "probe",
        "--format",
        "json",
        TIMESCALEDB_URL="postgresql://u:pw@127.0.0.1:9/db",
        REDIS_URLS="redis://typo:6379/0",
        INGEST_LOG_FORMAT="json",
        INGEST_PROBE_TIMEOUT_SECONDS="1",
    )
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    [defaults] = [e for e in events if e["event"] == "config_defaults_used"]
    assert defaults["level"] == "warning"
    assert set(defaults["endpoints"]) == {"local.redis", "local.kafka"}
    [typo] = [e for e in events if e["event"] == "config_variable_unknown"]
    assert (typo["variable"], typo["closest"]) == ("REDIS_URLS", "REDIS_URL")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"KAFKA_SASL_MECHANISM": "PLAIN"}, "security_protocol SASL_PLAINTEXT or SASL_SSL"),
        (
            {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "s3cret-pw"},
            "KAFKA_SECURITY_PROTOCOL",
        ),
        (
            {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"},
            "sasl_username (KAFKA_SASL_USERNAME) and sasl_password (KAFKA_SASL_PASSWORD)",
        ),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}, "sasl_mechanism (KAFKA_SASL_MECHANISM)"),
    ],
)
def test_sasl_settings_are_validated_as_a_whole(environ: dict[str, str], expected: str) -> None:
    """A mechanism without credentials, or credentials without a SASL protocol, is refused."""
    with pytest.raises(ConfigError, match=r"expected") as caught:
        build_institutional_ingest_config(environ=environ)
    assert expected in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)


def test_complete_sasl_settings_pass() -> None:
    """Protocol, mechanism, user and password together are accepted."""
    settings = build_institutional_ingest_config(
        environ={
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
            "KAFKA_SASL_USERNAME": "monitor",
            "KAFKA_SASL_PASSWORD": "secret",
        }
    )
    assert settings.deployments[0].kafka.sasl_mechanism == "SCRAM-SHA-256"


def test_secret_file_variants_are_known_variables() -> None:
    """``X_FILE`` of a secret setting is a setting too, never reported as a typo."""
    settings = build_institutional_ingest_config(environ={})
    environ = {"REDIS_URL_FILE": "/run/secrets/redis", "KAFKA_SASL_PASSWORD_FILE": "/run/x"}
    report = explain_configuration(settings, environ=environ)
    assert report.unknown == []
    typo = explain_configuration(settings, environ={"REDIS_URL_FIlE": "/x"})
    assert [(u.name, u.closest) for u in typo.unknown] == [("REDIS_URL_FIlE", "REDIS_URL_FILE")]
