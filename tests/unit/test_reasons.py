"""The failure taxonomy: library exceptions map to the bounded reason set; errors carry one."""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Callable

import asyncpg
import pytest
import redis.exceptions as redis_errors
from aiokafka import errors as kafka_errors

from exporter.errors import ConnectorError, ProbeError
from exporter.reasons import Reason, classify


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), Reason.REFUSED),
        (ConnectionResetError(), Reason.REFUSED),
        (OSError(errno.EHOSTUNREACH, "no route"), Reason.REFUSED),
        (socket.gaierror(-2, "Name or service not known"), Reason.DNS),
        (ssl.SSLCertVerificationError("certificate verify failed"), Reason.TLS),
        (TimeoutError(), Reason.TIMEOUT),
        (asyncpg.InvalidPasswordError("password authentication failed"), Reason.AUTH),
        (asyncpg.InsufficientPrivilegeError("permission denied"), Reason.PERMISSION),
        (asyncpg.UndefinedTableError("relation does not exist"), Reason.MISSING),
        (asyncpg.QueryCanceledError("canceling statement"), Reason.TIMEOUT),
        (asyncpg.TooManyConnectionsError("too many clients already"), Reason.CAPACITY),
        (asyncpg.CannotConnectNowError("the database system is starting up"), Reason.REFUSED),
        (asyncpg.AdminShutdownError("terminating connection"), Reason.REFUSED),
        (asyncpg.ConnectionDoesNotExistError("closed in the middle"), Reason.REFUSED),
        (asyncpg.InterfaceError("cannot perform operation: connection is closed"), Reason.REFUSED),
        (asyncpg.InterfaceError("another operation is in progress"), Reason.ERROR),
        (redis_errors.AuthenticationError("WRONGPASS invalid username-password"), Reason.AUTH),
        (redis_errors.NoPermissionError("NOPERM no permissions"), Reason.PERMISSION),
        (redis_errors.ConnectionError("Connection closed by server."), Reason.REFUSED),
        (redis_errors.TimeoutError("Timeout reading from socket"), Reason.TIMEOUT),
        (redis_errors.MaxConnectionsError("Too many connections"), Reason.CAPACITY),
        (redis_errors.BusyLoadingError("Redis is loading the dataset"), Reason.REFUSED),
        (redis_errors.InvalidResponse("Protocol Error: b'x'"), Reason.PROTOCOL),
        (
            _caused(
                redis_errors.ConnectionError("Error 111 connecting to h:1."),
                ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
            ),
            Reason.REFUSED,
        ),
        (kafka_errors.KafkaConnectionError("Connection at 127.0.0.1:1 closed"), Reason.REFUSED),
        (kafka_errors.IllegalSaslStateError(), Reason.AUTH),
        (kafka_errors.SaslAuthenticationFailed(), Reason.AUTH),
        (kafka_errors.AuthenticationFailedError(), Reason.AUTH),
        (kafka_errors.TopicAuthorizationFailedError(), Reason.PERMISSION),
        (kafka_errors.UnknownTopicOrPartitionError(), Reason.MISSING),
        (kafka_errors.KafkaTimeoutError(), Reason.TIMEOUT),
        (kafka_errors.CorrelationIdError(), Reason.PROTOCOL),
        # The cause is only logged by aiokafka: the Kafka probe diagnoses it (see kafka.py).
        (kafka_errors.KafkaConnectionError("Unable to bootstrap from [...]"), Reason.ERROR),
        (ConnectionError("broker went away"), Reason.ERROR),
        (ProbeError(Reason.STALE, "behind"), Reason.STALE),
        (ConnectorError("kafka", Reason.TLS, "reset in handshake"), Reason.TLS),
        # The carried reason wins over a cause that would classify differently.
        (_caused(ProbeError(Reason.AUTH), TimeoutError()), Reason.AUTH),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_library_errors_map_to_bounded_reasons(exc: BaseException, reason: Reason) -> None:
    """Each common client error gets the reason an operator would give it."""
    assert classify(exc) is reason


@pytest.mark.parametrize(
    "build",
    [
        lambda: ProbeError("stale", "behind"),  # type: ignore[arg-type]
        lambda: ProbeError("not-a-reason"),  # type: ignore[arg-type]
        lambda: ConnectorError("kafka", "tls", "reset in handshake"),  # type: ignore[arg-type]
    ],
    ids=["probe-valid-text", "probe-typo", "connector-valid-text"],
)
def test_errors_refuse_a_reason_given_as_text(build: Callable[[], Exception]) -> None:
    """An error built with a bare string (a typo included) fails at once, not as ``error``."""
    with pytest.raises(TypeError, match="Reason member"):
        build()


def test_errors_keep_the_reason_member_and_say_it_in_the_message() -> None:
    """The reason is stored as the enum member and its value is what the message shows."""
    error = ConnectorError("kafka", Reason.TIMEOUT, "consumer group join")
    assert error.reason is Reason.TIMEOUT
    assert str(error) == "kafka: timeout (consumer group join)"
    assert str(ProbeError(Reason.MISSING)) == "missing"


def test_a_library_reason_attribute_is_not_taken_for_a_reason() -> None:
    """A library error whose free-text ``reason`` looks like one is classified on its own."""
    error = ssl.SSLError(1, "bad handshake")
    error.reason = "timeout"
    assert classify(error) is Reason.TLS
