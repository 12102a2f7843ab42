"""Scripted stand-ins for the three built-in probes, so a whole bundle runs without services."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from exporter import provisioner
from exporter.probes.base import Check, Reason, Status
from tests.waiting import Changes

__all__ = ["BUILTIN_CHECKS", "ProbeScript", "ScriptedProbe"]

#: The check name of each built-in probe, as the real probes name their first check.
BUILTIN_CHECKS = {"timescale": "connect", "redis": "ping", "kafka": "metadata"}


@dataclass
class ProbeScript:
    """What every built-in probe provisioned during a test answers, decided by the test.

    Attributes:
        down: Connectors whose probe reports ``down``/``refused``.
        gate: Every probe waits for it before answering (set: answer at once).
        on_call: Awaited at the start of every call with the connector's name.
        calls: Calls per connector; ``called`` is notified at each.
        probes: Every probe built, in order.
    """

    down: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    on_call: Callable[[str], Awaitable[None]] | None = None
    calls: Counter[str] = field(default_factory=Counter)
    called: Changes = field(default_factory=Changes)
    probes: list[ScriptedProbe] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.gate.set()

    def stubborn_kafka(
        self,
        cancelled: asyncio.Event,
        release: asyncio.Event,
        then: Callable[[], None] = lambda: None,
    ) -> Callable[[str], Awaitable[None]]:
        """Return an ``on_call`` hook: Kafka answers once, then hangs, swallowing cancellation.

        ``cancelled`` is set at each cancellation swallowed, after calling ``then``; only
        ``release`` lets the probe return. It stands for operator code that never ends.
        """

        async def on_call(connector: str) -> None:
            if connector != "kafka" or self.calls["kafka"] < 2:
                return
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    # Swallowed on purpose: the stop must not be able to end this probe.
                    then()
                    cancelled.set()

        return on_call

    def built(self, connector: str) -> ScriptedProbe:
        """Return the probe last built for ``connector``."""
        return next(p for p in reversed(self.probes) if p.connector == connector)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Make the provisioner build scripted probes instead of the three built-in ones."""
        for connector, attribute in (
            ("timescale", "TimescaleProbe"),
            ("redis", "RedisProbe"),
            ("kafka", "KafkaProbe"),
        ):
            monkeypatch.setattr(provisioner, attribute, self._factory(connector))

    def _factory(self, connector: str) -> Callable[..., ScriptedProbe]:
        def build(client: Any, **options: Any) -> ScriptedProbe:
            probe = ScriptedProbe(self, connector, client)
            self.probes.append(probe)
            return probe

        return build


class ScriptedProbe:
    """A built-in probe stand-in: one check for its connector, as its script says."""

    timeout: float | None = None

    def __init__(self, script: ProbeScript, connector: str, client: Any) -> None:
        self.script = script
        self.connector = connector
        self.name = BUILTIN_CHECKS[connector]
        #: The connector object the bundle gave the probe.
        self.client = client
        self.closed = False

    async def __call__(self) -> list[Check]:
        """Wait for the gate, then report the connector up or refused."""
        script = self.script
        script.calls[self.connector] += 1
        script.called()
        if script.on_call is not None:
            await script.on_call(self.connector)
        await script.gate.wait()
        if self.connector in script.down:
            return [Check(self.name, Status.DOWN, Reason.REFUSED, "scripted outage")]
        return [Check(self.name)]

    async def aclose(self) -> None:
        """Record the close (the bundle closes its Kafka probe's clients on stop)."""
        self.closed = True
