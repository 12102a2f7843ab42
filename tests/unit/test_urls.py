"""The one URL parser: settings hand every driver a URL it reads as we do, or refuse it."""

from __future__ import annotations

from typing import Any

import pytest
from asyncpg import connect_utils
from redis.connection import parse_url

from exporter._urls import canonical_url, query_problem, split_url
from exporter.config import build_institutional_ingest_config
from exporter.errors import ConfigError
from exporter.manifest import build_manifest
from exporter.redaction import url_secrets


def _asyncpg_reads(dsn: str) -> tuple[list[Any], str | None, str | None]:
    """Return the addresses, user and password asyncpg's own DSN parser gets from ``dsn``."""
    # The driver's real parser (private, so only here): what `asyncpg.connect` would use.
    addrs, params = connect_utils._parse_connect_dsn_and_args(
        dsn=dsn,
        host=None,
        port=None,
        user=None,
        password=None,
        passfile=None,
        database=None,
        ssl=None,
        service=None,
        servicefile=None,
        direct_tls=None,
        server_settings=None,
        target_session_attrs=None,
        krbsrvname=None,
        gsslib=None,
    )
    return list(addrs), params.user, params.password


def _timescale_url(url: str) -> str:
    settings = build_institutional_ingest_config(environ={"TIMESCALEDB_URL": url})
    return settings.deployment().timescale.url.get_secret_value()


def _redis_url(url: str) -> str:
    settings = build_institutional_ingest_config(environ={"REDIS_URL": url})
    return settings.deployment().redis.url.get_secret_value()


# Passwords holding every character a driver could take for a delimiter, written raw.
RAW_PASSWORDS = ["Aa1@Bb2:Cc3", "Zp@ss/w0rd", "Kx9?Qv7", "Kx9#Qv7", "a@b@c", "p ss", "pässwörd€9"]


@pytest.mark.parametrize("password", RAW_PASSWORDS)
def test_asyncpg_reads_the_password_and_host_we_read(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A raw '@', '/', '?', '#' or space in the password reaches asyncpg whole, host intact."""
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    url = _timescale_url(f"postgresql://monitor:{password}@127.0.0.1:5432/ingest")
    addrs, user, got = _asyncpg_reads(url)
    assert addrs == [("127.0.0.1", 5432)]
    assert (user, got) == ("monitor", password)


@pytest.mark.parametrize("password", RAW_PASSWORDS)
def test_redis_py_reads_the_password_and_host_we_read(password: str) -> None:
    """redis-py's own URL parser gets the same user, password and host."""
    url = _redis_url(f"redis://default:{password}@cache.internal:6380/2")
    kwargs = parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    assert (kwargs["username"], kwargs["password"]) == ("default", password)
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("cache.internal", 6380, 2)


def test_the_issue_example_no_longer_gives_asyncpg_a_password_tail_as_port() -> None:
    """Leak 1: `monitor:Aa1@Bb2:Cc3@host` used to make asyncpg fail on port 'Cc3@host:5432'."""
    url = _timescale_url("postgresql://monitor:Aa1@Bb2:Cc3@127.0.0.1:5432/ingest")
    assert url == "postgresql://monitor:Aa1%40Bb2:Cc3@127.0.0.1:5432/ingest"
    assert _asyncpg_reads(url)[0] == [("127.0.0.1", 5432)]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:pw@h:5432/db?password=Aa1@Bb2",
        "postgresql://u@h:5432/db?password=Aa1@Bb2",
        "postgresql://u:pw@h:5432/db?sslpassword=Aa1@Bb2&sslmode=require",
    ],
)
def test_a_query_password_with_a_raw_at_never_shows_its_tail(url: str) -> None:
    """Leak 2: the manifest endpoint (and so the info label) shows no part of the value."""
    settings = build_institutional_ingest_config(environ={"TIMESCALEDB_URL": url})
    endpoint = build_manifest(settings, settings.deployment()).connectors[0].endpoint
    assert "Bb2" not in endpoint
    assert "Aa1" not in endpoint
    assert {"Aa1@Bb2"} <= set(settings.secret_values())


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("TIMESCALEDB_URL", "postgresql://u:pw@h/db?password=Aa1&Bb2"),
        ("TIMESCALEDB_URL", "postgresql://u:pw@h/db?sslmode=require&Aa1Bb2"),
        ("REDIS_URL", "redis://:pw@h:6379/0?password=Aa1&Bb2"),
    ],
)
def test_a_raw_ampersand_in_a_query_value_is_refused_unquoted(variable: str, url: str) -> None:
    """Leak 3: asyncpg would report `bad query field: 'Bb2'`; config refuses it first."""
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ={variable: url})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert "%26" in message
    assert "Aa1" not in message
    assert "Bb2" not in message


@pytest.mark.parametrize(
    ("variable", "url", "parameter"),
    [
        ("REDIS_URL", "redis://127.0.0.1:6379/0?db=Qz9canary", "db"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=Qz9canary", "socket_timeout"),
        ("REDIS_URL", "unix:///run/redis.sock?max_connections=Qz9canary", "max_connections"),
        ("TIMESCALEDB_URL", "postgresql://u@/db?host=/tmp&port=Qz9canary", "port"),
    ],
)
def test_a_typed_query_value_the_driver_cannot_read_is_refused(
    variable: str, url: str, parameter: str
) -> None:
    """Crash 1: `?db=x` passed check-config, then stopped the probe with a traceback."""
    with pytest.raises(ConfigError) as caught:
        build_institutional_ingest_config(environ={variable: url})
    message = str(caught.value)
    assert message.startswith(f"{variable}: ")
    assert repr(parameter) in message
    assert "Qz9canary" not in message


@pytest.mark.parametrize(
    "url",
    [
        # The '@' may end a password holding a raw '?' whose head the driver takes for a host.
        "postgresql://u:1?a=b@h/db",
        "postgresql://h:5432/db?password=Aa1@Bb2",
        "redis://pw/x@host",
    ],
)
def test_a_url_the_drivers_could_read_two_ways_is_refused(url: str) -> None:
    """When no single reading is safe the URL is refused, naming what to percent-encode."""
    with pytest.raises(ConfigError, match="%40") as caught:
        build_institutional_ingest_config(
            environ={"REDIS_URL" if "redis" in url else "TIMESCALEDB_URL": url}
        )
    assert "Bb2" not in str(caught.value)


def test_an_at_in_a_plain_query_value_keeps_the_drivers_reading() -> None:
    """`?application_name=svc@eu` stays a query value: host and user as the drivers read them."""
    url = "postgresql://u:pw@h:5432/db?application_name=svc@eu"
    assert _timescale_url(url) == url
    assert _asyncpg_reads(url)[0] == [("h", 5432)]


def test_split_url_parts_and_ambiguity() -> None:
    """The parser splits at the last '@' and flags a secret query parameter before it."""
    parts = split_url("postgresql://u:p@ss/w0rd@h1:5432,[::1]:5433/db?sslmode=require#x")
    assert parts is not None
    assert (parts.user, parts.password, parts.hosts) == ("u", "p@ss/w0rd", "h1:5432,[::1]:5433")
    assert (parts.path, parts.query, parts.fragment) == ("/db", "sslmode=require", "x")
    assert parts.ports() == [5432, 5433]
    assert not parts.ambiguous
    flagged = split_url("postgresql://u:pw@h/db?token=a@b")
    assert flagged is not None
    assert flagged.ambiguous
    assert split_url("no scheme") is None
    assert split_url("postgresql://u:pw@bad host/db") is None


def test_canonical_url_keeps_escapes_and_everything_after_the_userinfo() -> None:
    """Only the user-info changes; %XX escapes stay, and a canonical URL is left alone."""
    assert canonical_url("redis://u:a%40b@h/0?x=1#f") == "redis://u:a%40b@h/0?x=1#f"
    assert canonical_url("redis://u:a@b@h/0?x=1") == "redis://u:a%40b@h/0?x=1"
    assert canonical_url("postgresql://h/db") == "postgresql://h/db"
    assert query_problem("redis://h/0?db=1&&x=2") is not None
    assert query_problem("redis://h/0?db=1", {"db": int}) is None


def test_url_secrets_covers_both_readings_and_secret_query_values() -> None:
    """Every password reading and secret query value is known, raw and decoded."""
    secrets = url_secrets("postgresql://u:pw%40x@h/db?sslpassword=q%2Fv&sslmode=require")
    assert {"pw%40x", "pw@x", "q%2Fv", "q/v"} <= set(secrets)
    assert "require" not in secrets


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:56379/0", "postgresql://db.internal:5432/ingest"]
)
def test_a_url_without_secrets_yields_none_not_its_port(url: str) -> None:
    """No user-info, no secret parameter: nothing to mask, so logs keep the endpoint readable."""
    assert url_secrets(url) == []
    variable = "REDIS_URL" if url.startswith("redis") else "TIMESCALEDB_URL"
    settings = build_institutional_ingest_config(environ={variable: url})
    assert url not in settings.secret_values()
    assert url.rpartition(":")[2].partition("/")[0] not in settings.secret_values()
