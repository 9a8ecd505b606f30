"""The mesh's Redis clients on a Redis Cluster of its own (three masters): commands and the pipe
reach the node of each key's slot, same-slot transactions and scripts work, and with every master
gone each of them fails as a single Redis would, with a `RedisError`, which every fail-closed
path of the mesh catches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.exceptions import RedisError

from mesh.redis import KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.settings import Settings
from meshctl.embedded import EmbeddedRedisCluster

KEYS = KeySpace("cluster-test")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedRedisCluster]:
    started = EmbeddedRedisCluster(tmp_path)
    started.start()
    yield started
    started.stop()


async def test_commands_the_pipe_transactions_and_scripts_reach_every_master(cluster: EmbeddedRedisCluster) -> None:
    client = create_redis(Settings(redis_url=cluster.url, redis_cluster=True))
    pipe = RedisPipe(client)
    try:
        keys = [KEYS.key(uuid.uuid4().hex) for _ in range(30)]
        await pipe.execute_all([("SET", key, index) for index, key in enumerate(keys)])
        read = await asyncio.gather(*(client.get(key) for key in keys))
        tag = uuid.uuid4().hex
        async with client.pipeline(transaction=True) as transaction:
            transaction.set(KEYS.tagged(tag, "a"), 1)
            transaction.incr(KEYS.tagged(tag, "b"))
            together = await transaction.execute()
        scripted = await client.eval("return redis.call('INCR', KEYS[1])", 1, KEYS.tagged(tag, "b"))
    finally:
        await pipe.close()
        await client.aclose()

    assert read == [str(index).encode() for index in range(30)]
    assert together == [True, 1] and scripted == 2
    sizes = []
    for node in cluster.nodes:
        with redis.Redis(host=node.host, port=node.port) as direct:
            sizes.append(direct.dbsize())
    assert all(size > 0 for size in sizes), sizes


async def test_with_every_master_gone_each_client_fails_with_a_redis_error(cluster: EmbeddedRedisCluster) -> None:
    client = create_redis(Settings(redis_url=cluster.url, redis_cluster=True))
    pipe = RedisPipe(client, timeout=2)
    try:
        await pipe.execute("SET", KEYS.key("before"), 1)
        cluster.stop()
        for failing in (
            lambda: client.get(KEYS.key("after")),
            lambda: client.eval("return 1", 1, KEYS.key("after")),
            lambda: pipe.execute("GET", KEYS.key("after")),
        ):
            with pytest.raises(RedisError):
                await asyncio.wait_for(failing(), 30)
        with pytest.raises(RedisError):
            async with client.pipeline(transaction=False) as batch:
                batch.get(KEYS.key("after"))
                await asyncio.wait_for(batch.execute(), 30)
    finally:
        await pipe.close()
        await client.aclose()
