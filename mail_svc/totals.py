"""How many emails a listing's filters match, for `ListEmails.total_size`.

Counting a large log takes longer than a page of it, and an admin paging through one listing asks
for the same total on every page, so a count is kept in Redis for a few seconds per filter: a
total may be that much behind the log, never wrong by more than what arrived since. Without
Redis every page counts afresh.
"""

from __future__ import annotations

import hashlib

import structlog
from redis.exceptions import RedisError

from mail_svc.store import EmailFilter, MailStore
from mesh.redis import Commands, KeySpace

log = structlog.get_logger("mail_svc.totals")


class ListingTotals:
    def __init__(self, store: MailStore, pipe: Commands, keys: KeySpace, ttl: float) -> None:
        self._store = store
        self._pipe = pipe
        self._keys = keys
        self._ttl_ms = max(1, int(ttl * 1000))

    async def total(self, query: str, only: EmailFilter) -> int:
        """The count of `only`, whose listing `query` names (the page token's query)."""
        key = self._keys.key("listing-total", hashlib.sha256(query.encode()).hexdigest()[:32])
        try:
            cached = await self._pipe.execute("GET", key)
        except RedisError:
            cached = None
        if cached is not None:
            return int(cached)
        count = await self._store.count(only)
        try:
            await self._pipe.execute("SET", key, count, "PX", self._ttl_ms)
        except RedisError:
            log.warning("a listing total was not cached; the next page counts again")
        return count
