"""Judge one run against the performance targets, as ratios (the machine is noisy)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.fleet import INTERVAL, FleetRow
from bench.kafka_bridge import BridgeThroughput
from bench.report import Verdict, fmt_mib, fmt_ms, fmt_ratio, fmt_seconds
from bench.side_by_side import OURS, PG_EXPORTER, SideBySide

__all__ = ["verdicts"]

MIB = 2**20


def _at_most(value: float, limit: float) -> bool | None:
    return None if math.isnan(value) else value <= limit


def _small_scale(one: SideBySide, fleet: Sequence[FleetRow]) -> Verdict:
    floor = one.floor()
    points = [(one.series[OURS], one.scrapes[f"{OURS} /metrics"].seq.median)]
    points += [(row.series, row.metrics.seq.median) for row in fleet if row.series <= 10_000]
    ratios = [(series, p50 / floor) for series, p50 in points]
    shown = ", ".join(f"{fmt_ratio(r)} at {s:,} series" for s, r in ratios)
    worst = max(r for _, r in ratios)
    return Verdict(
        "`/metrics` p50 <= 1.5x the Go HTTP floor up to 10,000 series",
        f"{shown} (floor: redis_exporter `/health` p50 {fmt_ms(floor)})",
        _at_most(worst, 1.5),
    )


def _thousand(one: SideBySide, big: FleetRow | None, skipped: str) -> list[Verdict]:
    if big is None:
        reason = f"not run: {skipped}"
        names = [
            "at 1,000 deployments `/metrics` p50 <= 0.5x postgres_exporter's `/metrics` p50",
            "at 1,000 deployments `/metrics` c8 p99 <= 100 ms while probing",
            "1,000 deployments: effective period <= 1.1x interval",
            "1,000 deployments: zero timeouts",
            "1,000 deployments: ready within two intervals",
            "1,000 deployments: PG sessions and Redis connections opened <= 1.05 N",
            "1,000 deployments: RSS <= 200 MiB",
        ]
        return [Verdict(name, reason, None) for name in names]
    n = big.deployments
    theirs = one.scrapes[f"{PG_EXPORTER} /metrics"].seq.median
    ratio = big.metrics.seq.median / theirs
    opened = max(big.pg_sessions, big.redis_connections) / n
    return [
        Verdict(
            f"at {n:,} deployments `/metrics` p50 <= 0.5x postgres_exporter's `/metrics` p50",
            f"{fmt_ratio(ratio)} ({fmt_ms(big.metrics.seq.median)} at {big.series:,} series vs "
            f"{fmt_ms(theirs)} at {one.series[PG_EXPORTER]:,} series)",
            _at_most(ratio, 0.5),
        ),
        Verdict(
            f"at {n:,} deployments `/metrics` c8 p99 <= 100 ms while probing",
            f"{fmt_ms(big.metrics.c8.p(99))} ({big.metrics.c8.count} requests)",
            _at_most(big.metrics.c8.p(99), 0.1),
        ),
        Verdict(
            f"{n:,} deployments: effective period <= 1.1x interval",
            f"{fmt_ratio(big.effective_period / INTERVAL)} ({fmt_seconds(big.effective_period)})",
            _at_most(big.effective_period / INTERVAL, 1.1),
        ),
        Verdict(
            f"{n:,} deployments: zero timeouts",
            f"{big.timeouts:,} checks timed out in the run",
            big.timeouts == 0,
        ),
        Verdict(
            f"{n:,} deployments: ready within two intervals",
            f"{fmt_seconds(big.ready_after)} ({big.ready_after / INTERVAL:.1f} intervals)"
            if big.ready_after is not None
            else "not ready in time",
            big.ready_after is not None and big.ready_after <= 2 * INTERVAL,
        ),
        Verdict(
            f"{n:,} deployments: PG sessions and Redis connections opened <= 1.05 N",
            f"{fmt_ratio(big.pg_sessions / n)} N sessions, "
            f"{fmt_ratio(big.redis_connections / n)} N connections",
            opened <= 1.05,
        ),
        Verdict(
            f"{n:,} deployments: RSS <= 200 MiB",
            f"{fmt_mib(big.rss)} ({fmt_ratio(big.rss / (200 * MIB))} the limit)",
            big.rss <= 200 * MIB,
        ),
    ]


def verdicts(
    one: SideBySide,
    fleet: Sequence[FleetRow],
    bridge: BridgeThroughput | None,
    *,
    skipped_thousand: str,
) -> list[Verdict]:
    """Return one verdict per performance target (``None``: not measured, and why)."""
    big = next((row for row in fleet if row.deployments >= 1_000), None)
    found = [_small_scale(one, fleet), *_thousand(one, big, skipped_thousand)]
    found.append(
        Verdict(
            "RSS <= 60 MiB at one deployment",
            f"{fmt_mib(one.rss[OURS])} ({fmt_ratio(one.rss[OURS] / (60 * MIB))} the limit)",
            one.rss[OURS] <= 60 * MIB,
        )
    )
    per_check = [("`/probe`", one.probe_cpu_per_check())]
    per_check += [(f"N = {row.deployments:,}", row.cpu_per_check) for row in fleet]
    worst = max(value for _, value in per_check)
    found.append(
        Verdict(
            "probe path <= 0.25 ms CPU per check at any N",
            ", ".join(f"{fmt_ms(value)} ({where})" for where, value in per_check),
            _at_most(worst, 0.25e-3),
        )
    )
    if bridge is None:
        found.append(Verdict("Kafka bridge >= 0.8x a bare aiokafka consumer", "not run", None))
    else:
        ratio = bridge.ratio()
        found.append(
            Verdict(
                "Kafka bridge >= 0.8x a bare aiokafka consumer",
                fmt_ratio(ratio),
                None if math.isnan(ratio) else ratio >= 0.8,
            )
        )
    return found
