"""Fixed windows counted in Redis: the one counter behind request budgets (mesh.limits), the
sign-in throttle (auth_svc) and the edge's rate limits (ratelimit_svc).

A count lives under its key for a lifetime that starts with its first hit: one script adds the
hits and, when they are the first, sets the lifetime, so every add is one atomic step and no
count outlives its window without expiring. A key that carries its window's index (`window()`)
counts in aligned windows, every subject's hour starting together; a key without one counts from
its first hit, so a window ends on its own a lifetime after it began.

Several counts go in one round trip, each its own atomic step, whatever slots their keys are on.

Our own module rather than the `limits` library, whose fixed window costs a round trip per
count and more CPU per count: bench/redis_paths.py measures both on the budget path.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from mesh.redis import Commands

_ADD = b"""
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if count == tonumber(ARGV[1]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return count
"""
_ADD_SHA = hashlib.sha1(_ADD).hexdigest().encode()  # noqa: S324 (the script's name in Redis, not a secret)


@dataclass(frozen=True)
class Window:
    index: int
    """Which window of its length `now` falls in: part of an aligned count's key."""
    seconds_left: float


def window(now: float, seconds: int) -> Window:
    """The aligned window of `seconds` that `now` (epoch seconds) falls in."""
    index = int(now // seconds)
    return Window(index, (index + 1) * seconds - now)


@dataclass(frozen=True)
class Hit:
    key: str
    hits: int
    lifetime: float
    """Seconds the count lives from its first hit."""


@dataclass(frozen=True)
class Count:
    count: int
    seconds_left: float
    """Until the count expires; 0 for a count that is not there."""


class WindowCounters:
    def __init__(self, redis: Commands) -> None:
        self._pipe = redis

    async def add(self, hits: Sequence[Hit]) -> list[int]:
        """Adds each hit to its count, one round trip for all; answers the new counts."""
        if not hits:
            return []
        # Sent in one turn, so a pipe writes them together; each answered on its own, because on
        # a Redis Cluster one node may know the script and another not.
        counts: list[Any] = await asyncio.gather(
            *(self._pipe.execute(b"EVALSHA", _ADD_SHA, *_arguments(hit)) for hit in hits), return_exceptions=True
        )
        unknown = [index for index, count in enumerate(counts) if _script_unknown(count)]
        # That Redis has not seen the script yet (a restart, a flush): EVAL loads it as it runs.
        loading = (self._pipe.execute(b"EVAL", _ADD, *_arguments(hits[index])) for index in unknown)
        loaded = await asyncio.gather(*loading)
        for index, count in zip(unknown, loaded, strict=True):
            counts[index] = count
        for count in counts:
            if isinstance(count, BaseException):
                raise count
        return [int(count) for count in counts]

    async def peek(self, keys: Sequence[str]) -> list[Count]:
        """Each key's count and the seconds it has left, counting nothing."""
        replies = await self._pipe.execute_all([(command, key) for key in keys for command in (b"GET", b"PTTL")])
        return [
            Count(int(count or 0), max(0, int(left)) / 1000 if count is not None else 0.0)
            for count, left in zip(replies[::2], replies[1::2], strict=True)
        ]

    async def give_back(self, keys: Sequence[str]) -> None:
        """One hit less on each key (a request that was counted, then not made)."""
        await self._pipe.execute_all([(b"DECR", key) for key in keys])

    async def clear(self, key: str) -> None:
        await self._pipe.execute(b"DEL", key)


def _script_unknown(reply: object) -> bool:
    return isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT")


def _arguments(hit: Hit) -> tuple[int | str, ...]:
    return 1, hit.key, hit.hits, max(1, round(hit.lifetime * 1000))
