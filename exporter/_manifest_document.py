"""What the manifest publisher sends: the document, its change digest and its redaction.

One JSON document per deployment: an envelope the exporter owns (deployment name, time,
version) around a body built from the settings (the manifest and the failover metadata),
which is redacted twice before it leaves the process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from exporter import __version__
from exporter.errors import ManifestRedactionError
from exporter.redaction import MASK, is_secret_key

__all__ = [
    "VOLATILE_KEYS",
    "content_digest",
    "redact_document",
    "render_document",
    "stable_dumps",
]

_log = structlog.get_logger("exporter.publisher")

#: Keys left out of the change check at any depth: they move without the content changing.
VOLATILE_KEYS: frozenset[str] = frozenset({"published_at", "refreshed_at", "counters"})
#: Deeper than any manifest; nesting beyond it is masked rather than walked without bound.
_MAX_DEPTH = 32


def render_document(
    snap: Mapping[str, Any],
    *,
    deployment: str,
    redact: Callable[[str], str],
    published_at: float,
) -> bytes:
    """Return the redacted UTF-8 JSON document of ``snap`` (``manifest`` and ``failover``).

    Raises:
        ManifestRedactionError: Redaction could not keep the document valid JSON.
    """
    # The envelope is ours (a validated name, a constant, a clock); what comes from the
    # settings is the body, and only the body can carry a secret.
    body = {"manifest": snap.get("manifest"), "failover": snap.get("failover")}
    doc = {
        "deployment": deployment,
        "published_at": datetime.fromtimestamp(published_at, UTC).isoformat(
            timespec="milliseconds"
        ),
        "exporter_version": __version__,
        **redact_document(body, redact),
    }
    return stable_dumps(doc).encode("utf-8")


def stable_dumps(obj: Any) -> str:
    """Return ``obj`` as JSON with sorted keys, so equal content always gives equal text."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, allow_nan=False)


def content_digest(obj: Any, volatile: frozenset[str]) -> str:
    """Return the SHA-256 of ``obj``'s stable JSON without the ``volatile`` keys (any depth)."""
    return hashlib.sha256(stable_dumps(_strip(obj, volatile)).encode("utf-8")).hexdigest()


def redact_document(doc: Mapping[str, Any], redact: Callable[[str], str]) -> Any:
    """Return a copy of ``doc`` with every secret removed, twice over.

    First every string (keys included) goes through ``redact`` and the values under
    secret-looking keys become the mask (``null`` and booleans are kept: they hold nothing).
    Then the whole JSON text goes through ``redact`` as a second net. The net reads a copy in
    which masked keys' ``null``/boolean values are the mask too, because its ``key: value``
    rule would turn a bare ``null`` into invalid JSON. If the net changes anything, its text
    (more redacted, still JSON) is what is returned, parsed.

    Raises:
        ManifestRedactionError: The net's text is not valid JSON.
    """
    clean = _scrub(doc, redact, 0, mask_empty=False)
    shadow = stable_dumps(_scrub(clean, _keep, 0, mask_empty=True))
    netted = redact(shadow)
    if netted == shadow:
        return clean
    try:
        caught = json.loads(netted)
    except ValueError as exc:
        raise ManifestRedactionError("redaction left the manifest unparseable") from exc
    _log.warning("manifest_redaction_net_caught")
    return caught


def _keep(text: str) -> str:
    return text


def _strip(obj: Any, volatile: frozenset[str]) -> Any:
    if isinstance(obj, Mapping):
        return {k: _strip(v, volatile) for k, v in obj.items() if k not in volatile}
    if isinstance(obj, list | tuple):
        return [_strip(item, volatile) for item in obj]
    return obj


def _scrub(obj: Any, redact: Callable[[str], str], depth: int, *, mask_empty: bool) -> Any:
    """Return ``obj`` with every string redacted and secret-keyed values masked."""
    if depth > _MAX_DEPTH:
        return MASK
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for key, value in obj.items():
            empty = value is None or isinstance(value, bool)
            if is_secret_key(str(key)) and (mask_empty or not empty):
                out[redact(str(key))] = MASK
            else:
                out[redact(str(key))] = _scrub(value, redact, depth + 1, mask_empty=mask_empty)
        return out
    if isinstance(obj, list | tuple):
        return [_scrub(item, redact, depth + 1, mask_empty=mask_empty) for item in obj]
    return obj
