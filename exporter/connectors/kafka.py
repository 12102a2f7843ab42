"""Kafka connector: a lazily bootstrapped aiokafka admin client plus shared client settings."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, ClassVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.conn import AIOKafkaConnection

from exporter._cleanup import shielded
from exporter.config import KafkaSettings
from exporter.connectors.base import Connector, ConnectorState
from exporter.errors import ConnectorError
from exporter.reasons import Reason, classify

__all__ = ["KafkaConnector"]


class KafkaConnector(Connector):
    """Own the admin client used by probes; producers and consumers reuse its settings.

    aiokafka's clients must reach a broker in ``start()``, so the admin client is created on
    first use and thrown away after a failure: the next probe bootstraps afresh instead of
    reusing a client whose metadata points at a broker that went away.
    """

    kind: ClassVar[str] = "kafka"

    def __init__(self, settings: KafkaSettings, *, timeout: float, name: str = "kafka") -> None:
        super().__init__(name)
        self.settings = settings
        self.timeout = timeout
        self._admin: AIOKafkaAdminClient | None = None
        self._admin_lock = asyncio.Lock()

    def client_options(self) -> dict[str, Any]:
        """Return the connection options every aiokafka client of this connector uses."""
        options: dict[str, Any] = {
            "bootstrap_servers": list(self.settings.bootstrap_servers),
            "client_id": self.settings.client_id,
            "security_protocol": self.settings.security_protocol,
            "request_timeout_ms": max(int(self.timeout * 1000), 1000),
            "retry_backoff_ms": 200,
        }
        if self.settings.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self._ssl_context()
        if self.settings.sasl_mechanism is not None:
            options["sasl_mechanism"] = self.settings.sasl_mechanism
            options["sasl_plain_username"] = self.settings.sasl_username
            password = self.settings.sasl_password
            options["sasl_plain_password"] = password.get_secret_value() if password else None
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        """Return a verifying TLS context with the configured CA and client certificate."""
        settings = self.settings
        cafile = None if settings.ssl_cafile is None else str(settings.ssl_cafile)
        context = ssl.create_default_context(cafile=cafile)
        if settings.ssl_certfile is not None:
            keyfile = None if settings.ssl_keyfile is None else str(settings.ssl_keyfile)
            context.load_cert_chain(str(settings.ssl_certfile), keyfile)
        return context

    async def _open(self) -> None:
        """Nothing to open yet: the admin client bootstraps on first use."""

    async def _close(self) -> None:
        await self.reset()

    async def admin(self) -> AIOKafkaAdminClient:
        """Return a bootstrapped admin client, creating one if needed."""
        async with self._admin_lock:
            if self._admin is not None:
                return self._admin
            if self.state is ConnectorState.STOPPED:
                # A late caller (a /probe request racing shutdown) must not open a client
                # that nothing would close.
                raise ConnectorError(self.name, Reason.ERROR, "connector stopped")
            options = self.client_options()
            options.pop("retry_backoff_ms")
            admin = AIOKafkaAdminClient(**options)
            try:
                await admin.start()
            except BaseException:
                await self._close_discarded(admin)
                raise
            self._admin = admin
            return admin

    async def diagnose(self) -> Exception | None:
        """Connect to the first bootstrap broker as the clients do; return what fails.

        aiokafka reports every bootstrap failure as one ``Unable to bootstrap`` error and
        only logs the cause. One direct connection (TCP, TLS, API versions, SASL) raises
        the cause itself, for the caller to classify; ``None`` means the broker answered.
        The caller bounds the time (the attempt gives up after the request timeout).
        """
        options = self.client_options()
        host, _, port = self.settings.bootstrap_servers[0].rpartition(":")
        # What aiokafka's create_conn does, but closed when the caller's deadline cancels
        # the handshake: otherwise the half-open connection and its read task are left to
        # the garbage collector ("Unclosed AIOKafkaConnection", a task destroyed pending).
        connection = AIOKafkaConnection(
            host.strip("[]"),
            int(port),
            client_id=options["client_id"],
            request_timeout_ms=options["request_timeout_ms"],
            ssl_context=options.get("ssl_context"),
            security_protocol=options["security_protocol"],
            sasl_mechanism=options.get("sasl_mechanism"),
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
        )
        try:
            await connection.connect()
        except ConnectionResetError as exc:
            if "ssl_context" not in options:
                return exc
            # TCP connected (a refusal is another error), then the peer dropped the
            # handshake: what a plaintext listener does with a TLS ClientHello.
            what = "connection reset during the TLS handshake"
            error = ConnectorError(self.name, Reason.TLS, what)
            error.__cause__ = exc
            return error
        except Exception as exc:  # noqa: BLE001 - the failure is the answer
            return exc
        finally:
            connection.close()
        return None

    async def explain(self, exc: BaseException) -> Reason:
        """Return the bounded reason for a client failure, asking the broker when unclear.

        aiokafka's ``Unable to bootstrap`` classifies as ``error``; one direct connection
        (:meth:`diagnose`, bounded by the connector's timeout) says ``refused``, ``tls`` or
        ``auth`` instead, so the bridge and the publisher log the reason the probe reports.
        """
        reason = classify(exc)
        if reason not in (Reason.ERROR, Reason.PROTOCOL):
            return reason
        try:
            async with asyncio.timeout(self.timeout):
                cause = await self.diagnose()
        except TimeoutError:
            return Reason.TIMEOUT
        explained = reason if cause is None else classify(cause)
        return reason if explained is Reason.ERROR else explained

    async def reset(self) -> None:
        """Drop the admin client so the next use bootstraps again."""
        # Under the lock: an admin() still bootstrapping must not store its client afterwards.
        async with self._admin_lock:
            admin, self._admin = self._admin, None
        if admin is not None:
            await self._close_discarded(admin)

    async def _close_discarded(self, admin: AIOKafkaAdminClient) -> None:
        # Closing a half-open client may fail; it is discarded either way (debug: the failure
        # that made us discard it is what callers report).
        await shielded(
            admin.close(),
            timeout=max(self.timeout, 1.0),
            event="kafka_admin_close",
            level=logging.DEBUG,
            connector=self.name,
        )
