"""The last drills, kept in Redis so every exporter replica serves the same history.

Keys (prefix :data:`~exporter.drills.lock.KEY_PREFIX`):

* ``records``: a list of finished drill records (JSON), newest first, trimmed to
  :data:`KEEP` in the same transaction as each push;
* ``running:<drill_id>``: a short marker (label, scenario, phase, start) while a drill runs,
  with the lock's TTL, so another replica can say that a drill is in progress.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from exporter.drills.lock import KEY_PREFIX
from exporter.drills.report import FailoverDrillSnapshot

__all__ = ["KEEP", "DrillStore"]

#: How many finished drills are kept.
KEEP = 50


class DrillStore:
    """Read and write drill records in one Redis database."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._records = f"{KEY_PREFIX}:records"

    async def add(self, snapshot: FailoverDrillSnapshot) -> None:
        """Push a finished drill and drop the oldest beyond :data:`KEEP`."""
        body = snapshot.model_dump_json()
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.lpush(self._records, body)
            pipe.ltrim(self._records, 0, KEEP - 1)
            pipe.delete(self._running(snapshot.drill_id))
            await pipe.execute()

    async def records(self, limit: int = KEEP) -> list[FailoverDrillSnapshot]:
        """Return the kept drills, newest first (a record that no longer parses is skipped)."""
        raw = await self._client.lrange(self._records, 0, max(0, limit - 1))
        records = []
        for item in raw:
            try:
                records.append(FailoverDrillSnapshot.model_validate_json(item))
            except ValidationError:
                # Written by another schema version: listed by no one rather than crash all.
                continue
        return records

    async def get(self, drill_id: str) -> FailoverDrillSnapshot | None:
        """Return the finished drill ``drill_id``, if it is among the kept ones."""
        for record in await self.records():
            if record.drill_id == drill_id:
                return record
        return None

    async def latest(
        self, *, deployment: str, label: str, scenario: str
    ) -> FailoverDrillSnapshot | None:
        """Return the newest kept drill of one deployment, label and scenario."""
        for record in await self.records():
            if (record.deployment, record.label, record.scenario) == (deployment, label, scenario):
                return record
        return None

    async def mark_running(self, marker: dict[str, Any], *, ttl: float) -> None:
        """Publish (or refresh) the marker of a running drill; it expires with the lock's TTL."""
        key = self._running(str(marker["drill_id"]))
        await self._client.set(key, json.dumps(marker), px=max(1000, int(ttl * 1000)))

    async def running(self) -> list[dict[str, Any]]:
        """Return the markers of drills running on any replica."""
        keys = [key async for key in self._client.scan_iter(match=self._running("*"), count=100)]
        if not keys:
            return []
        values = await self._client.mget(keys)
        return [json.loads(v) for v in values if v is not None]

    async def running_one(self, drill_id: str) -> dict[str, Any] | None:
        """Return the marker of the running drill ``drill_id``, if it runs."""
        value = await self._client.get(self._running(drill_id))
        return None if value is None else dict(json.loads(value))

    def _running(self, drill_id: str) -> str:
        return f"{KEY_PREFIX}:running:{drill_id}"
