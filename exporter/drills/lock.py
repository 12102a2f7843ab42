"""One drill per label across every exporter replica: a Redis lock with a TTL and a fencing token.

Taking the lock and drawing the next fencing token is one Lua script, so two exporters asked
at the same moment cannot both win. The holder renews the TTL while the drill runs; a holder
that stalls past the TTL loses the lock to the next one, finds out at its next renewal (the
value no longer matches) and ends its drill ``aborted``. Every token is larger than the one
before it, so records and markers written by a stale holder can be told apart: they carry
the smaller token.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import structlog
from redis.exceptions import RedisError

from exporter.errors import DrillBusy

__all__ = ["KEY_PREFIX", "DrillLock"]

#: Prefix of every key the drills keep in Redis.
KEY_PREFIX = "ingest:drills"

_log = structlog.get_logger(__name__)

# KEYS: lock, fence. ARGV: ttl ms, owner. Returns the new token, or nil when held.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ':' .. ARGV[2], 'PX', ARGV[1])
return token
"""
# KEYS: lock. ARGV: expected value, ttl ms. 1 when still ours and renewed.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DrillLock:
    """The lock of one drill label, held by one drill run."""

    def __init__(self, client: Any, *, label: str, ttl: float, owner: str | None = None) -> None:
        self._client = client
        self.label = label
        self._ttl_ms = max(1000, int(ttl * 1000))
        self.owner = owner or secrets.token_hex(8)
        self.key = f"{KEY_PREFIX}:lock:{label}"
        self._fence = f"{KEY_PREFIX}:fence:{label}"
        self.token: int | None = None
        self.lost = asyncio.Event()

    @property
    def _value(self) -> str:
        return f"{self.token}:{self.owner}"

    async def acquire(self) -> int:
        """Take the lock and return its fencing token.

        Raises:
            DrillBusy: another drill holds the label.
        """
        token = await self._client.eval(
            _ACQUIRE, 2, self.key, self._fence, self._ttl_ms, self.owner
        )
        if token is None:
            raise DrillBusy(self.label)
        self.token = int(token)
        return self.token

    async def renew(self) -> bool:
        """Extend the TTL; False (and :attr:`lost` set) when another holder has the lock."""
        renewed = await self._client.eval(_RENEW, 1, self.key, self._value, self._ttl_ms)
        if not renewed:
            self.lost.set()
        return bool(renewed)

    async def keep(self) -> None:
        """Renew every third of the TTL until cancelled or lost.

        A renewal Redis cannot answer is tried again at the next turn; the TTL decides
        whether the lock survives that.
        """
        interval = self._ttl_ms / 3000
        while not self.lost.is_set():
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except (RedisError, OSError) as exc:
                _log.warning(
                    "drill_lock_renewal_failed", label=self.label, error_type=type(exc).__name__
                )
        _log.warning("drill_lock_lost", label=self.label, token=self.token)

    async def release(self) -> None:
        """Give the lock back (only if it is still this holder's)."""
        if self.token is not None:
            await self._client.eval(_RELEASE, 1, self.key, self._value)
