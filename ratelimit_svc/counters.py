"""Request counters in Redis: one per rule, client address and window, counted and given its
lifetime by one script, so each request is one atomic step and a counter never outlives its
window without expiring."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from mesh.redis import KeySpace

_COUNT = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
"""


class Counters:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._keys = keys
        self._count = redis.register_script(_COUNT)
        self._redis = redis

    def key(self, client: str, route: str, window: int) -> str:
        return self._keys.tagged(client, "hits", route, str(window))

    async def add(self, hits: Sequence[tuple[str, int, int]]) -> list[int]:
        """Adds each (key, hits, lifetime in ms) in one round trip; answers the new counts."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, count, lifetime_ms in hits:
                await self._count(keys=[key], args=[count, lifetime_ms], client=pipe)
            return [int(count) for count in await pipe.execute()]
