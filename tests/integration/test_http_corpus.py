"""The bad-input HTTP corpus (tests/corpus/http/requests.yaml) against the real daemon."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from exporter.config import IngestSettings
from tests.logcapture import debug_log_fixture

from .conftest import REPO, running_daemon, scrape
from .http_raw import RawResponse, raw_request

__all__ = ["debug_log_fixture"]  # imported for pytest: the debug_log fixture

CORPUS = REPO / "tests" / "corpus" / "http" / "requests.yaml"
_TEMPLATE_RE = re.compile(r"\{(pad|headers):(\d+)\}")


def _expand(request: str) -> bytes:
    """Turn a corpus request into bytes: ``{pad:N}`` and ``{headers:N}`` are expanded."""

    def fill(match: re.Match[str]) -> str:
        count = int(match.group(2))
        if match.group(1) == "pad":
            return "x" * count
        return "".join(f"X-Filler-{i}: {i}\r\n" for i in range(count))

    # latin-1 keeps every escaped byte (\x00, \xfc) a single byte, as written.
    return _TEMPLATE_RE.sub(fill, request).encode("latin-1")


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text(encoding="utf-8"))["cases"]
    return cases


def _mismatch(case: dict[str, Any], response: RawResponse) -> str | None:
    if not response.closed:
        return f"the server kept the connection open for {response.seconds:.1f}s"
    if response.status != case["status"]:
        return f"status {response.status}, expected {case['status']}: {response.body[:120]!r}"
    if case["contains"] not in response.body:
        return f"body lacks {case['contains']!r}: {response.body[:120]!r}"
    if not case.get("echoes") and b"Canary" in response.raw:
        return "the answer quotes a canary"
    return None


def test_corpus_is_well_formed() -> None:
    """Every corpus case has a unique name, a request, an expected status and a fragment."""
    cases = _cases()
    names = [case["name"] for case in cases]
    assert len(names) == len(set(names))
    assert len(cases) >= 60
    for case in cases:
        assert set(case) <= {"name", "request", "status", "contains", "echoes"}, case["name"]
        assert isinstance(case["request"], str)
        assert case["status"] in {0, 100, 200, 400, 404, 405, 408, 413}, case["name"]
        assert isinstance(case["contains"], str)


async def test_http_corpus_against_the_live_daemon(
    settings_factory: Callable[..., IngestSettings],
    tmp_path: Path,
    debug_log: io.StringIO,
) -> None:
    """Each corpus request gets its status and fragment; no log line quotes a canary.

    The daemon serves on afterwards (healthy, /metrics answers).
    """
    config = tmp_path / "web.yaml"
    config.write_text("web: {read_header_timeout_seconds: 2}\n", encoding="utf-8")
    cases = _cases()
    async with running_daemon(settings_factory(config)) as (daemon, url):
        port = daemon.port
        assert port is not None
        responses = await asyncio.gather(
            *(raw_request(port, _expand(case["request"]), timeout=6) for case in cases)
        )
        assert await scrape(url, "/-/healthy") == "Healthy.\n"
        assert "ingest_connector_up" in await scrape(url)
    failures = {
        case["name"]: problem
        for case, response in zip(cases, responses, strict=True)
        if (problem := _mismatch(case, response)) is not None
    }
    assert not failures, "\n".join(f"{name}: {problem}" for name, problem in failures.items())
    assert "Canary" not in debug_log.getvalue()
