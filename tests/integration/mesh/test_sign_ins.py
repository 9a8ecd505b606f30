"""The sign-in throttle against a real Redis (the embedded one is Redis 6.2): failures count in a
window that starts at the first of them and ends on its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mesh.redis import KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.settings import Settings
from mesh.sign_ins import SignInThrottle
from mesh.windows import WindowCounters

WINDOW = 900


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(Settings(redis_url=redis_url))
    try:
        yield client
    finally:
        await client.aclose()


async def test_failed_sign_ins_count_in_a_window_that_ends_on_its_own(redis: aioredis.Redis, pipe: RedisPipe) -> None:
    keys = KeySpace(f"throttle-{uuid.uuid4().hex[:8]}")
    throttle = SignInThrottle(WindowCounters(pipe), keys, per_account=10, per_client=100, window=WINDOW)
    for _ in range(3):
        await throttle.failed("ada@example.com", "192.0.2.7")
    counted = await throttle.admit("ada@example.com", "192.0.2.7")

    assert counted == 3
    for subject in ("ada@example.com", "192.0.2.7"):
        assert 0 < await redis.ttl(keys.tagged(subject, "sign-in-failures")) <= WINDOW
