"""HTTP load as Prometheus applies it: sequential and concurrent scrapes, in interleaved rounds."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

from bench.procfs import CpuMeter, cpu_seconds
from bench.samples import Latencies

__all__ = ["Endpoint", "EndpointLoad", "concurrent", "interleaved", "new_session", "sequential"]

#: Prometheus asks for gzip; aiohttp sends the same header and inflates the answer.
HEADERS = {"Accept-Encoding": "gzip"}
CLIENTS = 8


def new_session(clients: int = CLIENTS, timeout: float = 30.0) -> aiohttp.ClientSession:
    """Return a keep-alive session with room for ``clients`` connections (as scrapers hold)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout),
        headers=HEADERS,
    )


async def _get(session: aiohttp.ClientSession, url: str) -> float | None:
    """GET ``url`` and read the whole body; return the seconds it took, None on an error."""
    started = time.perf_counter()
    try:
        async with session.get(url) as response:
            await response.read()
            ok = response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return None  # counted by the caller as an error, never as a fast answer
    return time.perf_counter() - started if ok else None


async def sequential(
    session: aiohttp.ClientSession, url: str, *, count: int, deadline: float
) -> Latencies:
    """Request ``url`` up to ``count`` times one after another, stopping at ``deadline``."""
    found = Latencies.empty()
    for _ in range(count):
        if time.monotonic() >= deadline:
            break
        took = await _get(session, url)
        if took is None:
            found.errors += 1
        else:
            found.seconds.append(took)
    return found


async def concurrent(
    session: aiohttp.ClientSession,
    url: str,
    *,
    per_client: int,
    deadline: float,
    clients: int = CLIENTS,
) -> Latencies:
    """Run ``clients`` sequential scrapers at once, ``per_client`` requests each."""
    rounds = await asyncio.gather(
        *(sequential(session, url, count=per_client, deadline=deadline) for _ in range(clients))
    )
    found = Latencies.empty()
    for one in rounds:
        found.extend(one)
    return found


@dataclass(frozen=True)
class Endpoint:
    """One URL to load, the process serving it, and (optionally) its PostgreSQL backends."""

    label: str
    url: str
    pid: int
    backends: Callable[[], Awaitable[list[int]]] | None = None


@dataclass
class EndpointLoad:
    """What one endpoint did over every round."""

    seq: Latencies = field(default_factory=Latencies.empty)
    c8: Latencies = field(default_factory=Latencies.empty)
    cpu_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    rounds: int = 0

    @property
    def requests(self) -> int:
        """Return the requests answered, sequential and concurrent."""
        return self.seq.count + self.c8.count

    @property
    def cpu_per_1000(self) -> float:
        """Return the serving process's CPU seconds per 1,000 requests."""
        return self.cpu_seconds / self.requests * 1000 if self.requests else float("nan")

    @property
    def server_cpu_per_request(self) -> float:
        """Return the PostgreSQL backends' CPU seconds per request."""
        return self.server_cpu_seconds / self.requests if self.requests else float("nan")


async def interleaved(
    session: aiohttp.ClientSession,
    endpoints: Sequence[Endpoint],
    *,
    rounds: int,
    seq_count: int,
    per_client: int,
    deadline: float,
    seed: int = 13,
) -> dict[str, EndpointLoad]:
    """Load every endpoint once per round, in a new shuffled order each round.

    Interleaving spreads the machine's drift (other jobs, thermal, caches) over every
    endpoint alike, instead of letting it fall on whichever ran last. Each sequential and
    each concurrent step gets an equal slice of the time left, so a slow endpoint (seconds
    per scrape) still gets concurrent samples instead of spending the budget sequentially.
    """
    shuffle = random.Random(seed)
    found = {e.label: EndpointLoad() for e in endpoints}
    meter = CpuMeter()
    steps = rounds * len(endpoints) * 2
    for _ in range(rounds):
        order = list(endpoints)
        shuffle.shuffle(order)
        for endpoint in order:
            if time.monotonic() >= deadline:
                return found
            load = found[endpoint.label]
            backends = await endpoint.backends() if endpoint.backends else []
            meter.start(backends)
            before = cpu_seconds(endpoint.pid)
            until = min(deadline, time.monotonic() + (deadline - time.monotonic()) / steps)
            load.seq.extend(
                await sequential(session, endpoint.url, count=seq_count, deadline=until)
            )
            steps -= 1
            until = min(deadline, time.monotonic() + (deadline - time.monotonic()) / steps)
            load.c8.extend(
                await concurrent(session, endpoint.url, per_client=per_client, deadline=until)
            )
            steps -= 1
            load.cpu_seconds += cpu_seconds(endpoint.pid) - before
            if endpoint.backends:
                load.server_cpu_seconds += meter.stop(await endpoint.backends())
            load.rounds += 1
    return found
