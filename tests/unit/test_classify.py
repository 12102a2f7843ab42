"""Library exceptions of asyncpg, redis-py and aiokafka map to the bounded reason set."""

from __future__ import annotations

import errno
import socket
import ssl

import asyncpg
import pytest
import redis.exceptions as redis_errors
from aiokafka import errors as kafka_errors

from exporter.errors import ConnectorError, ProbeError
from exporter.probes.base import Reason
from exporter.probes.classify import classify


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
        (ProbeError("stale", "behind"), Reason.STALE),
        (ProbeError("not-a-reason"), Reason.ERROR),
        (ConnectorError("kafka", "tls", "reset in handshake"), Reason.TLS),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_library_errors_map_to_bounded_reasons(exc: BaseException, reason: Reason) -> None:
    """Each common client error gets the reason an operator would give it."""
    assert classify(exc) is reason
