"""The nonce ledger against a real Redis: exact answers under concurrency, and every way the
store can fail ends in a `RedisError` for the waiting sightings, never in a hang or a wrong answer."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mesh.nonces import NonceLedger
from mesh.redis import create_redis
from mesh.settings import Settings
from meshctl.embedded import EmbeddedRedis
from tests.conftest import eventually


def _keys(count: int, distinct: int) -> list[str]:
    run = secrets.token_hex(4)
    return [f"test:nonce:{run}:{i % distinct}" for i in range(count)]


async def test_each_concurrent_sighting_is_answered_exactly(redis_url: str) -> None:
    redis = create_redis(Settings(redis_url=redis_url))
    ledger = NonceLedger(redis, ttl=60)
    keys = _keys(400, 150)

    answers = await asyncio.gather(*(ledger.first_sighting(key) for key in keys))

    firsts = [key for key, first in zip(keys, answers, strict=True) if first]
    assert sorted(firsts) == sorted(set(keys))
    assert await ledger.first_sighting(keys[0]) is False
    assert 55 <= await redis.ttl(keys[0]) <= 60
    await ledger.close()
    await redis.aclose()


async def test_a_quiet_ledger_writes_a_sighting_at_once(redis_url: str) -> None:
    redis = create_redis(Settings(redis_url=redis_url))
    ledger = NonceLedger(redis, ttl=60, flush_interval=60)

    # Nothing was written for longer than the interval (ever), so nothing holds this sighting back.
    async with asyncio.timeout(20):
        assert await ledger.first_sighting(_keys(1, 1)[0]) is True
    await ledger.close()
    await redis.aclose()


async def test_sightings_within_the_flush_interval_leave_in_one_write(own_redis: EmbeddedRedis) -> None:
    redis = create_redis(Settings(redis_url=own_redis.url))
    ledger = NonceLedger(redis, ttl=60, flush_interval=1.0)
    await ledger.first_sighting(_keys(1, 1)[0])  # connects, and starts an interval with its write
    reads_before = (await redis.info("stats"))["total_reads_processed"]

    # One sighting per event-loop turn, as grpc.aio hands a server its calls.
    sightings = []
    for key in _keys(20, 20):
        sightings.append(asyncio.ensure_future(ledger.first_sighting(key)))
        await asyncio.sleep(0)
    answers = await asyncio.gather(*sightings)

    assert answers == [True] * 20
    reads = (await redis.info("stats"))["total_reads_processed"] - reads_before
    assert reads <= 2  # the batch, and this INFO; one write per sighting would be 21
    await ledger.close()
    await redis.aclose()


async def test_a_silent_store_fails_the_waiting_sightings_within_the_timeout(own_redis: EmbeddedRedis) -> None:
    redis = create_redis(Settings(redis_url=own_redis.url))
    ledger = NonceLedger(redis, ttl=60, timeout=0.5)
    assert await ledger.first_sighting(_keys(1, 1)[0]) is True
    await redis.client_pause(3000, all=False)

    started = time.monotonic()
    with pytest.raises(RedisError):
        await ledger.first_sighting(_keys(1, 1)[0])
    assert time.monotonic() - started < 2.5

    await redis.client_unpause()
    key = _keys(1, 1)[0]
    assert await ledger.first_sighting(key) is True
    assert await ledger.first_sighting(key) is False
    await ledger.close()
    await redis.aclose()


async def test_a_killed_connection_fails_loudly_and_the_next_sighting_connects_again(
    own_redis: EmbeddedRedis,
) -> None:
    redis = create_redis(Settings(redis_url=own_redis.url))
    ledger = NonceLedger(redis, ttl=60)
    assert await ledger.first_sighting(_keys(1, 1)[0]) is True

    await redis.client_kill_filter(_type="normal", skipme=True)

    key = _keys(1, 1)[0]

    async def answered() -> bool:
        try:
            return await ledger.first_sighting(key)
        except RedisError:
            return False

    await eventually(answered, what="a sighting on a new connection")
    assert await ledger.first_sighting(key) is False
    await ledger.close()
    await redis.aclose()


async def test_a_store_that_is_down_fails_at_once_and_is_used_again_once_back(own_redis: EmbeddedRedis) -> None:
    redis = create_redis(Settings(redis_url=own_redis.url))
    ledger = NonceLedger(redis, ttl=60)
    own_redis.stop()

    with pytest.raises(RedisError):
        await ledger.first_sighting(_keys(1, 1)[0])

    own_redis.start()
    assert await ledger.first_sighting(_keys(1, 1)[0]) is True
    await ledger.close()
    await redis.aclose()


async def test_an_error_reply_fails_that_sighting(own_redis: EmbeddedRedis) -> None:
    redis = create_redis(Settings(redis_url=own_redis.url))
    ledger = NonceLedger(redis, ttl=60)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", "1")

    with pytest.raises(RedisError, match="OOM"):
        await ledger.first_sighting(_keys(1, 1)[0])

    await redis.config_set("maxmemory", "0")
    assert await ledger.first_sighting(_keys(1, 1)[0]) is True
    await ledger.close()
    await redis.aclose()


async def test_the_ledger_authenticates_and_selects_the_database_of_the_url(own_redis: EmbeddedRedis) -> None:
    admin = aioredis.Redis(host=own_redis.host, port=own_redis.port)
    await admin.config_set("requirepass", "s3cret-pass")
    url = f"redis://:s3cret-pass@{own_redis.host}:{own_redis.port}/5"
    redis = create_redis(Settings(redis_url=url))
    ledger = NonceLedger(redis, ttl=60)
    key = _keys(1, 1)[0]

    assert await ledger.first_sighting(key) is True

    assert await redis.exists(key) == 1
    other_database = aioredis.Redis(host=own_redis.host, port=own_redis.port, password="s3cret-pass", db=0)
    assert await other_database.exists(key) == 0
    await ledger.close()
    for client in (redis, other_database, admin):
        await client.aclose()


async def test_a_wrong_password_fails_the_sighting(own_redis: EmbeddedRedis) -> None:
    admin = aioredis.Redis(host=own_redis.host, port=own_redis.port)
    await admin.config_set("requirepass", "s3cret-pass")
    redis = create_redis(Settings(redis_url=f"redis://:wrong@{own_redis.host}:{own_redis.port}/0"))
    ledger = NonceLedger(redis, ttl=60)

    with pytest.raises(RedisError):
        await ledger.first_sighting(_keys(1, 1)[0])
    await ledger.close()
    await redis.aclose()
    await admin.aclose()
