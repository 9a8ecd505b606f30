"""Redis through redis-py asyncio, with one key prefix per service.

Keys that one operation touches together share a hash tag (`{…}`) so they stay on one
Redis Cluster slot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis import exceptions
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from mesh.settings import Settings

Argument = str | bytes | int


class Commands(Protocol):
    """Runs Redis commands: one, or several sent together and answered in their order. The
    services' busiest paths use mesh.redis_pipe's; bench/redis_paths.py weighs it against
    redis-py's pooled client."""

    async def execute(self, *command: Argument) -> Any: ...

    async def execute_all(self, commands: Sequence[Sequence[Argument]]) -> list[Any]: ...


def create_redis(settings: Settings) -> aioredis.Redis:
    """A client of the Redis `MESH_REDIS_URL` names, or of the Redis Cluster it is a node of
    (`MESH_REDIS_CLUSTER`). The cluster's client is typed as the plain one: the mesh sends only
    commands, scripts and same-slot transactions that both speak alike (every operation's keys
    share a hash tag, `KeySpace.tagged`)."""
    if not settings.redis_url:
        raise RuntimeError("MESH_REDIS_URL is not set")
    if settings.redis_cluster:
        cluster = _Cluster.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        return cast(aioredis.Redis, cluster)
    return aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2,
        socket_timeout=2,
        health_check_interval=10,
    )


@contextmanager
def _unreachable_as_connection_error() -> Iterator[None]:
    try:
        yield
    except exceptions.RedisClusterException as error:
        raise exceptions.ConnectionError(f"cannot reach the Redis Cluster: {error}") from None


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        with _unreachable_as_connection_error():
            return await super().execute(raise_on_error, allow_redirections)


class _Cluster(RedisCluster):
    """redis-py's cluster client, whose failures are all `RedisError`s, as a single Redis's are:
    its own exceptions (no node reachable, a slot no node serves) are not, and every fail-closed
    path of the mesh catches `RedisError`."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        with _unreachable_as_connection_error():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise exceptions.RedisClusterException("shard_hint is deprecated in cluster mode")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]


class KeySpace:
    """Builds the keys of one service: `KeySpace("invite").key("hold", id)` → `invite:hold:<id>`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix.rstrip(":")

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def tagged(self, tag: str, *parts: str) -> str:
        """A key on the Cluster slot of `tag`: `invite:{tag}:parts…`."""
        return ":".join((self.prefix, f"{{{tag}}}", *parts))
