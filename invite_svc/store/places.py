"""The waitlist's places in Redis: one sorted set of the people waiting, scored by their rank key,
so a place is a rank (`ZRANK`, O(log n)) and never a count over the list.

PostgreSQL holds the truth (invite_svc.store.waitlist); this index follows it. Each change writes
the entry's absolute rank key after its transaction commits, in a form that a late or repeated
write cannot undo: a new entry is added only if absent (`NX`), a referral only lowers a key that is
there (`XX LT`: two referrals written out of order end at the lower key), and leaving removes it.
Whatever a crash or an unreachable Redis lost, `catch_up` (invite_svc.jobs) writes again from the
rows whose place changed lately, and rebuilds the set when it was never caught up (a new list, or a
Redis that lost its data).

A place is read from the set only while it is marked caught up (the mark is read in the same round
trip): a rebuild swaps in a set read from PostgreSQL, which drops the writes of changes that
committed while it was read, so until the rebuild has written those again and set the mark, places
are counted in PostgreSQL and no two people are ever told the same place.

Members are join sequence numbers, zero-padded: Redis orders equal scores by member, so two
people with the same rank key keep their join order and no two share a place.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable, Sequence

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

log = structlog.get_logger("invite_svc.places")
Place = tuple[int, int]
"""(seq, rank key) of a waiting entry."""
_MEMBER_DIGITS = 15
_REBUILD_LEASE = 600


def member(seq: int) -> str:
    return f"{seq:0{_MEMBER_DIGITS}d}"


class Places:
    """The index; `pipe` carries the reads and writes of requests, `redis` the catch-up's."""

    def __init__(self, redis: aioredis.Redis, pipe: RedisPipe, keys: KeySpace) -> None:
        self._redis = redis
        self._pipe = pipe
        self._key = keys.tagged("waitlist", "places")
        self._rebuilding = keys.tagged("waitlist", "places-rebuilding")
        self._next = keys.tagged("waitlist", "places-next")
        self._synced = keys.tagged("waitlist", "places-synced")

    async def place(self, seq: int) -> tuple[int, int] | None:
        """(people ahead, people waiting) for the entry `seq`; None when the index cannot tell
        (not caught up, not holding it yet, or Redis unreachable): the caller counts in
        PostgreSQL instead."""
        try:
            synced, ahead, waiting = await self._pipe.execute_all(
                [("EXISTS", self._synced), ("ZRANK", self._key, member(seq)), ("ZCARD", self._key)]
            )
        except RedisError as error:
            log.warning("waitlist places unreachable; counting in the database", error=type(error).__name__)
            return None
        return None if not synced or ahead is None else (int(ahead), int(waiting))

    async def ranks(self, seqs: Sequence[int]) -> list[int | None]:
        """People ahead of each entry (None where the index cannot tell)."""
        try:
            synced, *answers = await self._pipe.execute_all(
                [("EXISTS", self._synced), *[("ZRANK", self._key, member(seq)) for seq in seqs]]
            )
        except RedisError:
            return [None for _ in seqs]
        return [None if not synced or ahead is None else int(ahead) for ahead in answers]

    async def joined(self, place: Place) -> None:
        await self._write("ZADD", self._key, "NX", place[1], member(place[0]))

    async def moved_up(self, place: Place) -> None:
        await self._write("ZADD", self._key, "XX", "LT", place[1], member(place[0]))

    async def moved(self, place: Place) -> None:
        await self._write("ZADD", self._key, "XX", place[1], member(place[0]))

    async def left(self, seqs: Sequence[int]) -> None:
        if seqs:
            await self._write("ZREM", self._key, *[member(seq) for seq in seqs])

    async def _write(self, *command: str | int) -> None:
        # The change has committed: a lost write is the catch-up's to make, not the caller's error.
        try:
            await self._pipe.execute(*command)
        except RedisError as error:
            log.warning("waitlist place not written; catch-up writes it", error=type(error).__name__)

    async def apply(self, waiting: Sequence[Place], gone: Sequence[int]) -> None:
        """Writes the rank keys of `waiting` as they are and removes `gone`: the catch-up's step."""
        async with self._redis.pipeline(transaction=False) as pipe:
            if waiting:
                pipe.zadd(self._key, {member(seq): key for seq, key in waiting})
            if gone:
                pipe.zrem(self._key, *[member(seq) for seq in gone])
            await pipe.execute()

    async def size(self) -> int | None:
        """People waiting, or None when the index cannot tell (not caught up)."""
        synced, size = await self._pipe.execute_all([("EXISTS", self._synced), ("ZCARD", self._key)])
        return int(size) if synced else None

    async def synced_until(self) -> datetime.datetime | None:
        value = await self._redis.get(self._synced)
        return datetime.datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value) if value else None

    async def mark_synced(self, moment: datetime.datetime) -> None:
        await self._redis.set(self._synced, moment.isoformat())

    async def rebuild(
        self,
        everyone: AsyncIterator[Sequence[Place]],
        changed_since: Callable[[datetime.datetime], AsyncIterator[tuple[Sequence[Place], Sequence[int]]]],
        moment: datetime.datetime,
    ) -> bool:
        """Replaces the set with `everyone` waiting (read as of `moment`), built aside and swapped
        in at once, then writes again what `changed_since(moment)` while it was built (the swap
        dropped those writes) and marks it caught up as of `moment`. False when another replica
        is rebuilding, or has caught the set up since it was found not to be."""
        if not await self._redis.set(self._rebuilding, "1", nx=True, ex=_REBUILD_LEASE):
            return False
        try:
            if await self.synced_until() is not None:
                return False
            await self._redis.delete(self._next)
            async for batch in everyone:
                await self._redis.zadd(self._next, {member(seq): key for seq, key in batch})
            if await self._redis.exists(self._next):
                await self._redis.rename(self._next, self._key)
            else:
                await self._redis.delete(self._key)
            async for waiting, gone in changed_since(moment):
                await self.apply(waiting, gone)
            await self.mark_synced(moment)
            return True
        finally:
            await self._redis.delete(self._rebuilding)
