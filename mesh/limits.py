"""Fixed-window request budgets, per subject (a client address, an email…), counted in aligned
windows by mesh.windows."""

from __future__ import annotations

import time
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from mesh.redis import KeySpace
from mesh.windows import Hit, WindowCounters, window

log = structlog.get_logger("mesh.limits")


class FixedWindowLimit:
    def __init__(self, counters: WindowCounters, keys: KeySpace, name: str, limit: int, seconds: int) -> None:
        self._counters = counters
        self._keys = keys
        self._name = name
        self._limit = limit
        self._seconds = seconds

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
    """Counts one request against each budget for its subject, in one round trip; answers each
    one's `wait_after`.

    Checks come in order: once a budget is spent, the request is refused there, and the budgets
    after it are given their count back, as if they had not been asked.
    """
    now = time.time()
    windows = [window(now, limit._seconds) for limit, _ in charges]
    keys = [
        limit._keys.tagged(subject, limit._name, str(current.index))
        for (limit, subject), current in zip(charges, windows, strict=True)
    ]
    counters = charges[0][0]._counters
    # Twice the window: a count lives past the window it counts in, never into the next one's key.
    hits = [Hit(key, 1, 2 * limit._seconds) for (limit, _), key in zip(charges, keys, strict=True)]
    try:
        counts = await counters.add(hits)
    except RedisError:
        log.warning("request budget unavailable, allowing", budgets=[limit._name for limit, _ in charges])
        return [0.0] * len(charges)
    waits = [
        0.0 if count <= limit._limit else current.seconds_left
        for (limit, _), count, current in zip(charges, counts, windows, strict=True)
    ]
    refused = next((index for index, wait in enumerate(waits) if wait), len(waits))
    if unasked := keys[refused + 1 :]:
        try:
            await counters.give_back(unasked)
        except RedisError:
            log.warning("could not give back a request budget count; it lapses with its window")
        waits[refused + 1 :] = [0.0] * len(unasked)
    return waits
