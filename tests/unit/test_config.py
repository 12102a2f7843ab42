"""Configuration: legacy names, precedence, validation messages that name the key."""

from __future__ import annotations

import time
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
    world_readable_secret_files,
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
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
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


def test_the_half_of_a_pair_that_fails_a_pattern_is_not_quoted() -> None:
    """A ``user:secret`` pasted into a pair list never has its second half quoted."""
    env = {"KAFKA_INGEST_TOPICS": "monitor:hunter 2", "INGEST_DIMENSIONS": "ticks,monitor"}
    with pytest.raises(ConfigError, match=r"^KAFKA_INGEST_TOPICS: expected") as caught:
        build_institutional_ingest_config(environ=env)
    assert "hunter" not in str(caught.value)


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
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "PLAIN",
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


_BOMB = (
    "a: &a {k0: v, k1: v}\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} {{x: *{chr(97 + i)}, y: *{chr(97 + i)}, "
        f"z: *{chr(97 + i)}, w: *{chr(97 + i)}}}\n"
        for i in range(20)
    )
    + "probes: *u\n"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"probes: {interval_seconds: 5}\n\xff\xfe\n", "not UTF-8"),
        (b"x" * (256 * 1024 + 10), "larger than"),
        (b"timescale: {pool_max_size: " + b"9" * 5000 + b"}\n", "too long"),
        (b"probes: " + b"[" * 20000 + b"]" * 20000 + b"\n", "nested deeper"),
        (_BOMB.encode(), "alias"),
        (b"probes: {interval_seconds: 5, interval_seconds: 7}\n", "duplicate key"),
        (b"a: &a [*a]\n", "alias"),
    ],
)
def test_a_hostile_config_file_is_one_clear_error(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """Crashes 2-3: non-UTF-8, huge, deep, alias-bomb and duplicate-key files are refused."""
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ={}, config_file=path)
    assert time.perf_counter() - t0 < 5
    message = str(caught.value)
    assert expected in message
    assert "c.yaml" in message
    assert "\n" not in message


def test_dev_zero_is_refused_without_reading_it_all() -> None:
    """Crash 2: `--config.file /dev/zero` is read up to the size limit, then refused."""
    with pytest.raises(ConfigError, match="larger than"):
        build_institutional_ingest_config(environ={}, config_file="/dev/zero")


def test_a_duplicate_key_error_names_the_line_not_the_key(tmp_path: Path) -> None:
    """A duplicated key may be a pasted URL: the error gives its line, never the key."""
    path = tmp_path / "c.yaml"
    path.write_text(f"timescale: {{'postgresql://u:{CANARY}@h/db': 1}}\n" * 2)
    with pytest.raises(ConfigError, match="line 2") as caught:
        build_institutional_ingest_config(environ={}, config_file=path)
    assert "w0rd" not in str(caught.value)


def test_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    """Plain YAML anchors and `<<` merges are fine; only their exponential use is refused."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "base: &base {url: 'redis://shared:6379/0'}\n"
        "deployments:\n"
        "  - {name: a, redis: *base}\n"
        "  - {name: b, redis: {<<: *base, url: 'redis://other:6379/1'}}\n"
    )
    with pytest.raises(ConfigError, match="unknown key 'base'"):
        build_institutional_ingest_config(environ={}, config_file=path)
    path.write_text(path.read_text().replace("base: &base", "redis: &base"))
    settings = build_institutional_ingest_config(environ={}, config_file=path)
    assert settings.deployment("b").redis.url.get_secret_value() == "redis://other:6379/1"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("timescale: {pool_max_size: true}\n", "timescale.pool_max_size"),
        ("probes: {interval_seconds: true}\n", "probes.interval_seconds"),
        ("redis: {cache: {max_keys: false}}\n", "redis.cache.max_keys"),
        ("supervisor: {max_restarts: true}\n", "supervisor.max_restarts"),
    ],
)
def test_a_boolean_is_not_a_number(tmp_path: Path, text: str, where: str) -> None:
    """Crash 6: `pool_max_size: true` was read as 1; a boolean is refused where a number goes."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="not a boolean") as caught:
        build_institutional_ingest_config(environ={}, config_file=path)
    assert where in str(caught.value)


@pytest.mark.parametrize(
    ("text", "env", "overrides", "where"),
    [
        ("timescale: 5\n", {"TIMESCALEDB_URL": "postgresql://h/db"}, {}, "c.yaml: timescale"),
        ("redis: [a]\n", {"REDIS_CACHE_STRATEGY": "bootstrap"}, {}, "c.yaml: redis"),
        ("redis: {cache: 5}\n", {"REDIS_CACHE_MAX_KEYS": "9"}, {}, "c.yaml: redis.cache"),
        ("web: 5\n", {}, {"web.listen_address": ":1"}, "c.yaml: web"),
        ("probes: x\n", {"INGEST_PROBE_TIMEOUT_SECONDS": "2"}, {}, "c.yaml: probes"),
        (
            "timescale: 5\ndeployments: [{name: a, timescale: {pool_max_size: 3}}]\n",
            {},
            {},
            "c.yaml: timescale",
        ),
    ],
)
def test_a_wrong_typed_file_section_is_refused_even_when_a_variable_sets_part_of_it(
    tmp_path: Path,
    text: str,
    env: dict[str, str],
    overrides: dict[str, str],
    where: str,
) -> None:
    """Crash 6: a non-mapping section was silently dropped when a variable of it was set."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="expected a mapping") as caught:
        build_institutional_ingest_config(environ=env, config_file=path, overrides=overrides)
    assert str(caught.value).endswith(f"/{where}: expected a mapping")


@pytest.mark.parametrize(
    ("env", "key", "expected"),
    [
        ({"INGEST_PROBE_INTERVAL_SECONDS": "1e-300"}, "INGEST_PROBE_INTERVAL_SECONDS", ">= 1"),
        ({"INGEST_PROBE_INTERVAL_SECONDS": "0.5"}, "INGEST_PROBE_INTERVAL_SECONDS", ">= 1"),
        (
            {"INGEST_PROBE_INTERVAL_SECONDS": "5", "INGEST_PROBE_TIMEOUT_SECONDS": "5"},
            "INGEST_PROBE_TIMEOUT_SECONDS",
            "less than the probe interval (5 s)",
        ),
        ({"INGEST_PROBE_TIMEOUT_SECONDS": "30"}, "INGEST_PROBE_TIMEOUT_SECONDS", "(15 s)"),
    ],
)
def test_the_probe_interval_has_sane_minimums(env: dict[str, str], key: str, expected: str) -> None:
    """Crash 6: 1e-300 s ran 450 cycles a second; the interval is >= 1 s, the timeout below it."""
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ=env)
    message = str(caught.value).replace("greater than or equal to ", ">= ")
    assert message.startswith(f"{key}: ")
    assert expected in message


def test_an_operator_probe_timeout_must_fit_the_interval(tmp_path: Path) -> None:
    """An operator probe's own timeout is held to the same rule, naming its entry."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "probes:\n  interval_seconds: 10\n"
        "  operator: [{name: x, target: 'm:f', timeout_seconds: 10}]\n"
    )
    with pytest.raises(ConfigError, match=r"probes\.operator\[0\]\.timeout_seconds: expected less"):
        build_institutional_ingest_config(environ={}, config_file=path)


@pytest.mark.parametrize(
    ("variable", "content", "read"),
    [
        ("TIMESCALEDB_URL", "postgresql://u:Fi1e-pw@h/db\n", "timescale.url"),
        ("DATABASE_URL", "postgresql://u:Fi1e-pw@h/db\r\n", "timescale.url"),
        ("REDIS_URL", "redis://:Fi1e-pw@cache:6379/0\n", "redis.url"),
        ("KAFKA_SASL_PASSWORD", "Fi1e-pw\n", "kafka.sasl_password"),
        ("KAFKA_SASL_USERNAME", "svc-user\n", "kafka.sasl_username"),
    ],
)
def test_every_secret_variable_has_a_file_variant(
    tmp_path: Path, variable: str, content: str, read: str
) -> None:
    """Crash 7: X_FILE names a file holding X's value (trailing newline stripped)."""
    secret = tmp_path / "secret"
    secret.write_text(content)
    secret.chmod(0o600)
    environ = {f"{variable}_FILE": str(secret)}
    if variable.startswith("KAFKA_SASL_"):
        # SASL settings only count together (with a SASL protocol): give the others plainly.
        sasl = {"KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"}
        environ |= {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "PLAIN"}
        environ |= {name: value for name, value in sasl.items() if name != variable}
    settings = build_institutional_ingest_config(environ=environ)
    section, field = read.split(".")
    value = getattr(getattr(settings.deployment(), section), field)
    plain = value if isinstance(value, str) else value.get_secret_value()
    assert plain == content.rstrip("\r\n")
    assert plain in build_redactor(settings, environ={}).secrets
    assert world_readable_secret_files({f"{variable}_FILE": str(secret)}) == []


def test_a_secret_file_readable_by_everyone_is_warned_about(tmp_path: Path) -> None:
    """A world-readable secret file is found by its variable (the CLI warns about it)."""
    secret = tmp_path / "secret"
    secret.write_text("Fi1e-pw\n")
    secret.chmod(0o644)
    env = {"KAFKA_SASL_PASSWORD_FILE": str(secret)}
    assert world_readable_secret_files(env) == ["KAFKA_SASL_PASSWORD_FILE"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"REDIS_URL": "redis://h/0", "REDIS_URL_FILE": "{secret}"}, "only one of"),
        ({"REDIS_URL_FILE": "{missing}"}, "cannot read the file"),
        ({"REDIS_URL_FILE": "{empty}"}, "the file is empty"),
        ({"REDIS_URL_FILE": "{binary}"}, "not UTF-8"),
        ({"TIMESCALEDB_URL_FILE": "{secret}"}, "expected a PostgreSQL URL"),
    ],
)
def test_a_bad_secret_file_is_one_error_naming_the_file_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    """Both set, unreadable, empty or non-UTF-8 files, or a bad value, name X_FILE only."""
    files: dict[str, str | bytes] = {
        "secret": "redis://:Fi1e-pw@h:6379/0\n",
        "empty": "\n",
        "binary": b"\xff\xfe",
    }
    paths = {"missing": str(tmp_path / "missing")}
    for name, content in files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        paths[name] = str(path)
    resolved = {name: value.format(**paths) for name, value in env.items()}
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ=resolved)
    message = str(caught.value)
    assert message.split(":")[0].endswith("_FILE")
    assert expected in message
    assert "Fi1e-pw" not in message
