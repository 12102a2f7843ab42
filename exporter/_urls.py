"""One parser for connection URLs, shared by the settings, the redactor and the span attributes.

The drivers split a URL differently: asyncpg ends the user-info at the *first* ``@`` of the
authority, redis-py (through :func:`urllib.parse.urlsplit`) at the *last*, and both end the
authority at the first ``/``, ``?`` or ``#``. So a password with a raw ``@``, ``/``, ``?`` or
``#`` is misread by at least one of them, and the misread tail shows up as a host name (a DNS
query carrying a secret) or in the driver's error text. The rule here is one, documented
reading, and the settings hand the drivers a URL that none of them can misread:

* The user-info ends at the **last** ``@`` of the URL, so a password may hold any character.
  When a secret-looking query parameter (``?sslpassword=``, ``&token=``) starts before that
  ``@``, the ``@`` may as well sit in its value: such a URL is *ambiguous* (so is one whose
  user name holds ``/``, ``?``, ``#``, brackets or spaces), and whatever follows that ``@``
  may be a secret's tail, so nothing after the scheme is shown.
* :func:`canonical_url` percent-encodes every character of the user-info that a driver could
  take for a delimiter, keeping ``%XX`` escapes as written, so the authority of the result
  holds at most one ``@`` and every driver reads the same user, password and hosts. It is
  more careful than the display rule: any ``?`` or ``#`` followed by ``=`` before the last
  ``@`` means a query value may hold the ``@`` (``?application_name=svc@eu``), and then the
  URL is kept as the drivers read it, provided its authority is empty or holds exactly one
  ``@``, or refused.
* :func:`query_problem` refuses what a driver would misread in the query: a segment without
  ``=`` (a raw ``&`` inside a value, which asyncpg reports with the value's tail), and for
  Redis a typed parameter (``db``, ``socket_timeout``, ...) that redis-py cannot convert.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import parse_qs, quote, unquote_plus

from exporter._secret_keys import looks_secret

__all__ = [
    "POSTGRES_QUERY",
    "ConnectionUrl",
    "authority",
    "canonical_url",
    "driver_url",
    "query_problem",
    "split_url",
]

# A host is a bracketed IPv6 literal (with optional zone) or a registered name; underscores
# are allowed because Docker service names use them. Either part may be empty, as libpq
# allows ``postgresql://:5433`` and ``postgresql://u:pw@/db?host=/run/postgresql``.
_HOSTPORT: Final = r"(?:\[[0-9A-Fa-f:.]+(?:%[\w.~%-]+)?\]|[\w.~%-]+)?(?::[0-9]*)?"
_HOST_LIST_RE: Final = re.compile(rf"{_HOSTPORT}(?:,{_HOSTPORT})*(?=[/?#]|\Z)")
# Underscores too: Kafka listeners are written ``SASL_SSL://``.
_SCHEME_RE: Final = re.compile(r"[A-Za-z][\w+.-]*://")
# Characters a user name never holds; seeing one means the split swallowed a path or query.
_BAD_USER_RE: Final = re.compile(r"[/?#\[\]\s]")
# A query (or fragment) holding a 'key=' before the last '@': the '@' may sit in a value.
_QUERY_BEFORE_RE: Final = re.compile(r"[?#].*=", re.DOTALL)
_PARAMETER_RE: Final = re.compile(r"[?&#]([^=&?#]*)=")
# Kept as written in the user-info: unreserved and sub-delimiter characters, and '%' so
# that escapes stay escapes. Everything else is percent-encoded (':' only in the password).
_USER_SAFE: Final = "!$&'()*+,;=%-._~"


@dataclass(frozen=True)
class ConnectionUrl:
    """A URL split by the one rule of this module; every part as written (not decoded)."""

    scheme: str
    userinfo: str | None
    hosts: str
    path: str
    query: str | None  # None without a '?'
    fragment: str
    ambiguous: bool

    @property
    def user(self) -> str | None:
        """Return the user name as written, or ``None`` without user-info."""
        return None if self.userinfo is None else self.userinfo.partition(":")[0]

    @property
    def password(self) -> str | None:
        """Return the password as written, or ``None`` when the user-info has no ``:``."""
        if self.userinfo is None or ":" not in self.userinfo:
            return None
        return self.userinfo.partition(":")[2]

    def ports(self) -> list[int | None]:
        """Return each host's port (``None`` where none is written)."""
        ports: list[int | None] = []
        for item in self.hosts.split(","):
            port = item.rpartition("]")[2] if item.startswith("[") else item
            digits = port.partition(":")[2]
            ports.append(int(digits) if digits else None)
        return ports


def split_url(url: str) -> ConnectionUrl | None:
    """Split ``scheme://[userinfo@]hosts[/path][?query][#fragment]`` by the module's rule.

    Returns:
        The parts, or ``None`` when the text is not such a URL (no scheme, or no valid host
        list after the user-info). When the last ``@`` is not followed by hosts, the
        authority is read as the drivers read it (up to the first ``/``, ``?`` or ``#``), and
        the URL is ambiguous; so is one whose user name holds ``/``, ``?``, ``#``, brackets
        or whitespace (the split swallowed a path or query).
    """
    text = url.strip()
    scheme = _SCHEME_RE.match(text)
    if scheme is None:
        return None
    rest = text[scheme.end() :]
    at = rest.rfind("@")
    hosts = _HOST_LIST_RE.match(rest, at + 1)
    fallback = hosts is None
    if hosts is None:
        # No hosts after the last '@': it sits in a path or query value. Read the authority
        # as the drivers do, and call the URL ambiguous.
        at = authority(text).rfind("@")
        hosts = _HOST_LIST_RE.match(rest, at + 1)
    if hosts is None:
        return None
    userinfo = rest[:at] if at >= 0 else None
    ambiguous = fallback or (
        userinfo is not None
        and (
            any(looks_secret(unquote_plus(key)) for key in _PARAMETER_RE.findall(userinfo))
            or _BAD_USER_RE.search(userinfo.partition(":")[0]) is not None
        )
    )
    tail, _, fragment = rest[hosts.end() :].partition("#")
    path, question, query = tail.partition("?")
    return ConnectionUrl(
        scheme=text[: scheme.end() - 3],
        userinfo=userinfo,
        hosts=hosts.group(),
        path=path,
        query=query if question else None,
        fragment=fragment,
        ambiguous=ambiguous,
    )


def canonical_url(url: str) -> str | None:
    """Return ``url`` with its user-info percent-encoded so that every driver reads it alike.

    An ambiguous URL is returned as written when its authority (up to the first ``/``,
    ``?`` or ``#``) is empty or holds exactly one ``@``: the drivers then agree on it, and
    the later ``@`` sits in a query value. Otherwise the ``@`` may end a password holding a
    raw ``/``, ``?`` or ``#``, and a driver would take the password's head for a host.

    Returns:
        The URL, or ``None`` when it cannot be made unambiguous for the drivers.
    """
    parts = split_url(url)
    if parts is None:
        return None
    text = url.strip()
    if parts.ambiguous or _QUERY_BEFORE_RE.search(parts.userinfo or ""):
        head = authority(text)
        return text if not head or head.count("@") == 1 else None
    if parts.userinfo is None:
        return text
    user = quote(parts.user or "", safe=_USER_SAFE)
    password = parts.password
    userinfo = user if password is None else f"{user}:{quote(password, safe=_USER_SAFE + ':')}"
    # Everything after the user-info is kept byte for byte.
    return f"{parts.scheme}://{userinfo}{text[len(parts.scheme) + 3 + len(parts.userinfo) :]}"


def authority(url: str) -> str:
    """Return the authority as the drivers read it: after ``://``, up to a ``/``, ``?``, ``#``."""
    return re.split(r"[/?#]", url.strip().partition("://")[2], maxsplit=1)[0]


def query_problem(url: str, typed: Mapping[str, object] | None = None) -> str | None:
    """Say what a driver would misread in the URL's query, or return ``None``.

    Args:
        url: The URL (its query is read as the drivers read it: after the authority).
        typed: Parameter name -> converter a driver applies (``int``, ``float``, ...).

    Returns:
        A short reason that never quotes a value, or ``None`` when the query is fine.
    """
    parts = split_url(url)
    if parts is None:
        return None
    # What the drivers see as the query: after the first '?' following the authority.
    literal = parts.ambiguous or _QUERY_BEFORE_RE.search(parts.userinfo or "")
    query = url.partition("?")[2].partition("#")[0] if literal else parts.query or ""
    segments = query.split("&") if query else []
    if any("=" not in segment for segment in segments):
        return "a query parameter has no '=' (write a '&' inside a value as %26)"
    values = parse_qs(query)  # blank values are dropped, as redis-py does
    for name, convert in (typed or {}).items():
        if name in values and callable(convert):
            try:
                convert(values[name][0])
            except (TypeError, ValueError):
                return f"the value of query parameter {name!r} is not what the driver expects"
    return None


def _port_list(value: str) -> list[int]:
    """Read ``port=`` as asyncpg does: comma-separated integers."""
    return [int(port) for port in value.split(",")]


#: The typed PostgreSQL query parameters asyncpg converts (a failure would quote the value).
POSTGRES_QUERY: Mapping[str, object] = {"port": _port_list}


def driver_url(url: str, schemes: tuple[str, ...], what: str, typed: Mapping[str, object]) -> str:
    """Validate a configured connection URL and return the form every driver reads alike.

    Args:
        url: The URL as configured.
        schemes: The accepted schemes, lower case.
        what: The service, for messages (``PostgreSQL``).
        typed: Query parameter -> the driver's converter (see :func:`query_problem`).

    Raises:
        ValueError: with a message that never quotes the URL.
    """
    parts = split_url(url)
    expected = f"expected a {what} URL ({'|'.join(schemes)}://[user[:password]@]host)"
    if parts is None or parts.scheme.lower() not in schemes:
        raise ValueError(expected)
    if not (parts.hosts or "host=" in (parts.query or "") or parts.scheme.lower() == "unix"):
        raise ValueError(expected)
    if any(port is not None and port > 65535 for port in parts.ports()):
        raise ValueError(expected)
    canonical = canonical_url(url)
    if canonical is None:
        raise ValueError(
            f"expected a {what} URL that every driver reads alike: write a raw '@' in a "
            "query value as %40 (or '/', '?', '#' in the password as %2F, %3F, %23)"
        )
    problem = query_problem(canonical, typed)
    if problem is not None:
        raise ValueError(f"expected a {what} URL the driver reads: {problem}")
    return canonical
