"""Real PostgreSQL and Redis for the whole test session: the ones `MESH_DATABASE_URL` and
`MESH_REDIS_URL` name, or embedded ones started here (as `meshctl up` would)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from mesh.settings import Settings
from meshctl.chain_tools import deploy_dev_token
from meshctl.embedded import EmbeddedChain, EmbeddedPostgres, EmbeddedRedis, EmbeddedRedisCluster, free_port

# A shared 2-core CI machine stalls now and then; examples are judged on results, not speed.
settings.register_profile("mesh", deadline=None)
settings.load_profile("mesh")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if url := os.environ.get("MESH_DATABASE_URL"):
        yield url
        return
    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data", free_port())
    postgres.start()
    yield postgres.url
    postgres.discard()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`MESH_REDIS_URL`, or an embedded Redis; with `MESH_REDIS_CLUSTER=1`, an embedded Redis
    Cluster of three masters (every client made from settings then speaks cluster)."""
    if url := os.environ.get("MESH_REDIS_URL"):
        yield url
        return
    if Settings().redis_cluster:
        cluster = EmbeddedRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
        cluster.start()
        yield cluster.url
        cluster.stop()
        return
    redis = EmbeddedRedis(tmp_path_factory.mktemp("redis"), free_port())
    redis.start()
    yield redis.url
    redis.stop()


@pytest.fixture(scope="session")
def chain_rpc_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An Ethereum JSON-RPC node: `MESH_CHAIN_RPC_URL` (anvil, say), or the development chain
    `meshctl up` runs."""
    if url := os.environ.get("MESH_CHAIN_RPC_URL"):
        yield url
        return
    chain = EmbeddedChain(free_port())
    chain.start(tmp_path_factory.mktemp("chain") / "chain.log")
    yield chain.url
    chain.stop()


@pytest.fixture(scope="session")
def dev_token(chain_rpc_url: str) -> str:
    """An ERC-20 token on that chain, its whole supply on the chain's first account."""
    return deploy_dev_token(chain_rpc_url)


@pytest.fixture
def own_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, which the test may stop and start again: one node, whatever
    the session's Redis is (the settings made during the test say so)."""
    monkeypatch.setenv("MESH_REDIS_CLUSTER", "0")
    redis = EmbeddedRedis(tmp_path / "redis", free_port())
    redis.start()
    yield redis
    redis.stop()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0, what: str = "condition") -> None:
    """Waits until `check()` holds, polling, or fails the test at the deadline."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {within}s")
        await asyncio.sleep(0.05)
