"""Canary secrets for the redaction property suite: strategies that plant them, a scanner.

Every secret a strategy makes is ``prefix + C1 + middle + C2 + suffix``: ``C1`` and ``C2`` are
canaries (``ZqV<tag><n>VqZ``, letters and digits only, so percent-encoding and JSON leave them
alone) and the other parts are any printable characters, so a leak of the whole secret, of its
head or of its tail (after a driver split it at some ``@``, ``:`` or ``&``) shows a marker.
Nothing but a planted secret ever holds ``ZqV`` or ``VqZ``: a surface is clean when neither
appears in it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

__all__ = [
    "MARKER_RE",
    "Planted",
    "canary_hits",
    "cases",
    "kafka_sasl",
    "postgres_url",
    "redis_url",
    "secret",
]

#: Either end of a canary: a leaked fragment of at least three characters of one shows.
MARKER_RE = re.compile(r"ZqV|VqZ")

# Printable: letters, marks, numbers, punctuation, symbols and spaces of any script; no
# control, surrogate, private-use or unassigned code points, and no line breaks.
_PRINTABLE = st.characters(
    codec="utf-8", categories=("L", "M", "N", "P", "S", "Zs"), exclude_characters="\x00"
)
# The characters URL parsers and drivers split on, drawn far more often than by chance.
_DELIMITERS = st.sampled_from(list("@:/?#&=%;,+ []\\'\"$!*()"))
_FILLER = st.text(st.one_of(_DELIMITERS, _PRINTABLE), max_size=6)


def cases(count: int) -> settings:
    """Return hypothesis settings for ``count`` examples of a (slow, I/O-bound) property.

    No example database is written into the work tree; a failure prints its reproduction.
    The log buffer fixtures are function-scoped on purpose: each example empties them.
    """
    return settings(
        max_examples=count,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@dataclass
class Planted:
    """The environment of one generated case and the canaries planted in it."""

    env: dict[str, str] = field(default_factory=dict)
    canaries: list[str] = field(default_factory=list)


def canary_hits(surfaces: Mapping[str, str]) -> dict[str, list[str]]:
    """Return, per surface name, the canary fragments found in it (empty when clean)."""
    hits: dict[str, list[str]] = {}
    for name, text in surfaces.items():
        found = [text[max(0, m.start() - 20) : m.end() + 20] for m in MARKER_RE.finditer(text)]
        if found:
            hits[name] = found[:3]
    return hits


@st.composite
def secret(draw: st.DrawFn, tag: str) -> tuple[str, list[str]]:
    """Return a secret holding two canaries among printable characters, and the canaries."""
    n = draw(st.integers(0, 99_999))
    first, second = f"ZqV{tag}{n:05d}VqZ", f"ZqV{tag}x{n:05d}VqZ"
    text = draw(_FILLER) + first + draw(_FILLER) + second + draw(_FILLER)
    return text, [first, second]


@st.composite
def _url_part(draw: st.DrawFn, tag: str) -> tuple[str, list[str]]:
    """Return a secret as it goes into a URL: each character raw or percent-encoded."""
    text, canaries = draw(secret(tag))
    mode = draw(st.sampled_from(["raw", "encoded", "mixed"]))
    if mode == "raw":
        return text, canaries
    if mode == "encoded":
        return quote(text, safe=""), canaries
    flags = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(quote(c, safe="") if f else c for c, f in zip(text, flags, strict=True)), (
        canaries
    )


def _query(parts: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{key}={value}" for key, value in parts)


@st.composite
def postgres_url(
    draw: st.DrawFn, host: str, port: int, *, user: str = "monitor", database: str = "ingest"
) -> Planted:
    """Return a PostgreSQL URL with canaries in the password and secret query parameters."""
    planted = Planted()
    password, found = draw(_url_part("pg"))
    planted.canaries += found
    query: list[tuple[str, str]] = []
    for key in draw(st.lists(st.sampled_from(["password", "sslpassword"]), unique=True)):
        value, found = draw(_url_part(key[:3]))
        query.append((key, value))
        planted.canaries += found
    if draw(st.booleans()):
        query.append(("application_name", "probe"))
    draw_order = draw(st.permutations(query))
    suffix = f"?{_query(draw_order)}" if draw_order else ""
    planted.env["TIMESCALEDB_URL"] = (
        f"postgresql://{user}:{password}@{host}:{port}/{database}{suffix}"
    )
    return planted


@st.composite
def redis_url(draw: st.DrawFn, host: str, port: int) -> Planted:
    """Return a Redis URL with canaries in the ACL password (and a query ``password``)."""
    planted = Planted()
    password, found = draw(_url_part("rd"))
    planted.canaries += found
    user = draw(st.sampled_from(["", "default", "monitor"]))
    query = ""
    if draw(st.booleans()):
        value, found = draw(_url_part("rq"))
        query = f"?password={value}"
        planted.canaries += found
    scheme = "redis"
    planted.env["REDIS_URL"] = f"{scheme}://{user}:{password}@{host}:{port}/0{query}"
    return planted


@st.composite
def kafka_sasl(draw: st.DrawFn, bootstrap: str) -> Planted:
    """Return Kafka SASL settings with canaries in the username and the password."""
    planted = Planted()
    username, found_user = draw(secret("ku"))
    password, found_password = draw(secret("kp"))
    planted.canaries += found_user + found_password
    planted.env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_MECHANISM": draw(st.sampled_from(["PLAIN", "SCRAM-SHA-256"])),
            "KAFKA_SASL_USERNAME": username,
            "KAFKA_SASL_PASSWORD": password,
        }
    )
    return planted
