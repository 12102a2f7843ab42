"""How the cache stores values in Redis: the Lua scripts that enforce its policy, the codec.

The scripts need Redis >= 5 (``ZPOPMIN``; ``TIME`` before writes relies on effects
replication, the default since 5 and the only mode since 7). Values are strict JSON on
both sides: :func:`encode` never writes NaN or an infinity, :func:`decode` refuses them,
and the scripts check what they return with Redis's ``cjson``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = [
    "GET_SCRIPT",
    "REPAIR_SCRIPT",
    "SET_SCRIPT",
    "STATS_SCRIPT",
    "decode",
    "encode",
    "glob_escape",
]

_COMMON = """
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- Drop members written longer than one TTL ago whose value key is gone (expired, deleted).
-- Only those can be dead under a shared TTL, so a healthy index costs one range read.
-- Returns how many of the checked old members are still alive.
local function prune(index, prefix, horizon, limit)
  local old = redis.call('ZRANGEBYSCORE', index, '-inf', horizon, 'LIMIT', 0, limit)
  local alive = 0
  for _, member in ipairs(old) do
    if redis.call('EXISTS', prefix .. member) == 0 then
      redis.call('ZREM', index, member)
    else
      alive = alive + 1
    end
  end
  return alive
end
"""

#: KEYS value, index, stats; ARGV payload, ttl, max_keys, member, value prefix, prune limit.
#: Every live value key has an index member, and the index never ends above max_keys, so
#: neither do the value keys - whatever other writers run concurrently.
SET_SCRIPT = (
    _COMMON
    + """
local ttl, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local clock = now()
prune(KEYS[2], ARGV[5], string.format('%.6f', clock - ttl), tonumber(ARGV[6]))
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%.6f', clock), ARGV[4])
redis.call('HINCRBY', KEYS[3], 'sets', 1)
local evicted = 0
local excess = redis.call('ZCARD', KEYS[2]) - cap
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #popped, 2 do
    evicted = evicted + redis.call('DEL', ARGV[5] .. popped[i])
  end
  if evicted > 0 then redis.call('HINCRBY', KEYS[3], 'evictions', evicted) end
end
return evicted
"""
)

#: KEYS value, index, stats; ARGV member. Returns the value, nil (miss) or 1 (corrupt, dropped).
GET_SCRIPT = """
local value = redis.pcall('GET', KEYS[1])
if type(value) == 'string' and pcall(cjson.decode, value) then
  redis.call('HINCRBY', KEYS[3], 'hits', 1)
  return value
end
redis.call('HINCRBY', KEYS[3], 'misses', 1)
if not value then return false end
-- Not JSON, or no string at all (GET answered WRONGTYPE): a miss, dropped and counted.
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'corrupt', 1)
return 1
"""

#: KEYS value, index, stats; ARGV member, the bytes the client could not decode. Deletes the
#: value only if nobody replaced it meanwhile. Hits are not taken back: counters stay monotonic.
REPAIR_SCRIPT = """
if redis.pcall('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
redis.call('HINCRBY', KEYS[3], 'corrupt', 1)
return 1
"""

#: KEYS index, stats; ARGV value prefix, ttl, prune limit. Returns {live keys, HGETALL stats}.
#: Live keys are the members written within one TTL plus the old ones found alive: old
#: members beyond the prune limit are dead under a shared TTL, so a mass expiry is not
#: reported as live keys until enough refreshes have pruned it.
STATS_SCRIPT = (
    _COMMON
    + """
local horizon = string.format('%.6f', now() - tonumber(ARGV[2]))
local alive = prune(KEYS[1], ARGV[1], horizon, tonumber(ARGV[3]))
local fresh = redis.call('ZCOUNT', KEYS[1], '(' .. horizon, '+inf')
return {fresh + alive, redis.call('HGETALL', KEYS[2])}
"""
)


def glob_escape(text: str) -> str:
    """Escape SCAN MATCH metacharacters so a namespace or prefix matches literally."""
    return "".join("\\" + c if c in "\\*?[]" else c for c in text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def encode(value: Any) -> bytes:
    """Return ``value`` as compact UTF-8 JSON (NaN and infinities refused, as JSON does)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode()


def decode(raw: bytes | str) -> Any:
    """Parse strict JSON (NaN/Infinity rejected, matching :func:`encode`)."""
    return json.loads(raw, parse_constant=_reject_constant)
