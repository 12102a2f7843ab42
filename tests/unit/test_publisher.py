"""Unit tests of the manifest publisher with a fake producer and a fake admin client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from structlog.testing import capture_logs

from exporter import __version__
from exporter.config import build_institutional_ingest_config
from exporter.errors import ConnectorError, ManifestRedactionError
from exporter.provisioner import InstitutionalIngestProvisioner
from exporter.publisher import METRIC_SPECS, ManifestPublisher, Producer
from exporter.redaction import MASK, Redactor
from exporter.supervisor import Heartbeat, RestartPolicy, TaskState, TaskSupervisor
from tests.waiting import Changes

from .fakes.kafka import FakeAdmin, FakeKafkaConnector, topic_metadata

SECRET = "s3cret-canary-9f2"
TOPIC = "manifest.test"


class FakeProducer:
    """Record what is sent; optionally fail or hang."""

    def __init__(self, *, fail: BaseException | None = None, hang: bool = False) -> None:
        self.fail = fail
        self.hang = hang
        self.sent: list[dict[str, Any]] = []
        #: Called after each message sent.
        self.changes = Changes()
        self.started = self.stopped = False
        self.options: dict[str, Any] = {}

    async def start(self) -> None:
        """Mark the producer started."""
        self.started = True

    async def stop(self) -> None:
        """Mark the producer stopped."""
        self.stopped = True

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        *,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Record the message, or fail, or never return."""
        if self.hang:
            await asyncio.Event().wait()
        if self.fail is not None:
            raise self.fail
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})
        self.changes()
        return SimpleNamespace(partition=0, offset=len(self.sent) - 1)

    def documents(self) -> list[dict[str, Any]]:
        """Return the sent documents, decoded."""
        return [json.loads(m["value"]) for m in self.sent]


def make(
    producer: FakeProducer,
    snapshot: Callable[[], dict[str, Any]],
    *,
    admin: FakeAdmin | None = None,
    **options: Any,
) -> ManifestPublisher:
    """Build a publisher of deployment ``eu-1`` on fakes; checks every 20 ms by default."""

    def factory(opts: dict[str, Any]) -> Producer:
        producer.options = opts
        return producer

    options.setdefault("interval", 300.0)
    options.setdefault("check_interval", 0.02)
    return ManifestPublisher(
        FakeKafkaConnector(admin or FakeAdmin(topics=[topic_metadata(TOPIC)])),
        deployment="eu-1",
        topic=TOPIC,
        snapshot=snapshot,
        producer_factory=factory,
        **options,
    )


def heartbeat() -> Heartbeat:
    """Return a heartbeat not attached to any supervisor."""
    return Heartbeat(asyncio.get_running_loop().time)


async def run_for(publisher: ManifestPublisher, seconds: float) -> None:
    """Run the publisher for ``seconds``, then cancel it and wait for its cleanup."""
    task = asyncio.create_task(publisher.run(heartbeat()))
    # Not a wait: callers count what the publisher does within a span of time.
    await asyncio.sleep(seconds)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def snap(version: int = 1) -> dict[str, Any]:
    """Return a small snapshot whose content depends on ``version``."""
    return {"manifest": {"deployment": "eu-1", "version": version}, "failover": None}


async def test_start_publishes_document_keyed_by_deployment() -> None:
    """The first document goes out at start, keyed by the UTF-8 deployment name."""
    producer = FakeProducer()
    with capture_logs() as logs:
        await run_for(make(producer, snap), 0.1)
    assert len(producer.sent) == 1
    message = producer.sent[0]
    assert message["topic"] == "manifest.test"
    assert message["key"] == b"eu-1"
    assert message["headers"] == [("content-type", b"application/json")]
    doc = json.loads(message["value"])
    assert set(doc) == {"deployment", "published_at", "exporter_version", "manifest", "failover"}
    assert doc["deployment"] == "eu-1"
    assert doc["exporter_version"] == __version__
    assert doc["manifest"] == snap()["manifest"]
    assert doc["failover"] is None
    published = [e for e in logs if e["event"] == "manifest_published"]
    assert published[0]["reason"] == "start"
    assert (published[0]["partition"], published[0]["offset"]) == (0, 0)
    assert producer.started
    assert producer.stopped


async def test_producer_options_are_bounded_and_acknowledged_by_all() -> None:
    """The producer waits for all replicas, lingers briefly and has a bounded request timeout."""
    producer = FakeProducer()
    await run_for(make(producer, snap, deadline=1.5), 0.05)
    assert producer.options["acks"] == "all"
    assert producer.options["enable_idempotence"] is False
    assert producer.options["linger_ms"] <= 10
    assert producer.options["request_timeout_ms"] == 1500
    assert producer.options["bootstrap_servers"] == ["127.0.0.1:59092"]


async def test_a_changed_snapshot_is_published_promptly_and_only_once() -> None:
    """A content change is sent at the next check, and an unchanged snapshot is not resent."""
    producer = FakeProducer()
    current = {"version": 1}
    checks = Changes()

    def snapshot() -> dict[str, Any]:
        checks()
        return snap(current["version"])

    publisher = make(producer, snapshot)
    task = asyncio.create_task(publisher.run(heartbeat()))
    await producer.changes.until(lambda: len(producer.sent) == 1)
    with capture_logs() as logs:
        current["version"] = 2
        await producer.changes.until(lambda: len(producer.sent) == 2, timeout=0.5)
        published_at = checks.count
        # Several more checks with the same content.
        await checks.until(lambda: checks.count >= published_at + 7)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [d["manifest"]["version"] for d in producer.documents()] == [1, 2]
    assert [e["reason"] for e in logs if e["event"] == "manifest_published"] == ["change"]


async def test_volatile_fields_do_not_count_as_a_change() -> None:
    """Timestamps and counters under volatile keys change without triggering a republish."""
    producer = FakeProducer()
    tick = {"n": 0}

    def moving() -> dict[str, Any]:
        tick["n"] += 1
        live = {"refreshed_at": tick["n"], "counters": {"hits": tick["n"]}, "namespace": "x"}
        return {"manifest": {"live": live}, "failover": None}

    await run_for(make(producer, moving), 0.2)
    assert tick["n"] > 3
    assert len(producer.sent) == 1


async def test_unchanged_document_is_republished_every_interval() -> None:
    """Without changes the document is still sent again once per interval."""
    producer = FakeProducer()
    with capture_logs() as logs:
        await run_for(make(producer, snap, interval=0.1, check_interval=0.05), 0.36)
    reasons = [e["reason"] for e in logs if e["event"] == "manifest_published"]
    assert reasons[0] == "start"
    assert reasons[1:] == ["interval"] * (len(reasons) - 1)
    assert 3 <= len(reasons) <= 5  # one per check (about 8) would mean no interval logic


def test_check_interval_defaults_to_at_most_five_seconds() -> None:
    """The change check runs every min(5, interval) seconds unless configured."""
    long = make(FakeProducer(), snap, interval=300.0, check_interval=None)
    short = make(FakeProducer(), snap, interval=2.0, check_interval=None)
    assert (long.check_interval, short.check_interval) == (5.0, 2.0)
    with pytest.raises(ValueError, match="must be > 0"):
        make(FakeProducer(), snap, interval=0.0)


async def test_redaction_is_applied_to_every_string_and_secret_key() -> None:
    """Known secrets, URL passwords and secret-keyed values never reach the sent bytes."""
    producer = FakeProducer()
    leaky = {
        "manifest": {
            "endpoint": f"postgresql://ingest:{SECRET}@db:5432/ingest",
            "note": f"connected with {SECRET}",
            "api_token": "tok-123456",
            "sasl_username": None,
            SECRET: "key position",
        },
        "failover": {"detail": "redis://:pw-in-url@cache:6379/0"},
    }
    publisher = make(producer, lambda: leaky, redact=Redactor([SECRET]))
    await run_for(publisher, 0.05)
    raw = producer.sent[0]["value"]
    for secret in (SECRET, "tok-123456", "pw-in-url"):
        assert secret.encode() not in raw
    doc = json.loads(raw)
    assert doc["manifest"]["api_token"] == MASK
    assert doc["manifest"]["sasl_username"] is None  # an absent user stays visibly absent
    assert doc["manifest"]["endpoint"] == f"postgresql://ingest:{MASK}@db:5432/ingest"


def test_envelope_is_kept_while_the_body_is_redacted() -> None:
    """The deployment name stays readable (it is the key) even if a known secret contains it."""
    publisher = make(FakeProducer(), snap, redact=Redactor(["eu-1"]))
    doc = json.loads(
        publisher.render({"manifest": {"name": "eu-1"}, "failover": None}, published_at=0)
    )
    assert doc["deployment"] == "eu-1"
    assert doc["published_at"] == "1970-01-01T00:00:00.000+00:00"
    assert doc["manifest"] == {"name": MASK}


def test_text_level_net_catches_what_string_redaction_missed() -> None:
    """Whatever the whole-text pass still changes is sent in its redacted form."""

    def redact(text: str) -> str:
        return text.replace('"pair": "value"', f'"pair": "{MASK}"')

    publisher = make(FakeProducer(), snap, redact=redact)
    with capture_logs() as logs:
        body = publisher.render({"manifest": {"pair": "value"}, "failover": None})
    assert json.loads(body)["manifest"]["pair"] == MASK
    assert any(e["event"] == "manifest_redaction_net_caught" for e in logs)


def test_unparseable_redaction_refuses_to_publish() -> None:
    """A redactor that breaks the JSON makes render raise instead of sending broken text."""
    publisher = make(FakeProducer(), snap, redact=lambda t: t if len(t) < 40 else t[:-1])
    with pytest.raises(ManifestRedactionError):
        publisher.render(snap())


async def test_metrics_and_on_change_follow_publishes_and_failures() -> None:
    """Counters, the last-publish time and on_change track successes and failures."""
    changes: list[int] = []
    producer = FakeProducer()
    publisher = make(producer, snap, on_change=lambda: changes.append(1))
    names = [s.exposed_name for s in METRIC_SPECS]
    assert names == [
        "ingest_manifest_published_total",
        "ingest_manifest_publish_failures_total",
        "ingest_manifest_last_published_timestamp_seconds",
    ]
    before = {f.name: f.samples for f in publisher.metric_families()}
    assert before["ingest_manifest_last_published_timestamp_seconds"] == []
    await run_for(publisher, 0.05)
    producer.fail = ConnectionError("broker went away")
    with pytest.raises(ConnectorError) as caught:
        await publisher.run(heartbeat())
    assert caught.value.reason == "error"
    samples = {s.name: s for f in publisher.metric_families() for s in f.samples}
    assert samples["ingest_manifest_published_total"].value == 1
    assert samples["ingest_manifest_publish_failures_total"].value == 1
    assert samples["ingest_manifest_published_total"].labels == {"deployment": "eu-1"}
    assert samples["ingest_manifest_last_published_timestamp_seconds"].value > 1.6e9
    assert len(changes) == 2


async def test_a_send_past_its_deadline_raises_a_timeout_and_closes_the_producer() -> None:
    """A broker that never acknowledges makes run raise within the deadline, not hang."""
    producer = FakeProducer(hang=True)
    publisher = make(producer, snap, deadline=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
        await publisher.run(heartbeat())
    assert loop.time() - started < 1.0
    assert caught.value.reason == "timeout"
    assert producer.stopped
    failed = [e for e in logs if e["event"] == "manifest_publish_failed"]
    assert failed[0]["stage"] == "send"
    assert failed[0]["reason"] == "timeout"


async def test_a_stuck_producer_close_is_bounded() -> None:
    """Cancelling run returns within the deadline even when the producer's stop never ends."""
    producer = FakeProducer()

    async def stuck() -> None:
        await asyncio.Event().wait()

    producer.stop = stuck  # type: ignore[method-assign]  # a close that never finishes
    publisher = make(producer, snap, deadline=0.2)
    task = asyncio.create_task(publisher.run(heartbeat()))
    await producer.changes.until(lambda: len(producer.sent) == 1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with capture_logs() as logs:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert loop.time() - started < 1.0
    assert any(e["event"] == "manifest_producer_close_timed_out" for e in logs)
    assert publisher.failures == 0


@pytest.mark.parametrize(("brokers", "replication"), [(1, 1), (2, 2), (5, 3)])
async def test_a_missing_topic_is_created_compacted(brokers: int, replication: int) -> None:
    """A missing topic is created with one partition, compaction and RF = min(3, brokers)."""
    admin = FakeAdmin(brokers=brokers)
    with capture_logs() as logs:
        await run_for(make(FakeProducer(), snap, admin=admin), 0.05)
    (topic,) = admin.created
    assert (topic.name, topic.num_partitions) == ("manifest.test", 1)
    assert topic.replication_factor == replication
    assert topic.topic_configs == {"cleanup.policy": "compact"}
    assert any(e["event"] == "manifest_topic_created" for e in logs)


async def test_a_topic_that_may_not_be_created_is_logged_and_raised() -> None:
    """Without permission to create the topic, run logs manifest_topic_missing and raises."""
    admin = FakeAdmin(create_code=29)  # TOPIC_AUTHORIZATION_FAILED
    producer = FakeProducer()
    publisher = make(producer, snap, admin=admin)
    with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
        await publisher.run(heartbeat())
    assert caught.value.reason == "permission"
    missing = [e for e in logs if e["event"] == "manifest_topic_missing"]
    assert missing[0]["topic"] == "manifest.test"
    assert missing[0]["error_type"] == "TopicAuthorizationFailedError"
    assert not producer.started
    assert publisher.failures == 1


async def test_a_failed_topic_check_drops_the_admin_client_within_the_deadline() -> None:
    """A broker error while checking the topic resets the admin client, bounded by the deadline."""

    class BrokenAdmin(FakeAdmin):
        async def describe_topics(
            self, topics: Sequence[str] | None = None
        ) -> list[dict[str, Any]]:
            raise ConnectionRefusedError("broker gone")

    class StuckResetKafka(FakeKafkaConnector):
        async def reset(self) -> None:
            self.resets += 1
            await asyncio.Event().wait()  # the connector's lock is held by a stuck bootstrap

    kafka = StuckResetKafka(BrokenAdmin(topics=[topic_metadata(TOPIC)]))
    publisher = ManifestPublisher(
        kafka,
        deployment="eu-1",
        topic=TOPIC,
        interval=300.0,
        snapshot=snap,
        deadline=0.05,
        producer_factory=lambda options: FakeProducer(),
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ConnectorError) as caught:
        await publisher.run(heartbeat())
    assert loop.time() - started < 1.0
    assert caught.value.reason == "refused"
    assert kafka.resets == 1


async def test_an_existing_topic_without_compaction_is_warned_about() -> None:
    """An existing topic with cleanup.policy=delete is used, with a warning."""
    admin = FakeAdmin(topics=[topic_metadata(TOPIC)], policy="delete")
    producer = FakeProducer()
    with capture_logs() as logs:
        await run_for(make(producer, snap, admin=admin), 0.05)
    assert admin.created == []
    assert len(producer.sent) == 1
    warned = [e for e in logs if e["event"] == "manifest_topic_not_compacted"]
    assert warned[0]["cleanup_policy"] == "delete"


async def test_a_broken_snapshot_raises_its_own_error() -> None:
    """A snapshot that raises is not disguised as a broker failure."""

    def broken() -> dict[str, Any]:
        raise KeyError("no such deployment")

    publisher = make(FakeProducer(), broken)
    with pytest.raises(KeyError):
        await publisher.run(heartbeat())
    assert publisher.failures == 1


async def test_supervisor_restarts_a_failed_run_until_it_publishes() -> None:
    """Under TaskSupervisor a broker failure restarts the run, which then publishes."""
    producer = FakeProducer(fail=ConnectionError("refused"))
    changes = Changes()
    publisher = make(producer, snap, on_change=changes)
    supervisor = TaskSupervisor()
    policy = RestartPolicy(backoff_initial=0.01, backoff_max=0.02)
    supervisor.create(publisher.run, name="manifest:eu-1", restart=policy)
    await changes.until(lambda: publisher.failures >= 2)
    producer.fail = None
    assert await supervisor.wait_ready("manifest:eu-1", timeout=2.0)
    assert len(producer.sent) == 1
    info = supervisor.get("manifest:eu-1")
    assert info is not None
    assert info.state is TaskState.RUNNING
    assert info.last_error_type == "ConnectorError"
    assert await supervisor.cancel_all(timeout=1.0)


async def test_the_bundle_wires_its_publisher_from_settings_snapshot_and_redactor() -> None:
    """The bundle's publisher takes topic, interval, name, snapshot and redactor from it."""
    settings = build_institutional_ingest_config(
        environ={
            "INGEST_DEPLOYMENT": "ap-2",
            "KAFKA_MANIFEST_PUBLISH": "true",
            "KAFKA_MANIFEST_TOPIC": "ops.manifest",
            "KAFKA_MANIFEST_INTERVAL_SECONDS": "60",
            "REDIS_URL": f"redis://:{SECRET}@127.0.0.1:6379/0",
            "INGEST_DIMENSIONS": "trades",
            "TIMESCALE_FAILOVER_DRILL": "true",
        }
    )
    services = InstitutionalIngestProvisioner(settings).provision()
    try:
        publisher = services.publisher
        assert publisher is not None
        assert (publisher.deployment, publisher.topic) == ("ap-2", "ops.manifest")
        # The change check runs every min(5, interval) seconds.
        assert (publisher.interval, publisher.check_interval) == (60.0, 5.0)
        assert publisher.kafka is services.kafka
        body = publisher.render(publisher._snapshot())
    finally:
        services.runner.close()
    doc = json.loads(body)
    assert doc["manifest"]["deployment"] == "ap-2"
    assert doc["failover"]["dimensions"] == ["trades"]
    assert SECRET.encode() not in body
