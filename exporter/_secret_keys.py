"""Which parameter, field and header names hold secrets: the one list, shared by every scrubber.

A leaf, so that the URL parser (:mod:`exporter._urls`) and the redactor both use it.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["looks_secret"]

_SECRET_FRAGMENTS: Final = (
    "pass",  # password, passwd, sslpassword, passphrase, sasl_plain_password
    "pwd",
    "token",
    "secret",
    "credential",
    "auth",
    "apikey",
    "api_key",
    "accesskey",
    "access_key",
    "privatekey",
    "private_key",
    "signature",
)
# "sig" only as a whole word: as a substring it would hit "signal" and "design".
_SECRET_WORDS: Final = frozenset({"sig"})


def looks_secret(key: str) -> bool:
    """Tell whether a name holds a secret (public as :func:`exporter.redaction.is_secret_key`)."""
    norm = re.sub(r"[\s.-]+", "_", key.strip().lower())
    if norm.startswith("sasl_"):
        return norm != "sasl_mechanism"
    if any(fragment in norm for fragment in _SECRET_FRAGMENTS):
        return True
    return not _SECRET_WORDS.isdisjoint(norm.split("_"))
