from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge

from exporter.telemetry._exposition import negotiate

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# What Prometheus 3 sends by default.
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    Gauge("demo_value", "A value.", registry=registry).set(1)
    return registry


@pytest.mark.parametrize(
    "accept",
    [
        "application/openmetrics-text; version=abc",
        "application/openmetrics-text;version=1.a.0",
        "application/openmetrics-text; version=99.0.0",
        "application/openmetrics-text; version=",
        "application/openmetrics-text; version",
        "application/openmetrics-text; =1.0.0",
        "text/plain; version=abc",
        "text/plain; version=1.0",
        ";;;,,,",
        "application/openmetrics-text; version=1.0.0" + ", x" * 600,
        "\x00\x01",
    ],
)
def test_malformed_accept_falls_back_to_the_text_format(accept: str) -> None:
    """A malformed or unsupported Accept header gets the classic text format, not an error."""
    encoder, content_type = negotiate(accept)
    assert content_type == TEXT
    assert b"demo_value 1.0" in encoder(_registry())


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, TEXT),
        ("", TEXT),
        ("application/openmetrics-text", OPENMETRICS),
        ("application/openmetrics-text; version=1.0.0", OPENMETRICS + "; escaping=underscores"),
        (PROMETHEUS_3, OPENMETRICS + "; escaping=allow-utf-8"),
        ("application/openmetrics-text; version=abc, text/plain", TEXT),
        ("application/openmetrics-text; version=abc, application/openmetrics-text", OPENMETRICS),
    ],
)
def test_valid_accept_headers_keep_their_format(accept: str | None, expected: str) -> None:
    """Well-formed headers are negotiated as prometheus_client does; bad entries are skipped."""
    assert negotiate(accept)[1] == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["application/openmetrics-text", "text/plain", "*/*", "x/y", ""]),
            st.lists(st.tuples(st.sampled_from(["version", "escaping", "q", ""]), st.text())),
        ),
        max_size=4,
    )
)
def test_any_accept_header_renders_in_a_known_format(
    entries: list[tuple[str, list[tuple[str, str]]]],
) -> None:
    """Whatever the Accept header, negotiation never raises and names a bounded content type."""
    accept = ",".join(media + "".join(f";{k}={v}" for k, v in params) for media, params in entries)
    encoder, content_type = negotiate(accept)
    encoder(_registry())
    assert content_type.split(";")[0] in {"text/plain", "application/openmetrics-text"}
    version = content_type.split("version=")[1].split(";")[0]
    assert version in {"0.0.4", "1.0.0", "2.0.0"}
