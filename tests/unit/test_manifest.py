"""The connector manifest: an allow-list of fields, redacted endpoints, supervision, failover."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from exporter import __version__
from exporter.config import IngestSettings, build_institutional_ingest_config
from exporter.manifest import (
    ManifestEntry,
    SupervisionView,
    build_manifest,
    connector_infos,
    failover_metadata,
)
from exporter.redaction import MASK

PASSWORDS = ("Pg-Cn7-pw", "R3dis-Cn7", "Kf-Cn7-pw")
ENV = {
    "TIMESCALEDB_URL": f"postgresql://monitor:{PASSWORDS[0]}@db.internal:5432/markets",
    "REDIS_URL": f"rediss://default:{PASSWORDS[1]}@cache.internal:6380/0",
    "KAFKA_BROKERS": "kafka-1.internal:9092,kafka-2.internal:9092",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "kafka-svc",
    "KAFKA_SASL_PASSWORD": PASSWORDS[2],
    "KAFKA_INGEST_TOPICS": "trades:md.trades",
    "INGEST_DIMENSIONS": "trades,quotes",
    "INGEST_DEPLOYMENT": "eu-1",
}


def _settings(**env: str) -> IngestSettings:
    return build_institutional_ingest_config(environ=ENV | env)


def _manifest(settings: IngestSettings, **kwargs: Any) -> dict[str, Any]:
    return build_manifest(settings, settings.deployments[0], **kwargs).model_dump(mode="json")


def _view(state: str = "running", task: str = "probe-loop:eu-1") -> SupervisionView:
    return SupervisionView(task=task, state=state, restarts=0)


def test_every_field_is_named_by_the_allow_list() -> None:
    """The manifest holds exactly the allow-listed keys, per connector kind."""
    manifest = _manifest(_settings())
    assert set(manifest) == {"deployment", "exporter_version", "connectors"}
    assert (manifest["deployment"], manifest["exporter_version"]) == ("eu-1", __version__)
    entries = {entry["name"]: entry for entry in manifest["connectors"]}
    assert list(entries) == ["timescale", "redis", "kafka"]
    for name, entry in entries.items():
        assert set(entry) == {
            "name",
            "kind",
            "configured",
            "supervised",
            "endpoint",
            "metadata",
            "supervision",
        }
        assert (entry["kind"], entry["configured"]) == (name, True)
    assert set(entries["timescale"]["metadata"]) == {
        "database",
        "application_name",
        "pool_max_size",
        "statement_timeout_seconds",
        "dimensions",
    }
    assert set(entries["redis"]["metadata"]) == {"cache_policy"}
    assert set(entries["kafka"]["metadata"]) == {
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "client_id",
        "consumer_group",
        "topics",
        "auto_offset_reset",
        "commit_mode",
        "manifest_topic",
    }


def test_no_credential_reaches_the_manifest() -> None:
    """Passwords never appear, the SASL user is masked; hosts and the database stay readable."""
    manifest = _manifest(_settings())
    text = json.dumps(manifest)
    for secret in (*PASSWORDS, "kafka-svc"):
        assert secret not in text
    entries = {entry["name"]: entry for entry in manifest["connectors"]}
    assert (
        entries["timescale"]["endpoint"] == f"postgresql://monitor:{MASK}@db.internal:5432/markets"
    )
    assert entries["timescale"]["metadata"]["database"] == "markets"
    assert entries["redis"]["endpoint"] == f"rediss://default:{MASK}@cache.internal:6380/0"
    assert entries["kafka"]["endpoint"] == "kafka-1.internal:9092,kafka-2.internal:9092"
    kafka = entries["kafka"]["metadata"]
    assert kafka["sasl_username"] == MASK
    assert kafka["topics"] == [{"dimension": "trades", "topic": "md.trades"}]
    assert [d["name"] for d in entries["timescale"]["metadata"]["dimensions"]] == [
        "trades",
        "quotes",
    ]


def test_masked_hosts_keep_only_ports() -> None:
    """With mask_hosts no host name is shown in any endpoint; the ports still are."""
    manifest = _manifest(_settings(INGEST_MASK_HOSTS="true"))
    endpoints = [entry["endpoint"] for entry in manifest["connectors"]]
    for host in ("db.internal", "cache.internal", "kafka-1.internal", "kafka-2.internal"):
        assert all(host not in endpoint for endpoint in endpoints), host
    assert ":5432" in endpoints[0]
    assert ":6380" in endpoints[1]
    assert endpoints[2].count(":9092") == 2


def test_the_manifest_topic_is_shown_only_when_published() -> None:
    """The manifest topic is named when publishing is on and null when it is off."""
    on = _manifest(_settings(KAFKA_MANIFEST_PUBLISH="true", KAFKA_MANIFEST_TOPIC="ops.manifest"))
    off = _manifest(_settings(KAFKA_MANIFEST_PUBLISH="false"))
    default = _manifest(_settings(KAFKA_MANIFEST_TOPIC="ops.manifest"))
    assert on["connectors"][2]["metadata"]["manifest_topic"] == "ops.manifest"
    assert off["connectors"][2]["metadata"]["manifest_topic"] is None
    # Publishing is opt-in: by default nothing is written to Kafka.
    assert default["connectors"][2]["metadata"]["manifest_topic"] is None


@pytest.mark.parametrize(
    ("views", "supervised"),
    [
        ([], False),
        ([_view()], True),
        ([_view(), _view("backoff", "cache:eu-1")], True),
        ([_view(), _view("failed", "cache:eu-1")], False),
    ],
)
def test_supervised_means_served_by_tasks_none_of_which_failed(
    views: list[SupervisionView], supervised: bool
) -> None:
    """A connector is supervised when at least one task serves it and none has failed."""
    manifest = _manifest(_settings(), supervision={"redis": views})
    redis = manifest["connectors"][1]
    assert redis["supervised"] is supervised
    assert redis["supervision"] == [view.model_dump(mode="json") for view in views]
    assert manifest["connectors"][0]["supervised"] is False, "no views given for timescale"


def test_live_metadata_is_merged_under_its_own_key() -> None:
    """Metadata read by background tasks lands under ``live``, beside the static metadata."""
    manifest = _manifest(_settings(), live={"redis": {"keys": 3}})
    redis = manifest["connectors"][1]["metadata"]
    assert redis["live"] == {"keys": 3}
    assert "cache_policy" in redis
    assert "live" not in manifest["connectors"][0]["metadata"]


def test_the_output_models_refuse_fields_they_do_not_name() -> None:
    """A field outside the allow-list is a validation error, not silently carried along."""
    entry = build_manifest(_settings(), _settings().deployments[0]).connectors[0]
    with pytest.raises(ValidationError):
        ManifestEntry(**entry.model_dump(), password="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SupervisionView(task="t", state="running", restarts=0, error_text="x")  # type: ignore[call-arg]


def test_connector_infos_has_one_redacted_row_per_deployment_and_connector(
    tmp_path: Path,
) -> None:
    """Every deployment contributes its three connectors, endpoints redacted."""
    config = tmp_path / "two.yaml"
    config.write_text(
        "deployments:\n"
        "  - name: eu-1\n"
        "  - name: us-1\n"
        "    redis: {url: 'redis://:Us-Cn7-pw@cache.us:6379/0'}\n",
        encoding="utf-8",
    )
    settings = build_institutional_ingest_config(environ=ENV, config_file=config)
    rows = connector_infos(settings)
    assert [(r.deployment, r.connector, r.kind) for r in rows] == [
        (d, c, c) for d in ("eu-1", "us-1") for c in ("timescale", "redis", "kafka")
    ]
    assert rows[4].endpoint == f"redis://:{MASK}@cache.us:6379/0"
    assert not any(secret in repr(rows) for secret in (*PASSWORDS, "Us-Cn7-pw"))


def test_failover_metadata_is_absent_unless_drills_are_on() -> None:
    """Drills off: ``None``; on: the drill settings as JSON data."""
    assert failover_metadata(_settings()) is None
    metadata = failover_metadata(
        _settings(TIMESCALE_FAILOVER_DRILL="true", TIMESCALE_FAILOVER_DRILL_DIMENSIONS="trades")
    )
    assert metadata is not None
    assert metadata["enabled"] is True
    assert metadata["dimensions"] == ["trades"]
    json.dumps(metadata)  # plain JSON data
