"""Request counters in Redis: one per rule, client address and window, counted and given its
lifetime by one script, so each request is one atomic step and a counter never outlives its
window without expiring."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from mesh.redis import KeySpace

# Every descriptor of a request in one script: one round trip. Their keys share a Cluster slot,
# as each is tagged with the client address and one request comes from one client.
_COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
    local hits = tonumber(ARGV[2 * i - 1])
    local count = redis.call('INCRBY', key, hits)
    if count == hits then
        redis.call('PEXPIRE', key, ARGV[2 * i])
    end
    counts[i] = count
end
return counts
"""


class Counters:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace) -> None:
        self._keys = keys
        # EVALSHA, loading the script only when Redis does not know it (a restart, a flush).
        self._count = redis.register_script(_COUNT)

    def key(self, client: str, route: str, window: int) -> str:
        return self._keys.tagged(client, "hits", route, str(window))

    async def add(self, hits: Sequence[tuple[str, int, int]]) -> list[int]:
        """Adds each (key, hits, lifetime in ms) in one atomic step; answers the new counts."""
        if not hits:
            return []
        arguments = [value for _, count, lifetime_ms in hits for value in (count, lifetime_ms)]
        counts = await self._count(keys=[key for key, _, _ in hits], args=arguments)
        return [int(count) for count in counts]
