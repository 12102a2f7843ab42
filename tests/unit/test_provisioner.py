"""Settings -> one services bundle per deployment: its jobs, lifecycle, probes and views.

The built-in probes are scripted (no service answers); every address refuses connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from exporter.config import IngestSettings
from exporter.connectors.base import ConnectorState
from exporter.errors import ConfigError, ExporterError
from exporter.probes.base import Check, FunctionProbe, Status
from exporter.provisioner import InstitutionalIngestProvisioner, InstitutionalIngestServices
from exporter.state import ExporterState
from exporter.supervisor import TaskState, TaskSupervisor
from tests.waiting import Changes

from .fakes.probes import ProbeScript

Settings = Callable[..., IngestSettings]
#: Every optional job switched on: the cache, the bridge and the manifest publisher.
EVERY_JOB = {
    "REDIS_CACHE_STRATEGY": "institutional",
    "KAFKA_MANIFEST_PUBLISH": "true",
    "INGEST_DIMENSIONS": "trades",
    "KAFKA_INGEST_TOPICS": "trades:md.trades",
}


@asynccontextmanager
async def started(
    services: InstitutionalIngestServices, *, supervise: bool = True
) -> AsyncIterator[InstitutionalIngestServices]:
    """Start the bundle; stop it afterwards, whatever happened."""
    await services.start(supervise=supervise)
    try:
        yield services
    finally:
        await services.stop(timeout=5.0)


def _bundle(settings: IngestSettings, **kwargs: object) -> InstitutionalIngestServices:
    return InstitutionalIngestProvisioner(settings).provision(
        supervisor=TaskSupervisor(),
        state=ExporterState(),
        **kwargs,  # type: ignore[arg-type]
    )


def _connectors(services: InstitutionalIngestServices) -> list[ConnectorState]:
    return [c.state for c in (services.timescale, services.redis, services.kafka)]


async def test_the_builtin_probes_use_the_bundles_own_connectors(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """One probe per connector, each handed that bundle's connector."""
    services = _bundle(offline_settings())
    assert len(probes.probes) == 3
    assert probes.built("timescale").client is services.timescale
    assert probes.built("redis").client is services.redis
    assert probes.built("kafka").client is services.kafka


async def test_a_minimal_bundle_runs_only_the_probe_loop(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Without cache, topics or publishing the only job is the probe loop, which fills the state."""
    services = _bundle(offline_settings())
    async with started(services):
        assert [info.name for info in services.supervisor.describe()] == ["probe-loop:local"]
        assert await services.supervisor.wait_ready("probe-loop:local", timeout=5.0)
        report = services.state.reports["local"]
        assert [(r.connector, r.status) for r in report.results] == [
            ("timescale", Status.OK),
            ("redis", Status.OK),
            ("kafka", Status.OK),
        ]
        assert _connectors(services) == [ConnectorState.STARTED] * 3
        assert services.state.sources == []
        info = services.supervisor.get("probe-loop:local")
        assert info is not None
        # Three missed cycles (interval 1 s + timeout 0.5 s) are a hang.
        assert info.hang_timeout == pytest.approx(3 * (1.0 + 0.5))
    info = services.supervisor.get("probe-loop:local")
    assert info is not None
    assert info.state is TaskState.CANCELLED
    assert _connectors(services) == [ConnectorState.STOPPED] * 3
    assert probes.built("kafka").closed, "the Kafka probe's own clients are closed on stop"


async def test_each_configured_feature_adds_its_named_job(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Cache, bridge, publisher and an ingest job each run as ``<job>:<deployment>``."""
    ran = Changes()

    async def ingest() -> None:
        ran()

    services = _bundle(offline_settings(**EVERY_JOB, INGEST_DEPLOYMENT="eu-1"), ingest=ingest)
    async with started(services):
        names = {info.name for info in services.supervisor.describe()}
        assert names == {
            "probe-loop:eu-1",
            "kafka-bridge:eu-1",
            "cache:eu-1",
            "manifest:eu-1",
            "ingest:eu-1",
        }
        assert services.state.sources == [services.cache, services.bridge, services.publisher]
        await ran.until(lambda: ran.count >= 1)
    assert {info.state for info in services.supervisor.describe()} == {TaskState.CANCELLED}


async def test_start_and_stop_are_idempotent_and_a_stopped_bundle_stays_stopped(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """A second start or stop does nothing; a start after stop is refused (provision anew)."""
    services = _bundle(offline_settings())
    await services.start()
    await services.start()
    assert len(services.supervisor.describe()) == 1
    await services.stop()
    await services.stop()
    assert _connectors(services) == [ConnectorState.STOPPED] * 3
    with pytest.raises(ExporterError, match="provision anew"):
        await services.start()


async def test_a_bundle_that_never_started_stops_without_touching_anything(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Stopping a bundle that was never started leaves its connectors new and closes nothing."""
    services = _bundle(offline_settings())
    await services.stop()
    assert _connectors(services) == [ConnectorState.NEW] * 3
    assert not probes.built("kafka").closed


async def test_unsupervised_start_opens_connectors_for_a_one_off_report(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """``start(supervise=False)`` (the ``probe`` command) runs no job; a report still works."""
    services = _bundle(offline_settings())
    async with started(services, supervise=False):
        assert services.supervisor.describe() == []
        assert _connectors(services) == [ConnectorState.STARTED] * 3
        report = await services.connectivity_report()
        assert report.ok
        assert services.state.reports == {}, "a one-off report is not recorded"


async def test_configured_and_given_probes_are_merged_over_the_builtin_ones(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Operator probes join the report; a probe with a built-in's name replaces that one."""
    settings = offline_settings(
        INGEST_OPERATOR_PROBES="orders_api=tests.fixtures.operator_probes:orders_api"
    )
    replacement = FunctionProbe("redis", "ping", lambda: Check("ping", Status.DEGRADED))
    provisioner = InstitutionalIngestProvisioner(settings, probes=[replacement])
    services = provisioner.provision()
    async with started(services, supervise=False):
        extra = FunctionProbe("kafka", "lag", lambda: True)
        report = await services.connectivity_report([extra])
    assert [(r.connector, r.check, r.status) for r in report.results] == [
        ("timescale", "connect", Status.OK),
        ("redis", "ping", Status.DEGRADED),
        ("kafka", "metadata", Status.OK),
        ("operator", "orders_api", Status.OK),
        ("kafka", "lag", Status.OK),
    ]
    assert probes.calls["redis"] == 0, "the replaced built-in probe did not run"


async def test_supervision_lists_the_probe_loop_first_under_every_connector(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """Each connector's views start with the probe loop, then the jobs that serve it."""
    services = _bundle(offline_settings(**EVERY_JOB))
    assert services.supervision() == {"timescale": [], "redis": [], "kafka": []}
    async with started(services):
        views = services.supervision()
        assert {name: [v.task for v in tasks] for name, tasks in views.items()} == {
            "timescale": ["probe-loop:local"],
            "redis": ["probe-loop:local", "cache:local"],
            "kafka": ["probe-loop:local", "kafka-bridge:local", "manifest:local"],
        }
        manifest = services.managed_manifest()
    redis = manifest["connectors"][1]
    assert [v["task"] for v in redis["supervision"]] == ["probe-loop:local", "cache:local"]
    assert set(redis["metadata"]["live"]) == {"counters", "refreshed_at"}
    assert "unit-test-pw" not in repr(manifest)


async def test_failover_metadata_follows_the_drill_settings(
    offline_settings: Settings, probes: ProbeScript
) -> None:
    """The bundle reports the drill settings when drills are on, ``None`` otherwise."""
    assert _bundle(offline_settings()).failover_metadata() is None
    on = _bundle(offline_settings(TIMESCALE_FAILOVER_DRILL="true", INGEST_DIMENSIONS="trades"))
    metadata = on.failover_metadata()
    assert metadata is not None
    assert metadata["enabled"] is True


def test_the_provisioner_knows_every_secret_and_loads_operator_probes_early(
    offline_settings: Settings,
) -> None:
    """Its redactor masks the configured passwords; a bad operator target fails at once."""
    provisioner = InstitutionalIngestProvisioner(offline_settings())
    assert "unit-test-pw" not in provisioner.redactor("auth failed for unit-test-pw")
    with pytest.raises(ConfigError, match=r"probes\.operator"):
        InstitutionalIngestProvisioner(
            offline_settings(INGEST_OPERATOR_PROBES="bad=tests.fixtures.nowhere:probe")
        )


async def test_provision_builds_the_named_deployment_with_its_own_defaults(
    offline_settings: Settings, probes: ProbeScript, tmp_path: Path
) -> None:
    """The first deployment by default, another by name; a new supervisor and state each."""
    config = tmp_path / "two.yaml"
    config.write_text("deployments:\n  - name: eu-1\n  - name: us-1\n", encoding="utf-8")
    provisioner = InstitutionalIngestProvisioner(offline_settings(config))
    first, second = provisioner.provision(), provisioner.provision(deployment="us-1")
    assert (first.name, second.name) == ("eu-1", "us-1")
    assert first.supervisor is not second.supervisor
    assert first.state is not second.state
    with pytest.raises(KeyError):
        provisioner.provision(deployment="nowhere")
