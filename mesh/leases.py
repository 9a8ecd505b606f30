"""Work cut into a fixed number of shards, shared among the replicas that are alive by leases in
Redis.

Each replica renews its membership and its leases by one script, three times per lease lifetime.
The script counts the replicas seen within a lifetime, gives up leases beyond a fair share (so a
new replica gets work), renews the ones it keeps, and takes free shards up to its share. A shard
lease is a key that names its holder and lapses unrenewed, so a replica that dies loses its shards
within one lifetime and the others take them at their next renewal. Every taking of a shard
bumps the shard's fence: a holder writes its results only where no newer fence has written
(mesh callers check it in their stores), so a replica that stalled past its lease cannot write
over the one that took over.

Every key of a group shares one hash tag, so the script runs on one Redis Cluster slot. Time is
Redis's own (`TIME`), not the replicas' clocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis.asyncio as aioredis

from mesh.redis import KeySpace

_RENEW = """
local members, prefix, me = KEYS[1], KEYS[2], ARGV[1]
local ttl_ms, shards, leaving = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', members, '-inf', now_ms - ttl_ms)
if leaving then
  redis.call('ZREM', members, me)
else
  redis.call('ZADD', members, now_ms, me)
end
redis.call('PEXPIRE', members, ttl_ms * 2)
local alive = math.max(redis.call('ZCARD', members), 1)
local share = leaving and 0 or math.ceil(shards / alive)
local held, free = {}, {}
for shard = 0, shards - 1 do
  local key = prefix .. shard
  local holder = redis.call('GET', key)
  if holder == me then
    if #held / 2 < share then
      redis.call('PEXPIRE', key, ttl_ms)
      table.insert(held, shard)
      table.insert(held, tonumber(redis.call('GET', key .. ':fence') or '0'))
    else
      redis.call('DEL', key)
    end
  elseif not holder then
    table.insert(free, shard)
  end
end
for _, shard in ipairs(free) do
  if #held / 2 >= share then break end
  local key = prefix .. shard
  redis.call('SET', key, me, 'PX', ttl_ms)
  table.insert(held, shard)
  table.insert(held, redis.call('INCR', key .. ':fence'))
end
return held
"""


@dataclass(frozen=True)
class Held:
    shard: int
    fence: int
    """Grows each time the shard changes hands; the newest holder's is the largest."""


class ShardLeases:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, group: str, shards: int, ttl: float, holder: str) -> None:
        self._redis = redis
        self._keys = (keys.tagged(group, "members"), keys.tagged(group, "shard") + ":")
        self._shards = shards
        self.ttl = ttl
        self.holder = holder
        self._renew = redis.register_script(_RENEW)

    async def renew(self) -> list[Held]:
        """Keeps this replica among the living, and answers the shards it now holds."""
        return await self._run(leaving=False)

    async def release(self) -> None:
        """Gives every shard back at once (a replica that stops cleanly), rather than in one lifetime."""
        await self._run(leaving=True)

    async def _run(self, leaving: bool) -> list[Held]:
        flat = await self._renew(
            keys=list(self._keys),
            args=[self.holder, math.ceil(self.ttl * 1000), self._shards, "1" if leaving else "0"],
        )
        return [Held(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]
