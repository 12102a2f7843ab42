"""The failure taxonomy: the bounded :class:`Reason` set and :func:`classify` into it.

A leaf module (it imports nothing from the exporter), so errors, probes, jobs and the
telemetry all share one taxonomy without leaning on each other.
"""

from __future__ import annotations

import enum
import errno
import socket
import ssl
from collections.abc import Iterator

__all__ = ["Reason", "classify"]


class Reason(enum.StrEnum):
    """The bounded set of failure reasons; the only values a ``reason`` label can take."""

    TIMEOUT = "timeout"
    REFUSED = "refused"
    DNS = "dns"
    TLS = "tls"
    AUTH = "auth"
    PERMISSION = "permission"
    PROTOCOL = "protocol"
    MISSING = "missing"
    STALE = "stale"
    CAPACITY = "capacity"
    ERROR = "error"


# Matched against the class names along the exception's MRO, so the probes need no hard
# import of every client library's hierarchy (and the mapping works for all three).
_BY_CLASS_NAME: dict[str, Reason] = {
    "InvalidPasswordError": Reason.AUTH,
    "InvalidAuthorizationSpecificationError": Reason.AUTH,
    "AuthenticationError": Reason.AUTH,
    "AuthenticationWrongNumberOfArgsError": Reason.AUTH,
    "SaslAuthenticationFailed": Reason.AUTH,
    "AuthenticationFailedError": Reason.AUTH,
    "AuthenticationMethodNotSupported": Reason.AUTH,
    # A SASL handshake the listener does not expect (SASL client, plaintext listener).
    "IllegalSaslStateError": Reason.AUTH,
    "UnsupportedSaslMechanismError": Reason.AUTH,
    "InsufficientPrivilegeError": Reason.PERMISSION,
    "NoPermissionError": Reason.PERMISSION,
    "TopicAuthorizationFailedError": Reason.PERMISSION,
    "GroupAuthorizationFailedError": Reason.PERMISSION,
    "ClusterAuthorizationFailedError": Reason.PERMISSION,
    "UndefinedTableError": Reason.MISSING,
    "InvalidCatalogNameError": Reason.MISSING,
    "UnknownTopicOrPartitionError": Reason.MISSING,
    # PostgreSQL 53xxx: too many connections, disk full, out of memory.
    "InsufficientResourcesError": Reason.CAPACITY,
    "MaxConnectionsError": Reason.CAPACITY,
    # The server closed the connection or turns clients away (08xxx, 57P01-57P03: shutting
    # down, starting up, crashed): the same family as a reset connection.
    "PostgresConnectionError": Reason.REFUSED,
    "CannotConnectNowError": Reason.REFUSED,
    "AdminShutdownError": Reason.REFUSED,
    "CrashShutdownError": Reason.REFUSED,
    "BusyLoadingError": Reason.REFUSED,
    "QueryCanceledError": Reason.TIMEOUT,
    "KafkaTimeoutError": Reason.TIMEOUT,
    "RequestTimedOutError": Reason.TIMEOUT,
    "TimeoutError": Reason.TIMEOUT,
    "ProtocolError": Reason.PROTOCOL,
    "UnsupportedVersionError": Reason.PROTOCOL,
    "InvalidResponse": Reason.PROTOCOL,
    "KafkaProtocolError": Reason.PROTOCOL,
}

_REFUSED_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.EHOSTUNREACH, errno.ENETUNREACH}
# A peer that drops the connection is the ECONNRESET family even without an errno (asyncio
# raises a bare ConnectionResetError when a TLS handshake is cut off).
_REFUSED_TYPES = (ConnectionRefusedError, ConnectionResetError, ConnectionAbortedError)
_TEXT_HINTS: tuple[tuple[str, Reason], ...] = (
    ("connection refused", Reason.REFUSED),
    ("connect call failed", Reason.REFUSED),
    # A server that dies under an open connection: same family as ECONNRESET.
    ("connection closed by server", Reason.REFUSED),
    ("connection reset", Reason.REFUSED),
    # asyncpg's InterfaceError for a connection the server closed under it; aiokafka's
    # KafkaConnectionError "Connection at host:port closed".
    ("connection is closed", Reason.REFUSED),
    ("connection was closed", Reason.REFUSED),
    ("connection at", Reason.REFUSED),
    ("name or service not known", Reason.DNS),
    ("temporary failure in name resolution", Reason.DNS),
    ("nodename nor servname", Reason.DNS),
    ("timed out", Reason.TIMEOUT),
    ("timeout", Reason.TIMEOUT),
    ("wrongpass", Reason.AUTH),
    ("invalid password", Reason.AUTH),
    ("authentication", Reason.AUTH),
    ("noauth", Reason.AUTH),
    ("noperm", Reason.PERMISSION),
    ("permission denied", Reason.PERMISSION),
    ("certificate", Reason.TLS),
    ("ssl", Reason.TLS),
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def classify(exc: BaseException) -> Reason:
    """Return the bounded reason that best explains ``exc`` (``error`` when nothing fits)."""
    chain = list(_chain(exc))
    for item in chain:
        # The exporter's own errors (ProbeError, ConnectorError) carry their reason; only a
        # Reason member counts, never a library's free-text ``reason`` attribute.
        carried = getattr(item, "reason", None)
        if isinstance(carried, Reason):
            return carried
        if isinstance(item, socket.gaierror):
            return Reason.DNS
        if isinstance(item, ssl.SSLError | ssl.CertificateError):
            return Reason.TLS
        if isinstance(item, _REFUSED_TYPES):
            return Reason.REFUSED
        if isinstance(item, OSError) and item.errno in _REFUSED_ERRNOS:
            return Reason.REFUSED
        for klass in type(item).__mro__:
            reason = _BY_CLASS_NAME.get(klass.__name__)
            if reason is not None:
                return reason
    # Libraries that flatten the cause into text (redis-py, aiokafka) still say what happened.
    for item in chain:
        text = str(item).lower()
        for hint, reason in _TEXT_HINTS:
            if hint in text:
                return reason
    return Reason.ERROR
