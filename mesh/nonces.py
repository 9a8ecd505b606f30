"""The nonce ledger of signed calls: Redis `SET <key> 1 NX EX <ttl>` per nonce, so a nonce is
accepted once across every replica of a service (DESIGN §5).

It sits on the path of every internal call, so it goes through a Redis pipe of its own
(mesh.redis_pipe) that writes at most once per `flush_interval`. grpc.aio hands a server one new
call per event-loop turn, so writing once per turn made every sighting a write, a read and a Redis
wake-up of its own: under load those cost more than the signature check. A busy service now waits
at most `flush_interval` per sighting, and an idle one not at all.

A Redis that is away or silent fails the sighting with a `RedisError`; the signature verifier
turns that into a refusal (fail closed).
"""

from __future__ import annotations

import redis.asyncio as aioredis

from mesh.redis_pipe import RedisPipe


class NonceLedger:
    """Answers True for the first sighting of a key and False for every later one."""

    def __init__(self, redis: aioredis.Redis, ttl: int, timeout: float = 2.0, flush_interval: float = 0.0) -> None:
        self._pipe = RedisPipe(redis, timeout, flush_interval)
        self._ttl = str(ttl).encode()

    async def first_sighting(self, key: str) -> bool:
        return await self._pipe.execute(b"SET", key, b"1", b"NX", b"EX", self._ttl) is not None

    async def close(self) -> None:
        await self._pipe.close()
