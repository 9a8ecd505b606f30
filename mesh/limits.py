"""Fixed-window request budgets in Redis, per subject (a client address, an email…)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

log = structlog.get_logger("mesh.limits")


def counted_in_window(key: str, seconds: int) -> list[tuple[str | int, ...]]:
    """The commands that count one more on `key`, whose window (and expiry) starts with its first
    count: SET NX with the expiry, then INCR, since Redis 6.2 has no EXPIRE NX."""
    return [("SET", key, 0, "EX", seconds, "NX"), ("INCR", key)]


class FixedWindowLimit:
    def __init__(self, pipe: RedisPipe, keys: KeySpace, name: str, limit: int, window: int) -> None:
        self._pipe = pipe
        self._keys = keys
        self._name = name
        self._limit = limit
        self._window = window

    async def allow(self, subject: str) -> bool:
        """Counts one request of `subject`; False once its budget for this window is spent."""
        return await self.wait_after(subject) == 0

    async def wait_after(self, subject: str) -> float:
        """Counts one request of `subject`; answers 0 within its budget, else the seconds until
        the window renews.

        Fails open when Redis is unreachable: a budget guards cost, not correctness, and the
        caller's own checks still apply.
        """
        return (await spend_together([(self, subject)]))[0]


async def spend_together(charges: Sequence[tuple[FixedWindowLimit, str]]) -> list[float]:
    """Counts one request against each budget for its subject, in one round trip through the
    first budget's pipe; answers each one's `wait_after`.

    Checks come in order: once a budget is spent, the request is refused there, and the budgets
    after it are given their count back, as if they had not been asked.
    """
    now = time.time()
    windows = [int(now) // limit._window for limit, _ in charges]
    keys = [
        limit._keys.tagged(subject, limit._name, str(window))
        for (limit, subject), window in zip(charges, windows, strict=True)
    ]
    pipe = charges[0][0]._pipe
    commands: list[tuple[str | int, ...]] = []
    for (limit, _), key in zip(charges, keys, strict=True):
        commands += counted_in_window(key, limit._window * 2)
    try:
        counts = (await pipe.execute_all(commands))[1::2]
    except RedisError:
        log.warning("request budget unavailable, allowing", budgets=[limit._name for limit, _ in charges])
        return [0.0] * len(charges)
    waits = [
        0.0 if int(count) <= limit._limit else (window + 1) * limit._window - now
        for (limit, _), count, window in zip(charges, counts, windows, strict=True)
    ]
    refused = next((index for index, wait in enumerate(waits) if wait), len(waits))
    if unasked := keys[refused + 1 :]:
        try:
            await pipe.execute_all([("DECR", key) for key in unasked])
        except RedisError:
            log.warning("could not give back a request budget count; it lapses with its window")
        waits[refused + 1 :] = [0.0] * len(unasked)
    return waits
