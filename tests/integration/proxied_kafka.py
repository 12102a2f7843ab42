"""A private Kafka broker whose clients all go through a :class:`FaultProxy`."""

from __future__ import annotations

from pathlib import Path

from .fault_proxy import FaultProxy
from .kafka_instance import KafkaInstance
from .net import free_port

__all__ = ["ProxiedKafka"]


class ProxiedKafka(KafkaInstance):
    """A private broker that advertises a proxy's port, plus a SASL/PLAIN listener.

    Clients bootstrap through the proxy and are sent back to it by the metadata, so every
    byte crosses the proxy. The SASL listener (user ``monitor``, password ``matrix-pw``) is
    reached directly, for the wrong-credentials case.
    """

    #: The SASL/PLAIN login the broker accepts.
    SASL_USER, SASL_PASSWORD = "monitor", "matrix-pw"

    def __init__(self) -> None:
        super().__init__()
        self.proxy = FaultProxy(self.port)
        self.sasl_port = free_port()

    def _write_config(self) -> Path:
        path = super()._write_config()
        lines = []
        for line in path.read_text().splitlines():
            if line.startswith(("listeners=", "advertised.listeners=")):
                key, _, value = line.partition("=")
                port = self.port if key == "listeners" else self.proxy.port
                value = value.replace(
                    f"PLAINTEXT://127.0.0.1:{self.port}", f"PLAINTEXT://127.0.0.1:{port}"
                )
                line = f"{key}={value},SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}"
            elif line.startswith("listener.security.protocol.map="):
                line += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            lines.append(line)
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config="
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="monitor" password="matrix-pw" user_monitor="matrix-pw";',
            "",
        ]
        path.write_text("\n".join(lines))
        return path
