"""Remove credentials from connection URLs, free text and structured log events.

Connection endpoints are shown in the manifest, in metric labels, in logs and in spans; none
of those may ever carry a password, a token or a secret query parameter. URLs are parsed
by their grammar, not split on the first ``@`` or ``/``, and whenever the input is ambiguous
the result masks more than strictly needed: over-redaction is acceptable, a leak never is.

Documented limits:

* A userinfo without a colon is a username and is kept (``redis://user@host``), as every
  client library reads it.
* URLs are split by :mod:`exporter._urls`: a raw ``@`` is allowed anywhere in a password,
  the userinfo ends at the *last* ``@`` of the URL. If the text after that ``@`` is not a
  valid host list, or a secret query parameter starts before it (the ``@`` may then sit in
  its value, as in ``?password=a@b``), everything after ``scheme://`` is masked.
* A raw ``&`` inside a query value cannot be told apart from a separator. Segments without
  ``=`` that follow a secret parameter are dropped, but ``?password=a&b=c`` keeps ``b=c``.
  Percent-encode query values, or register the secret with a :class:`Redactor`.
* In free text a URL ends at whitespace or a quote, so a password with a raw space or
  quote in it is only removed there if it is a known secret.
* Known secrets shorter than three characters are not replaced in free text: masking every
  ``a`` or ``42`` would destroy messages without protecting anything worth protecting.
* ``ExceptionName: message`` is not a secret pair even when the name holds ``auth`` or
  ``pass`` (``AuthenticationError: WRONGPASS ...``): it is a driver's error, and masking its
  first word hides why the connection failed.
* Redis ``AUTH`` commands are recognised in upper case only (lower case is usually prose);
  ``auth=...`` and ``auth: ...`` pairs are masked in any case.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Final, TypeVar, cast
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from exporter._secret_keys import looks_secret
from exporter._urls import authority, split_url

__all__ = [
    "MASK",
    "Redactor",
    "is_secret_key",
    "option_secrets",
    "redact_bootstrap_servers",
    "redact_text",
    "redact_url",
    "url_secrets",
]

MASK: Final = "***"

_T = TypeVar("_T")

_MIN_SECRET_LENGTH: Final = 3
_MAX_DEPTH: Final = 32

# libpq accepts hosts as query parameters too; they are hidden when hosts are.
_HOST_PARAMS: Final = frozenset({"host", "hostaddr"})

_SERVER: Final = r"(?:\[[0-9A-Fa-f:.]+\]|[\w.~%-]+):[0-9]{1,5}"
_BARE_SERVERS_RE: Final = re.compile(rf"{_SERVER}(?:,{_SERVER})*")
_SCHEME_RE: Final = re.compile(r"[A-Za-z][\w+.-]*://")

_URL_IN_TEXT_RE: Final = re.compile(r"(?<![\w+.-])[A-Za-z][\w+.-]*://[^\s\"'`<>]+")
# Sentence punctuation glued to a URL in prose is not part of it.
_TRAILING_PUNCTUATION: Final = ".,;:!?)]}"
_KEY_RE: Final = re.compile(
    r"""
    (?<![\w.-])(?<!//)                     # a whole key, not a URL's username
    (?P<q>["']?)(?P<key>[A-Za-z_][\w.-]*)(?P=q)
    [ \t]*[:=][ \t]*
    """,
    re.VERBOSE,
)
# Matched only after a secret key: scanning every value would make long text quadratic.
_VALUE_RE: Final = re.compile(
    r"""
    "(?:[^"\\]|\\.)*" | '(?:[^'\\]|\\.)*'
    | (?:(?i:bearer|basic|token|digest|negotiate)[ \t]+)?\S+
    """,
    re.VERBOSE,
)
# An exception's class name before its message ("AuthenticationError: WRONGPASS ..."): the
# word after it is the message, not a value of an "auth" key. Known secrets in the message
# are still replaced, and URLs in it still parsed.
_EXCEPTION_NAME_RE: Final = re.compile(
    r"(?:[A-Z][a-z0-9]+)+(?:Error|Exception|Failed|Failure|Warning)"
)
_AUTH_RE: Final = re.compile(r"\bAUTH\b[ \t'\",]+[^\s'\",][^\r\n]*")


def is_secret_key(key: str) -> bool:
    """Tell whether a parameter, field or header name holds a secret value.

    Args:
        key: The name, in any case; ``-``, ``.`` and spaces count as ``_``.

    Returns:
        True for names such as ``password``, ``sslpassword``, ``token``, ``api-key``,
        ``X-Auth-Token``, ``sig`` or any ``sasl_*`` except ``sasl_mechanism``.
    """
    return looks_secret(key)


def redact_url(url: str, *, mask_hosts: bool = False) -> str:
    """Return a URL with its password, secret query values and fragment removed.

    Args:
        url: A URL with any scheme, or a plain ``host:port`` (a Kafka bootstrap server).
        mask_hosts: Replace every host (and ``host``/``hostaddr`` parameter) by the mask,
            keeping ports.

    Returns:
        The redacted URL; the mask alone for input that cannot be parsed, and
        ``scheme://***`` when it is unclear where the credentials end.
    """
    text = url.strip()
    parts = split_url(text)
    if parts is None or parts.ambiguous:
        # Unclear where the credentials end (see exporter._urls): mask all after the scheme.
        scheme = _SCHEME_RE.match(text)
        if scheme is not None:
            return scheme.group() + MASK
        if _BARE_SERVERS_RE.fullmatch(text):
            return _mask_host_list(text) if mask_hosts else text
        return MASK
    out = [parts.scheme, "://"]
    if parts.userinfo is not None:
        out.append(f"{parts.user}:{MASK}@" if parts.password is not None else f"{parts.user}@")
    out.append(_mask_host_list(parts.hosts) if mask_hosts else parts.hosts)
    # The fragment is dropped: it never matters to a client and may be a password's tail.
    out.append(parts.path)
    if parts.query is not None:
        out.append("?" + _redact_query(parts.query, mask_hosts=mask_hosts))
    return "".join(out)


def url_secrets(url: str) -> list[str]:
    """Return every piece of a connection URL that a driver may print and that is secret.

    That is the password of each reading (up to the last ``@``, and up to the authority's
    first ``@``, as asyncpg reads it) and the value of every secret-looking query
    parameter, each as written and decoded.

    Args:
        url: A connection URL.

    Returns:
        The non-empty pieces, without duplicates.
    """
    raw = url.strip().partition("://")[2]
    # Without any '@' there is no user-info: what follows a ':' is a port, not a password.
    # With one anywhere (a raw '/' or '?' in the password ends the authority early), what
    # follows the first ':' may be the password's start, as a driver would read it.
    userinfo = authority(url).partition("@")[0]
    candidates = [userinfo.partition(":")[2]] if "@" in raw else []
    parts = split_url(url)
    if parts is not None and parts.password is not None:
        candidates.append(parts.password)
    for segment in raw.partition("?")[2].partition("#")[0].split("&"):
        key, eq, value = segment.partition("=")
        if eq and is_secret_key(unquote_plus(key)):
            candidates.append(value)
    forms = [form for value in candidates for form in (value, unquote(value), unquote_plus(value))]
    return [form for form in dict.fromkeys(forms) if form]


def redact_bootstrap_servers(servers: Iterable[str], *, mask_hosts: bool = False) -> list[str]:
    """Redact each Kafka bootstrap server, whether ``host:port`` or a URL with credentials.

    Args:
        servers: The servers; a single string is split on commas, as Kafka clients do.
        mask_hosts: Replace every host by the mask, keeping ports.

    Returns:
        One redacted entry per server, in order.
    """
    items = servers.split(",") if isinstance(servers, str) else servers
    return [redact_url(item, mask_hosts=mask_hosts) for item in items]


def redact_text(text: str, secrets: Iterable[str] = ()) -> str:
    """Scrub free text such as exception messages and log lines.

    Known secrets (and their percent-encoded, percent-decoded and JSON-escaped forms) are
    replaced first, then every ``scheme://`` token is replaced by its :func:`redact_url`
    form, then values of secret-looking ``key=value``, ``key: value`` and ``"key": "value"``
    pairs and the arguments of Redis ``AUTH`` commands are masked.

    Args:
        text: The text to scrub.
        secrets: Known secret values; those shorter than three characters are ignored.

    Returns:
        The scrubbed text.
    """
    pattern = _secret_pattern(frozenset(secrets))
    if pattern is not None:
        text = pattern.sub(MASK, text)
    # URLs are redacted by the parser and kept away from the pair rules, which would
    # otherwise swallow the rest of a query string after an already masked value.
    out: list[str] = []
    pos = 0
    for match in _URL_IN_TEXT_RE.finditer(text):
        out.append(_redact_prose(text[pos : match.start()]))
        token = match.group().rstrip(_TRAILING_PUNCTUATION)
        out.append(redact_url(token) + match.group()[len(token) :])
        pos = match.end()
    out.append(_redact_prose(text[pos:]))
    return "".join(out)


class Redactor:
    """Scrub known secrets and credential-shaped text; used by the log and span processors.

    The set of secrets is a frozenset replaced as a whole under a lock, so readers never
    lock and never see a half-updated set.

    Args:
        secrets: Known secret values to start with; empty strings are ignored.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset(s for s in secrets if s)

    @property
    def secrets(self) -> frozenset[str]:
        """Return the known secret values."""
        return self._secrets

    def add(self, *secrets: str) -> None:
        """Register more secret values, ignoring empty strings.

        Args:
            *secrets: The values, e.g. the plain text of each configured ``SecretStr``.
        """
        fresh = frozenset(s for s in secrets if s)
        with self._lock:
            self._secrets = self._secrets | fresh

    def __call__(self, text: str) -> str:
        """Return ``text`` scrubbed by :func:`redact_text` with the known secrets."""
        return redact_text(text, self._secrets)

    def redact_mapping(self, obj: _T) -> _T:
        """Return a copy of a nested structure with every secret removed.

        Dicts (and other mappings, returned as dicts), lists and tuples are walked; values
        under secret-looking keys become the mask (``None`` and booleans are kept, they
        hold nothing), and every string, including string keys, goes through the scrubber.
        Other objects are returned as they are. Nesting deeper than 32 levels is masked.

        Args:
            obj: The structure, typically a structlog event dict or span attributes.

        Returns:
            The redacted copy.
        """
        return cast("_T", self._walk(obj, 0))

    def _walk(self, obj: object, depth: int) -> object:
        if depth > _MAX_DEPTH:
            # Also what ends a reference cycle; deeper data is masked rather than dropped.
            return MASK
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, Mapping):
            result: dict[object, object] = {}
            for key, value in obj.items():
                secret = isinstance(key, str) and is_secret_key(key)
                masked = secret and value is not None and not isinstance(value, bool)
                new_key = self(key) if isinstance(key, str) else key
                result[new_key] = MASK if masked else self._walk(value, depth + 1)
            return result
        if isinstance(obj, list | tuple):
            items = [self._walk(item, depth + 1) for item in obj]
            if isinstance(obj, list):
                return items
            if hasattr(obj, "_make"):  # a namedtuple keeps its type
                return cast("Any", obj)._make(items)
            return tuple(items)
        return obj


def _mask_host_list(hosts: str) -> str:
    masked: list[str] = []
    for item in hosts.split(","):
        cut = item.rindex("]") + 1 if item.startswith("[") else len(item.partition(":")[0])
        masked.append((MASK if cut else "") + item[cut:])
    return ",".join(masked)


def _redact_query(query: str, *, mask_hosts: bool) -> str:
    kept: list[str] = []
    masking = False
    for segment in query.split("&"):
        key, eq, _value = segment.partition("=")
        if not eq:
            if not masking:
                kept.append(segment)
            # Otherwise it is most likely the rest of a secret value with a raw '&' in it.
            continue
        name = unquote_plus(key)
        masking = is_secret_key(name) or (mask_hosts and name.lower() in _HOST_PARAMS)
        kept.append(f"{key}={MASK}" if masking else segment)
    return "&".join(kept)


def _redact_prose(text: str) -> str:
    out: list[str] = []
    pos = 0
    # After a harmless key the scan resumes at its value, which may itself hold a secret
    # pair, as in ``dsn=host=h password=x``.
    while (key := _KEY_RE.search(text, pos)) is not None:
        out.append(text[pos : key.end()])
        pos = key.end()
        name = key.group("key")
        secret = is_secret_key(name) and not _EXCEPTION_NAME_RE.fullmatch(name)
        value = _VALUE_RE.match(text, pos) if secret else None
        if value is not None:
            raw = value.group()
            quoted = len(raw) > 1 and raw[0] in "\"'" and raw[-1] == raw[0]
            out.append(raw[0] + MASK + raw[0] if quoted else MASK)
            pos = value.end()
    out.append(text[pos:])
    return _AUTH_RE.sub(f"AUTH {MASK}", "".join(out))


@lru_cache(maxsize=32)  # a Redactor passes the same frozenset for every log event
def _secret_pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for secret in secrets:
        if len(secret) < _MIN_SECRET_LENGTH:
            continue
        for form in (
            secret,
            unquote(secret),
            unquote_plus(secret),
            quote(secret),
            quote(secret, safe=""),
            quote_plus(secret),
            json.dumps(secret)[1:-1],
        ):
            forms.add(form)
            forms.add(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), form))
    forms = {form for form in forms if len(form) >= _MIN_SECRET_LENGTH}
    if not forms:
        return None
    # Longest first, so a short form never breaks up a longer form that contains it.
    return re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))


def option_secrets(argv: Sequence[str]) -> list[str]:
    """Return the values of secret-named options in ``argv``: ``--password=x``, ``--token x``.

    Free-text redaction knows ``password=x`` but not a command line's ``--password=x`` (a
    dash is not part of a key there): register these values as secrets wherever the command
    line, or what the command prints, may be shown.
    """
    found: list[str] = []
    for index, arg in enumerate(argv):
        if not arg.startswith("-"):
            continue
        name, eq, value = arg.lstrip("-").partition("=")
        if not is_secret_key(name):
            continue
        if eq:
            found.append(value)
        elif index + 1 < len(argv):
            found.append(argv[index + 1])
    return [value for value in found if value]
