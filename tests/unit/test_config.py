"""Configuration: legacy names, precedence, validation messages that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from exporter import _settings as _settings_module
from exporter.config import (
    ENVIRONMENT,
    DimensionSettings,
    IngestSettings,
    TimescaleFailoverDrillSettings,
    build_institutional_ingest_config,
    build_redactor,
)
from exporter.errors import ConfigError

CANARY = "Zp@ss:w0rd-Qx7"


def test_embedded_default_points_at_the_local_stack() -> None:
    """With no configuration at all, the settings target the ports of `make services`."""
    settings = build_institutional_ingest_config(environ={})
    deployment = settings.deployment()
    assert deployment.name == "local"
    assert "127.0.0.1:55432" in deployment.timescale.url.get_secret_value()
    assert deployment.redis.url.get_secret_value() == "redis://127.0.0.1:56379/0"
    assert deployment.kafka.bootstrap_servers == ("127.0.0.1:59092",)
    assert settings.failover_drill.enabled is False


@pytest.mark.parametrize("name", ["TIMESCALEDB_URL", "TIMESCALE_URL", "DATABASE_URL"])
def test_every_legacy_timescale_name_is_honoured(name: str) -> None:
    """Each of the three URL variables operators already use sets the Timescale URL."""
    url = "postgresql://u:p@db.example:5432/app"
    settings = build_institutional_ingest_config(environ={name: url})
    assert settings.deployment().timescale.url.get_secret_value() == url


def test_first_alias_wins_when_several_are_set() -> None:
    """TIMESCALEDB_URL takes precedence over TIMESCALE_URL and DATABASE_URL."""
    env = {
        "DATABASE_URL": "postgresql://c@h3/db",
        "TIMESCALE_URL": "postgresql://b@h2/db",
        "TIMESCALEDB_URL": "postgresql://a@h1/db",
    }
    settings = build_institutional_ingest_config(environ=env)
    assert "@h1/" in settings.deployment().timescale.url.get_secret_value()


def test_kafka_brokers_and_bootstrap_servers_are_aliases() -> None:
    """KAFKA_BROKERS and KAFKA_BOOTSTRAP_SERVERS both set the comma-separated broker list."""
    for name in ("KAFKA_BROKERS", "KAFKA_BOOTSTRAP_SERVERS"):
        settings = build_institutional_ingest_config(environ={name: "k1:9092, k2:9093"})
        assert settings.deployment().kafka.bootstrap_servers == ("k1:9092", "k2:9093")


@pytest.mark.parametrize(
    ("env", "key", "expected"),
    [
        ({"TIMESCALE_FAILOVER_DRILL": "maybe"}, "TIMESCALE_FAILOVER_DRILL", "boolean"),
        ({"INGEST_PROBE_INTERVAL_SECONDS": "-1"}, "INGEST_PROBE_INTERVAL_SECONDS", "greater"),
        ({"INGEST_PROBE_TIMEOUT_SECONDS": "soon"}, "INGEST_PROBE_TIMEOUT_SECONDS", "number"),
        ({"TIMESCALEDB_URL": "not a url"}, "TIMESCALEDB_URL", "PostgreSQL URL"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL", "Redis URL"),
        ({"KAFKA_BROKERS": "nohostport"}, "KAFKA_BROKERS", "host:port"),
        ({"REDIS_CACHE_STRATEGY": "forever"}, "REDIS_CACHE_STRATEGY", "institutional"),
        ({"REDIS_CACHE_MAX_KEYS": "0"}, "REDIS_CACHE_MAX_KEYS", "greater"),
        ({"INGEST_LOG_LEVEL": "loud"}, "INGEST_LOG_LEVEL", "debug"),
        ({"KAFKA_INGEST_TOPICS": "justatopic"}, "KAFKA_INGEST_TOPICS", "pairs"),
        ({"INGEST_WEB_LISTEN_ADDRESS": "nowhere"}, "INGEST_WEB_LISTEN_ADDRESS", "HOST:PORT"),
    ],
)
def test_bad_values_name_the_variable_and_what_was_expected(
    env: dict[str, str], key: str, expected: str
) -> None:
    """A value that does not parse is rejected with a message naming its variable."""
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ=env)
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://user:{CANARY}@",
        f"ftp://user:{CANARY}@host/db",
        f"postgresql://user:{CANARY}@host:99999/db",
    ],
)
def test_a_rejected_url_is_never_echoed(url: str) -> None:
    """A malformed URL's error message contains no part of its password."""
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ={"TIMESCALEDB_URL": url})
    for part in ("Zp", "w0rd", "Qx7"):
        assert part not in str(caught.value)


def test_unknown_file_key_is_an_error_naming_the_path(tmp_path: Path) -> None:
    """A misspelled key in the YAML file is rejected, naming file and key path."""
    path = tmp_path / "c.yaml"
    path.write_text("timescale:\n  urll: postgresql://h/db\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: timescale\.urll: unknown key 'urll'"):
        build_institutional_ingest_config(environ={}, config_file=path)


def test_unreadable_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    """A missing file and a file that is not YAML both give a one-line config error."""
    with pytest.raises(ConfigError, match="cannot read"):
        build_institutional_ingest_config(environ={}, config_file=tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        build_institutional_ingest_config(environ={}, config_file=bad)


def test_environment_overrides_file_and_flags_override_both(tmp_path: Path) -> None:
    """Precedence is file < environment < flags."""
    path = tmp_path / "c.yaml"
    path.write_text("probes:\n  interval_seconds: 30\nweb:\n  listen_address: ':1000'\n")
    settings = build_institutional_ingest_config(
        environ={"INGEST_PROBE_INTERVAL_SECONDS": "7", "INGEST_WEB_LISTEN_ADDRESS": ":2000"},
        config_file=path,
        overrides={"web.listen_address": "127.0.0.1:3000"},
    )
    assert settings.probes.interval_seconds == 7
    assert settings.web.listen_address == "127.0.0.1:3000"


def test_drill_dimensions_must_be_declared() -> None:
    """A drill dimension that is not a declared dimension is a config error naming it."""
    env = {
        "INGEST_DIMENSIONS": "daily_bars,intraday_trades",
        "TIMESCALE_FAILOVER_DRILL": "true",
        "TIMESCALE_FAILOVER_DRILL_DIMENSIONS": "daily_bars,macro_events",
    }
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ=env)
    assert str(caught.value).startswith("TIMESCALE_FAILOVER_DRILL_DIMENSIONS: ")
    assert "'macro_events'" in str(caught.value)


def test_enabled_drill_without_dimensions_takes_every_declared_one() -> None:
    """Enabling drills without naming dimensions drills every declared dimension."""
    env = {"INGEST_DIMENSIONS": "daily_bars,intraday_trades", "TIMESCALE_FAILOVER_DRILL": "yes"}
    settings = build_institutional_ingest_config(environ=env)
    assert settings.failover_drill.dimensions == ("daily_bars", "intraday_trades")


def test_bridge_topics_refer_to_declared_dimensions() -> None:
    """KAFKA_INGEST_TOPICS pairs must name declared dimensions."""
    env = {"INGEST_DIMENSIONS": "daily_bars", "KAFKA_INGEST_TOPICS": "daily_bars:b,ticks:t"}
    with pytest.raises(ConfigError, match=r"^KAFKA_INGEST_TOPICS: .*'ticks'"):
        build_institutional_ingest_config(environ=env)
    ok = build_institutional_ingest_config(environ={**env, "KAFKA_INGEST_TOPICS": "daily_bars:b"})
    assert ok.deployment().kafka.ingest_topics[0].topic == "b"


def test_deployments_inherit_top_level_defaults(tmp_path: Path) -> None:
    """Each entry of `deployments:` inherits the top-level connector settings it omits."""
    path = tmp_path / "multi.yaml"
    path.write_text(
        "redis:\n  url: redis://shared:6379/0\n"
        "deployments:\n"
        "  - name: eu-primary\n"
        "  - name: us-dr\n"
        "    redis: {url: 'redis://dr:6379/1'}\n"
    )
    settings = build_institutional_ingest_config(environ={}, config_file=path)
    assert [d.name for d in settings.deployments] == ["eu-primary", "us-dr"]
    assert settings.deployment("eu-primary").redis.url.get_secret_value().endswith("shared:6379/0")
    assert settings.deployment("us-dr").redis.url.get_secret_value().endswith("dr:6379/1")


def test_duplicate_deployment_names_are_rejected(tmp_path: Path) -> None:
    """Two deployments with one name are a config error."""
    path = tmp_path / "dup.yaml"
    path.write_text("deployments:\n  - name: a\n  - name: a\n")
    with pytest.raises(ConfigError, match="unique deployment names"):
        build_institutional_ingest_config(environ={}, config_file=path)


def test_settings_are_frozen() -> None:
    """The settings tree cannot be modified after it is built."""
    settings = build_institutional_ingest_config(environ={})
    with pytest.raises(ValidationError):
        settings.probes.interval_seconds = 1  # type: ignore[misc]


def test_secrets_are_secretstr_and_hidden_in_dumps() -> None:
    """URLs and the SASL password are SecretStr: a plain dump shows no secret."""
    env = {
        "TIMESCALEDB_URL": f"postgresql://u:{CANARY}@h/db",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": CANARY,
    }
    settings = build_institutional_ingest_config(environ=env)
    dumped = settings.model_dump_json() + repr(settings)
    assert CANARY not in dumped
    assert "w0rd" not in dumped


def test_environment_table_has_no_duplicate_names() -> None:
    """Every environment variable maps to exactly one settings path."""
    names = [name for aliases, _, _ in ENVIRONMENT for name in aliases]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (f"timescale: postgresql://u:{CANARY}@h/db\n", "timescale"),
        (f"timescale:\n  url postgresql://u:{CANARY}@h/db\n", "timescale"),
        (f"deployments:\n  - postgresql://u:{CANARY}@h/db\n", "deployments[0]"),
        (f"kafka: {{bootstrap_servers: 'svc:{CANARY}@broker:9092'}}\n", "bootstrap_servers"),
        (f"timescale: {{'postgresql://u:{CANARY}@h/db': 1}}\n", "timescale"),
        ("timescale: {pool_max_size: 'password=Qx7tok'}\n", "pool_max_size"),
    ],
)
def test_a_credential_in_the_wrong_place_is_never_echoed(
    tmp_path: Path, text: str, where: str
) -> None:
    """A URL given where a mapping, host:port or key was expected is named, not quoted."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ={}, config_file=path)
    message = str(caught.value)
    assert where in message
    for part in ("Zp", "w0rd", "Qx7"):
        assert part not in message


def test_a_plain_bad_value_is_still_quoted() -> None:
    """A value that cannot be a credential is echoed, so the operator sees what was wrong."""
    with pytest.raises(ConfigError, match=r"got 'soon'"):
        build_institutional_ingest_config(environ={"INGEST_PROBE_TIMEOUT_SECONDS": "soon"})


@pytest.mark.parametrize(
    ("env", "text", "where"),
    [
        ({}, "deployments:\n  - name: a\n    timescale: {url: 'ftp://h'}\n", "[0].timescale.url"),
        ({"TIMESCALEDB_URL": "ftp://h"}, "deployments:\n  - name: a\n", "TIMESCALEDB_URL"),
        (
            {"TIMESCALEDB_URL": "ftp://h"},
            "deployments:\n  - name: a\n    timescale: {pool_max_size: 3}\n",
            "TIMESCALEDB_URL",
        ),
        ({}, "timescale: {url: 'ftp://h'}\ndeployments:\n  - name: a\n", "c.yaml: timescale.url"),
        ({}, "deployment: 'no spaces'\n", "c.yaml: deployment"),
        ({}, "dimensions: [{name: Upper}]\n", "c.yaml: dimensions[0].name"),
    ],
)
def test_errors_name_the_entry_variable_or_key_that_set_the_value(
    tmp_path: Path, env: dict[str, str], text: str, where: str
) -> None:
    """A deployment entry's own key, else the variable, else the inherited file key is named."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ=env, config_file=path)
    assert where in str(caught.value).split(": expected")[0]


def test_the_settings_are_plain_frozen_models_fed_by_the_loader() -> None:
    """One mechanism: no pydantic-settings source; defaults are derived without mutation."""
    assert IngestSettings.__mro__[1].__name__ == "_Frozen"
    settings = IngestSettings(
        dimensions=(DimensionSettings(name="ticks"),),
        failover_drill=TimescaleFailoverDrillSettings(enabled=True),
    )
    assert settings.dimensions[0].table == "ticks"
    assert settings.failover_drill.dimensions == ("ticks",)
    source = Path(_settings_module.__file__).read_text(encoding="utf-8")
    assert "object.__setattr__" not in source


def test_build_redactor_knows_every_configured_secret() -> None:
    """The one redactor is built from the settings: URL passwords, SASL user and password."""
    env = {
        "TIMESCALEDB_URL": f"postgresql://u:{CANARY}@h/db",
        "REDIS_URL": "redis://:Rd-pw-1234@h:6379/0",
        "KAFKA_SASL_USERNAME": "svc-user",
        "KAFKA_SASL_PASSWORD": "Kf-pw-5678",
    }
    settings = build_institutional_ingest_config(environ=env)
    secrets = build_redactor(settings, environ={}).secrets
    assert {CANARY, "Rd-pw-1234", "svc-user", "Kf-pw-5678"} <= secrets


def test_one_redactor_is_passed_down_to_every_job() -> None:
    """The daemon hands the redactor it is given to its supervisor, provisioner and bundles."""
    from exporter.daemon import Daemon

    settings = build_institutional_ingest_config(environ={"INGEST_DEPLOYMENT": "eu-1"})
    redactor = build_redactor(settings, environ={})
    daemon = Daemon(settings, redactor=redactor)
    assert daemon.redactor is redactor
    assert daemon.supervisor._redact is redactor
    assert daemon.provisioner.redactor is redactor
    assert [services.redactor for services in daemon.services] == [redactor]
