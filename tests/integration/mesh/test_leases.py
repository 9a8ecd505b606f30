"""Shard leases against a real Redis: fair shares, a new holder's share, a dead holder's shards
taken by the others, fences that only grow, and a clean release."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from mesh.leases import ShardLeases
from mesh.redis import KeySpace, create_redis
from mesh.settings import Settings
from tests.conftest import eventually

SHARDS = 30
TTL = 1.0


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = create_redis(Settings(redis_url=redis_url))
    yield client
    await client.aclose()


def _leases(redis: aioredis.Redis, group: str, holder: str) -> ShardLeases:
    return ShardLeases(redis, KeySpace("leasetest"), group, SHARDS, TTL, holder)


async def test_holders_share_the_shards_fairly_and_a_newcomer_gets_its_share(redis: aioredis.Redis) -> None:
    group = uuid.uuid4().hex
    first, second, third = (_leases(redis, group, name) for name in ("first", "second", "third"))

    alone = await first.renew()
    assert sorted(held.shard for held in alone) == list(range(SHARDS))

    await second.renew()
    await first.renew()  # gives back what is beyond its half
    shared = {"first": await first.renew(), "second": await second.renew()}
    assert {len(held) for held in shared.values()} == {SHARDS // 2}
    assert not {h.shard for h in shared["first"]} & {h.shard for h in shared["second"]}

    await third.renew()
    for _ in range(2):
        held = await asyncio.gather(first.renew(), second.renew(), third.renew())
    assert [len(each) for each in held] == [SHARDS // 3] * 3
    assert len({h.shard for each in held for h in each}) == SHARDS


async def test_a_dead_holders_shards_go_to_the_living_with_a_newer_fence(redis: aioredis.Redis) -> None:
    group = uuid.uuid4().hex
    living, dying = _leases(redis, group, "living"), _leases(redis, group, "dying")
    await living.renew()
    await dying.renew()
    await living.renew()
    lost = {held.shard: held.fence for held in await dying.renew()}
    assert lost

    async def taken_over() -> bool:
        return len(await living.renew()) == SHARDS

    await eventually(taken_over, within=5 * TTL, what="the dead holder's shards taken")
    fences = {held.shard: held.fence for held in await living.renew()}
    assert all(fences[shard] > fence for shard, fence in lost.items())


async def test_a_release_frees_every_shard_at_once(redis: aioredis.Redis) -> None:
    group = uuid.uuid4().hex
    leaving, staying = _leases(redis, group, "leaving"), _leases(redis, group, "staying")
    await leaving.renew()
    await staying.renew()

    await leaving.release()

    assert len(await staying.renew()) == SHARDS
