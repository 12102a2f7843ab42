"""Drive one configuration through the exporter in-process and collect every output surface.

The surfaces are what an operator or a scraper can see: the configuration error line, the
manifest, ``ingest_connector_info`` and every other series in both exposition formats, the
connectivity report (``/api/v1/connectivity`` and ``probe --format json``), the failover
document, every log line at DEBUG and every exported span. The probes run for real: the
drivers connect to whatever the URLs name.
"""

from __future__ import annotations

import io
import json
import traceback
from collections.abc import Mapping

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from exporter.config import build_institutional_ingest_config
from exporter.errors import ConfigError
from exporter.manifest import connector_infos
from exporter.provisioner import InstitutionalIngestProvisioner
from exporter.redaction import Redactor
from exporter.state import ExporterState
from exporter.telemetry.metrics import IngestCollector, MetricsRenderer
from exporter.telemetry.tracing import configure_tracing, shutdown_tracing, tracer_for

__all__ = ["cycle_surfaces", "span_text"]

#: Settings every case shares: short probe timeout (black holes), no background jobs.
BASE_ENV = {
    "INGEST_PROBE_TIMEOUT_SECONDS": "0.5",
    "INGEST_PROBE_INTERVAL_SECONDS": "5",
    "KAFKA_MANIFEST_PUBLISH": "false",
    "REDIS_CACHE_STRATEGY": "disabled",
}


def span_text(spans: InMemorySpanExporter) -> str:
    """Return every exported span's name, attributes, events, links, status and resource."""
    parts: list[str] = []
    for span in spans.get_finished_spans():
        parts.append(span.name)
        parts.append(json.dumps(dict(span.attributes or {}), default=str))
        parts.extend(
            event.name + json.dumps(dict(event.attributes or {}), default=str)
            for event in span.events
        )
        parts.extend(json.dumps(dict(link.attributes or {}), default=str) for link in span.links)
        parts.append(str(span.status.description))
        parts.append(json.dumps(dict(span.resource.attributes), default=str))
    return "\n".join(parts)


async def cycle_surfaces(env: Mapping[str, str], log: io.StringIO) -> dict[str, str]:
    """Configure from ``env``, run one probe cycle, return every surface by name.

    ``log`` is the buffer the process's logging writes to (at DEBUG); it is emptied first.
    A configuration error ends the case with its one CLI line; anything else that escapes
    is a crash, and its traceback (what the CLI would print) is a surface too.
    """
    log.seek(0)
    log.truncate()
    try:
        settings = build_institutional_ingest_config(environ={**BASE_ENV, **env})
    except ConfigError as exc:
        return {"config_error": f"ingest-exporter: invalid configuration: {exc}"}
    spans = InMemorySpanExporter()
    redactor = Redactor(settings.secret_values())
    provider = configure_tracing(redactor=redactor, exporter=spans)
    provisioner = InstitutionalIngestProvisioner(
        settings, redactor=redactor, tracer=tracer_for(provider)
    )
    services = provisioner.provision()
    surfaces: dict[str, str] = {}
    try:
        await services.start(supervise=False)
        report = await services.connectivity_report()
    except Exception:  # noqa: BLE001 - an escape is a finding: its traceback is scanned
        surfaces["uncaught"] = traceback.format_exc()
        return surfaces
    finally:
        surfaces["manifest"] = json.dumps(services.managed_manifest())
        await services.stop()
        await shutdown_tracing(provider, timeout=1.0)
        surfaces["spans"] = span_text(spans)
        surfaces["log"] = log.getvalue()
    state = ExporterState()
    state.set_connectors(connector_infos(settings))
    state.set_failover(services.failover_metadata())
    state.record(report)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IngestCollector(state))
    renderer = MetricsRenderer(registry, state)
    surfaces["metrics"] = renderer.render(None)[0].decode()
    surfaces["openmetrics"] = renderer.render("application/openmetrics-text")[0].decode()
    surfaces["connectivity"] = json.dumps({"reports": [report.as_dict()]})
    surfaces["failover"] = json.dumps(services.failover_metadata())
    return surfaces
