"""Fixed-window request budgets in Redis, per subject (a client address, an email…)."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

from mesh.redis import KeySpace

log = structlog.get_logger("mesh.limits")


class FixedWindowLimit:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, name: str, limit: int, window: int) -> None:
        self._redis = redis
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
        now = time.time()
        window = int(now) // self._window
        key = self._keys.tagged(subject, self._name, str(window))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(key, 0, ex=self._window * 2, nx=True)
                pipe.incr(key)
                _, count = await pipe.execute()
        except RedisError:
            log.warning("request budget unavailable, allowing", budget=self._name)
            return 0.0
        return 0.0 if int(count) <= self._limit else (window + 1) * self._window - now
