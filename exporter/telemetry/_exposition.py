"""Choose the exposition format from an ``Accept`` header that may be malformed or hostile."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

__all__ = ["negotiate"]

#: The format versions prometheus_client can write, per media type. Any other ``version``
#: (``abc``, ``1.0``, ``99.0.0``) drops that entry of the header, as an unknown media type
#: would be: the client library raises on a malformed version (an HTTP 500) and echoes any
#: well-formed one into ``Content-Type``, which would also grow the per-type render cache
#: without bound.
_VERSIONS: Final = {
    "application/openmetrics-text": frozenset({"1.0.0", "2.0.0"}),
    "text/plain": frozenset({"0.0.4", "1.0.0"}),
}
#: Longer headers are not read at all (a real scraper sends about 200 bytes).
_MAX_ACCEPT: Final = 1024
_PARAM_RE: Final = re.compile(r"\s*([A-Za-z0-9_.-]+)\s*=\s*(.*?)\s*$")

Encoder = Callable[[Collector], bytes]


def negotiate(accept: str | None) -> tuple[Encoder, str]:
    """Return the encoder and content type for ``accept``; the classic text format otherwise.

    Args:
        accept: The request's ``Accept`` header, as sent.

    Returns:
        What :func:`prometheus_client.exposition.choose_encoder` returns for the entries of
        the header that name a supported media type and version; never raises.
    """
    if not accept or len(accept) > _MAX_ACCEPT:
        return choose_encoder("")
    kept = [entry for entry in accept.split(",") if _supported(entry)]
    return choose_encoder(",".join(kept))


def _supported(entry: str) -> bool:
    media, *params = entry.split(";")
    versions = _VERSIONS.get(media.strip().lower())
    if versions is None:
        return True  # choose_encoder ignores other media types itself
    for param in params:
        match = _PARAM_RE.match(param)
        if match is None:
            return False
        # The client library compares names exactly: only its own spelling counts.
        if match.group(1) == "version" and match.group(2) not in versions:
            return False
    return True
