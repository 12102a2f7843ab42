from __future__ import annotations

import io
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.config import build_institutional_ingest_config
from exporter.errors import ConfigError
from exporter.manifest import build_manifest, connector_infos, failover_metadata
from exporter.probes._kafka_groups import check_name
from exporter.redaction import Redactor, redact_text, redact_url
from exporter.telemetry.tracing import configure_tracing
from exporter.telemetry.webconfig import load_web_config
from tests.canaries import Planted, canary_hits, cases, postgres_url, redis_url, secret
from tests.logcapture import debug_log_fixture

#: Generated cases per test; with tests/integration/test_redaction_properties.py they make
#: the suite's case count in `make test`.
__all__ = ["EXAMPLES", "debug_log_fixture"]  # the fixture is imported for pytest

EXAMPLES = {"urls": 600, "misplaced": 300, "web_config": 100, "otlp_headers": 100}
# Settings fields that must never hold a credential: a value put there by mistake must not
# come back in an error line, a label or the manifest.
_PLAIN_FIELDS = (
    "INGEST_DEPLOYMENT",
    "INGEST_DIMENSIONS",
    "KAFKA_INGEST_TOPICS",
    "TIMESCALE_FAILOVER_DRILL_DIMENSIONS",
    "TIMESCALE_FAILOVER_DRILL_LABEL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_CLIENT_ID",
    "TIMESCALE_APPLICATION_NAME",
    "KAFKA_INGEST_CONSUMER_GROUP",
    "KAFKA_LAG_GROUPS",
    "REDIS_CACHE_NAMESPACE",
    "REDIS_CACHE_INVALIDATE_PREFIXES",
    "INGEST_WEB_LISTEN_ADDRESS",
    "INGEST_OPERATOR_PROBES",
    "INGEST_PROBE_INTERVAL_SECONDS",
    "TIMESCALE_POOL_MAX_SIZE",
    "INGEST_LOG_LEVEL",
)


# Where redact_text's URL scanner ends a URL in free text (see exporter.redaction).
_PROSE_END_RE = re.compile(r"[\s\"'`<>]")


def _assert_clean(surfaces: dict[str, str], planted: object) -> None:
    hits = canary_hits(surfaces)
    assert not hits, f"canary hits {hits} for {planted}"


@cases(EXAMPLES["urls"])
@given(
    st.one_of(postgres_url("db.internal", 5432), redis_url("cache.internal", 6379)),
    st.sampled_from(["connect to {} failed", "{}", "dsn={} status=down", "error: '{}'."]),
    st.sampled_from(["TIMESCALEDB_URL", "TIMESCALE_REPLICA_URL", "TIMESCALE_WRITE_URL"]),
)
def test_redactor_masks_every_generated_url(
    planted: Planted, template: str, pg_variable: str
) -> None:
    """redact_url, redact_text and a Redactor knowing the settings' secrets leave no canary.

    A PostgreSQL URL goes into the primary, replica or write-endpoint variable. Without the
    secrets, free text is only scrubbed up to the documented limit: a URL in prose ends at
    whitespace or a quote, so only URLs without those are checked that way.
    """
    if "TIMESCALEDB_URL" in planted.env:
        planted.env[pg_variable] = planted.env.pop("TIMESCALEDB_URL")
    (url,) = planted.env.values()
    surfaces = {"redact_url": redact_url(url)}
    if not _PROSE_END_RE.search(url):
        surfaces["redact_text"] = redact_text(template.format(url))
    try:
        config = build_institutional_ingest_config(environ=planted.env)
    except ConfigError as exc:
        surfaces["config_error"] = str(exc)
    else:
        # What a driver can print: the URL as configured (normalised) and its password.
        redactor = Redactor(config.secret_values())
        timescale, redis = config.deployments[0].timescale, config.deployments[0].redis
        configured = {
            "timescale": timescale.url,
            "replica": timescale.replica_url,
            "write": timescale.write_url,
            "redis": redis.url,
        }
        for name, secret_url in configured.items():
            if secret_url is None:
                continue
            text = secret_url.get_secret_value()
            # The configured URL has its user-info percent-encoded: its last '@' ends it.
            password = text.partition("://")[2].rpartition("@")[0].partition(":")[2]
            surfaces[f"redactor {name}"] = redactor(template.format(text))
            surfaces[f"redactor {name} password"] = redactor(template.format(password))
            surfaces[f"redactor {name} decoded"] = redactor(template.format(unquote(password)))
        surfaces["manifest"] = build_manifest(config, config.deployments[0]).model_dump_json()
        surfaces["labels"] = repr(connector_infos(config))
        surfaces["failover"] = json.dumps(failover_metadata(config))
    _assert_clean(surfaces, planted)


@st.composite
def _misplaced(draw: st.DrawFn) -> tuple[Planted, str]:
    """Put a credential-bearing URL, or a ``user:secret`` pair, into a non-secret field.

    Returns the planted case and its shape (``pg``, ``redis``, ``userinfo`` or ``pair``).
    """
    planted = Planted()
    shape = draw(st.sampled_from(["pg", "redis", "userinfo", "pair"]))
    if shape == "pg":
        part = draw(postgres_url("db.internal", 5432))
        value = part.env["TIMESCALEDB_URL"]
        planted.canaries += part.canaries
    elif shape == "redis":
        part = draw(redis_url("cache.internal", 6379))
        value = part.env["REDIS_URL"]
        planted.canaries += part.canaries
    else:
        text, found = draw(secret("mp"))
        planted.canaries += found
        value = f"monitor:{text}@broker:9092" if shape == "userinfo" else f"monitor:{text}"
    field = draw(st.sampled_from(_PLAIN_FIELDS))
    planted.env[field] = draw(st.sampled_from(["{}", "ticks,{}", "{}:topic", "a:{},b:c"])).format(
        value
    )
    if field == "KAFKA_INGEST_TOPICS" or field.startswith("TIMESCALE_FAILOVER"):
        planted.env.setdefault("INGEST_DIMENSIONS", "ticks")
        planted.env["TIMESCALE_FAILOVER_DRILL"] = "true"
    return planted, shape


@cases(EXAMPLES["misplaced"])
@given(_misplaced())
def test_credentials_in_plain_fields_are_never_echoed(generated: tuple[Planted, str]) -> None:
    """A credential in a field that holds none is not quoted by the error, labels or manifest.

    A bare ``name:value`` pair that the field accepts (a drill label ``team:payments``) is
    the operator's own text and is published as such; it must only stay out of error lines.
    Anything with user-info (``user:secret@host``, a URL with a password) must stay out of
    every surface.
    """
    planted, shape = generated
    surfaces: dict[str, str] = {}
    try:
        config = build_institutional_ingest_config(environ=planted.env)
    except ConfigError as exc:
        surfaces["config_error"] = f"ingest-exporter: invalid configuration: {exc}"
    else:
        if shape != "pair":
            surfaces["manifest"] = json.dumps(
                [build_manifest(config, d).model_dump(mode="json") for d in config.deployments]
            )
            surfaces["labels"] = repr(connector_infos(config))
            surfaces["failover"] = json.dumps(failover_metadata(config))
            # Each lag group entry names a check: a label on /metrics and /api/v1/connectivity.
            lag_groups = (g for d in config.deployments for g in d.kafka.lag.groups)
            surfaces["check names"] = repr([check_name(g) for g in lag_groups])
    _assert_clean(surfaces, planted)


@st.composite
def _web_config(draw: st.DrawFn) -> tuple[str, list[str]]:
    text, canaries = draw(secret("wc"))
    where = draw(st.sampled_from(["hash", "bcrypt-shaped", "flow", "header", "passphrase"]))
    value = json.dumps(text)  # a YAML double-quoted scalar holds any printable text
    body = {
        "hash": f"basic_auth_users:\n  prometheus: {value}\n",
        "bcrypt-shaped": f"basic_auth_users:\n  prometheus: {json.dumps('$2b$12$' + text)}\n",
        "flow": f"basic_auth_users: {{prometheus: {value}, other: {value}}}\n",
        "header": f"http_server_config:\n  headers:\n    Authorization: {value}\n",
        "passphrase": f"tls_server_config:\n  key_passphrase: {value}\n",
    }[where]
    return body, canaries


def test_web_config_errors_never_echo_passwords(tmp_path: Path) -> None:
    """A web config with a canary in a password position fails without quoting it."""
    ran = [0]

    @cases(EXAMPLES["web_config"])
    @given(_web_config())
    def case(generated: tuple[str, list[str]]) -> None:
        ran[0] += 1
        body, _ = generated
        path = tmp_path / "web.yml"
        path.write_text(body, encoding="utf-8")
        try:
            load_web_config(path)
        except ConfigError as exc:
            _assert_clean({"web_config_error": str(exc)}, body)
        else:
            pytest.fail(f"accepted: {body!r}")

    case()
    assert ran[0] >= EXAMPLES["web_config"], ran  # the cases really ran


@st.composite
def _otlp_headers(draw: st.DrawFn) -> tuple[str, list[str]]:
    text, canaries = draw(secret("oh"))
    shape = draw(st.sampled_from(["{}", "authorization=Bearer {}", "x-key={},bad", "=={}", "a={}"]))
    return shape.format(text), canaries


def test_otlp_headers_are_never_logged(debug_log: io.StringIO) -> None:
    """Well-formed or malformed OTLP headers holding a canary never reach a log line."""
    ran = [0]

    @cases(EXAMPLES["otlp_headers"])
    @given(_otlp_headers())
    def case(generated: tuple[str, list[str]]) -> None:
        ran[0] += 1
        headers, _ = generated
        debug_log.seek(0)
        debug_log.truncate()
        with pytest.MonkeyPatch.context() as env:
            env.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
            env.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", headers)
            env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
            env.delenv("OTEL_SDK_DISABLED", raising=False)
            env.delenv("OTEL_TRACES_EXPORTER", raising=False)
            provider = configure_tracing(redactor=Redactor())
        assert provider is not None
        provider.shutdown()
        _assert_clean({"log": debug_log.getvalue()}, headers)

    case()
    assert ran[0] >= EXAMPLES["otlp_headers"], ran  # the cases really ran
