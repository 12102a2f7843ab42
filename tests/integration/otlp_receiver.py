"""A small, real OTLP/HTTP trace receiver for tests: protobuf in, protobuf out, keep-alive.

It decodes every ``ExportTraceServiceRequest`` posted to ``/v1/traces`` (gzip and deflate
bodies too), keeps the raw bodies for byte-level leak scans and answers an empty
``ExportTraceServiceResponse`` over HTTP/1.1, as a collector does. Ids arrive as bytes and are
kept as lower-case hex, the form the exporter prints in logs and exemplars.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedSpan"]

_PATH = "/v1/traces"
_PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span with its resource, ids as hex and attribute values as Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: int
    status_message: str
    resource: dict[str, Any]
    scope: str = ""
    links: list[dict[str, Any]] = field(default_factory=list)

    def strings(self) -> Iterator[str]:
        """Yield every string the span carries: names, keys, values, status, resource."""
        yield self.name
        yield self.status_message
        yield self.scope
        yield from _strings(self.attributes)
        yield from _strings(self.resource)
        for name, attributes in self.events:
            yield name
            yield from _strings(attributes)
        for attributes in self.links:
            yield from _strings(attributes)


class OtlpReceiver:
    """Serve OTLP/HTTP on a free loopback port in a background thread while in use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bodies: list[bytes] = []
        self._headers: list[dict[str, str]] = []
        self._spans: list[ReceivedSpan] = []
        self.bad_requests = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the exporter's session expects

            def do_POST(self) -> None:
                with receiver._lock:
                    receiver._headers.append({k.lower(): v for k, v in self.headers.items()})
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != _PATH or not receiver.accept(body):
                    self._answer(400, b"")
                    return
                self._answer(200, ExportTraceServiceResponse().SerializeToString())

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", _PROTOBUF)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Stay quiet: pytest would show every request otherwise."""

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """Return the full traces URL (for ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{_PATH}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def accept(self, body: bytes) -> bool:
        """Decode one request body and store its spans; False when it is not a trace request."""
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # noqa: BLE001 - protobuf raises its own DecodeError type
            with self._lock:
                self.bad_requests += 1
            return False
        spans = list(_decode(request))
        with self._lock:
            self._bodies.append(body)
            self._spans.extend(spans)
        return True

    def spans(self) -> list[ReceivedSpan]:
        """Return every span received so far."""
        with self._lock:
            return list(self._spans)

    def headers(self) -> list[dict[str, str]]:
        """Return the HTTP headers of every request so far, names in lower case."""
        with self._lock:
            return list(self._headers)

    def bodies(self) -> list[bytes]:
        """Return every raw (decompressed) request body received so far."""
        with self._lock:
            return list(self._bodies)


def _decode(request: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    kind=span.kind,
                    attributes=_attributes(span.attributes),
                    events=[(e.name, _attributes(e.attributes)) for e in span.events],
                    status_code=span.status.code,
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope_spans.scope.name,
                    links=[_attributes(link.attributes) for link in span.links],
                )


def _attributes(pairs: Any) -> dict[str, Any]:
    items: list[KeyValue] = list(pairs)
    return {kv.key: _value(kv.value) for kv in items}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, bytes):
        yield obj.decode("utf-8", "replace")
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield key
            yield from _strings(value)
    elif isinstance(obj, list):
        for item in obj:
            yield from _strings(item)
