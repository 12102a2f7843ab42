"""Measure failover drills on private copies of the local stack, through the real CLI.

Run: .venv/bin/python -m bench.failover_drills [--runs N]   (needs `make services`, as root)

Each run copies the local stack's database into a private primary with a streaming standby
(``tests/integration/pg_instance.PgPair``), feeds a dimension table through the multi-host
write URL every 50 ms, and runs ``ingest-exporter drill --scenario S --format json`` with the
project's own ``scripts/timescale-failover.sh`` as the injection command. Prints a markdown
table (median, min-max) per variant, then a ``fallback`` drill's markdown report against the
local stack itself (primary 55432, standby 55433), which stays untouched.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.integration.drill_support import FAILOVER_SCRIPT, Feed, create_dimension, drop_table
from tests.integration.pg_instance import PgPair

REPO = Path(__file__).resolve().parents[1]
INTERVAL = 0.25
#: name -> (synchronous replication, injection script steps)
VARIANTS: dict[str, tuple[bool, str]] = {
    "switchover (clean)": (False, "{run} switchover"),
    "kill, async": (False, "{run} kill"),
    "kill after a 0.5 s partition, async": (False, "{run} partition && sleep 0.5 && {run} kill"),
    "kill after a 0.5 s partition, sync": (True, "{run} partition && sleep 0.5 && {run} kill"),
}


def _cli(config: Path, scenario: str, fmt: str, env: dict[str, str]) -> str:
    """Run ``ingest-exporter drill`` and return its stdout (the record)."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "exporter", "drill", "--config.file", str(config)),
            *("--scenario", scenario, "--format", fmt, "--log.level", "warning"),
        ],
        env={**os.environ, **env, "KAFKA_MANIFEST_PUBLISH": "false"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"drill exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


async def _one(variant: str, workdir: Path) -> dict[str, Any]:
    synchronous, steps = VARIANTS[variant]
    async with PgPair(os.environ["TIMESCALE_ADMIN_URL"], synchronous=synchronous) as pair:
        assert pair.standby is not None
        user = os.environ["TIMESCALEDB_URL"]
        write_url = pair.write_url(user)
        table = f"bench_trades_{uuid.uuid4().hex[:8]}"
        await create_dimension(pair.url(user), table)
        ports = f"--primary-port {pair.primary.port} --standby-port {pair.standby.port}"
        # "{run} kill" -> "bash scripts/timescale-failover.sh --primary-port P ... kill"
        command = steps.format(run=f"bash {FAILOVER_SCRIPT} {ports}")
        config = workdir / "pair.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "dimensions": [{"name": "trades", "table": table, "freshness_sla_seconds": 30}],
                    "failover_drill": {
                        "enabled": True,
                        "label": f"bench-{uuid.uuid4().hex[:8]}",
                        "inject_command": ["bash", "-c", command],
                        "probe_interval_seconds": INTERVAL,
                        "write_interval_seconds": 0.05,
                        "deadline_seconds": 60,
                    },
                }
            )
        )
        feed = Feed(write_url, table)
        feed.start()
        try:
            await asyncio.sleep(0.5)
            env = {
                "TIMESCALEDB_URL": write_url,
                "TIMESCALE_WRITE_URL": write_url,
                "TIMESCALE_REPLICA_URL": pair.url(user, standby=True),
            }
            scenario = "switchover" if variant.startswith("switchover") else "kill"
            output = await asyncio.to_thread(_cli, config, scenario, "json", env)
        finally:
            await feed.stop()
    return dict(json.loads(output))


def _numbers(measured: list[dict[str, Any]], key: str, *, rpo: bool = False) -> list[float]:
    values = (x["rpo"][key] if rpo else x[key] for x in measured)
    return [float(v) for v in values if v is not None]


def _cell(values: list[float], unit: str, digits: int = 2) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f})"


async def _fallback_report(workdir: Path) -> str:
    """Run a fallback drill against the local stack itself and return its markdown."""
    user = os.environ["TIMESCALEDB_URL"]
    table = f"bench_trades_{uuid.uuid4().hex[:8]}"
    await create_dimension(user, table)
    feed = Feed(user, table, interval=0.2)
    feed.start()
    config = workdir / "local.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "dimensions": [{"name": "trades", "table": table, "freshness_sla_seconds": 60}],
                "failover_drill": {"enabled": True, "label": "local-fallback"},
            }
        )
    )
    try:
        await asyncio.sleep(2.0)
        env = {"TIMESCALE_REPLICA_URL": os.environ["TIMESCALE_REPLICA_URL"]}
        return await asyncio.to_thread(_cli, config, "fallback", "markdown", env)
    finally:
        await feed.stop()
        await drop_table(user, table)


async def main(runs: int) -> None:
    """Run every variant ``runs`` times, print the table, then the fallback report."""
    rows = ["| variant | result | detection | promotion | RTO | lost writes | RPO bytes |"]
    rows.append("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in VARIANTS:
            records = [await _one(variant, Path(tmp)) for _ in range(runs)]
            m = [r["measured"] for r in records]
            results = "/".join(sorted({r["result"] for r in records}))

            cells = [
                _cell(_numbers(m, "detection_seconds"), " s"),
                _cell(_numbers(m, "promotion_seconds"), " s"),
                _cell(_numbers(m, "rto_seconds"), " s"),
                _cell(_numbers(m, "lost_writes", rpo=True), "", 0),
                _cell(_numbers(m, "bytes", rpo=True), "", 0),
            ]
            rows.append(f"| {variant} | {results} | {' | '.join(cells)} |")
            print(rows[-1], flush=True)
        report = await _fallback_report(Path(tmp))
    print()
    print("\n".join(rows))
    print()
    print(report)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
