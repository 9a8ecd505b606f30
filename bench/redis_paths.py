"""What the hand-written Redis pipe (mesh.redis_pipe) buys over redis-py, and mesh.windows over
the `limits` library, on the paths that use them: one run, one Redis, this process as the caller.

Each round measures, back to back, `--concurrency` callers as fast as they can:

- nonce: a signed call's nonce sighting (mesh.nonces' SET NX EX), through the pipe and through
  redis-py's pooled client;
- session: a token's revocation check (mesh.revocations), both ways;
- budget: one request budget counted (mesh.limits over mesh.windows), both ways, and the same
  budget as the `limits` library's fixed window counts it (its redis-py implementation).

A service pays in CPU, so each way prints this process's CPU µs per call beside calls/s, medians
over the rounds, and its ratio to the pipe's way in the same round (CPU: above 1 costs more).

    .venv/bin/python -m bench.redis_paths [--rounds 5] [--seconds 2] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from limits import RateLimitItemPerHour
from limits.aio.storage import RedisStorage
from limits.aio.strategies import FixedWindowRateLimiter

from bench.harness import calls_per_second, median, run_rounds
from mesh.limits import FixedWindowLimit
from mesh.redis import Argument, Commands, KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.revocations import RevokedSessions
from mesh.settings import Settings
from mesh.windows import WindowCounters

NEVER = 10**9
Way = Callable[[], Awaitable[object]]


class PooledCommands:
    """The pipe's two methods over redis-py's pooled client: the same commands, redis-py's way."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis

    async def execute(self, *command: Argument) -> Any:
        return await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]

    async def execute_all(self, commands: Sequence[Sequence[Argument]]) -> list[Any]:
        pipeline = self._redis.pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        return list(await pipeline.execute())


def _nonce(commands: Commands) -> Way:
    async def sighting() -> object:
        return await commands.execute(b"SET", f"bench:nonce:{uuid.uuid4().hex}", b"1", b"NX", b"EX", b"300")

    return sighting


def _session(commands: Commands) -> Way:
    sessions = RevokedSessions(commands, KeySpace("bench"))

    async def check() -> object:
        return await sessions.revoked(str(uuid.uuid4()))

    return check


def _budget(commands: Commands) -> Way:
    budget = FixedWindowLimit(WindowCounters(commands), KeySpace("bench"), "requests", NEVER, 3600)

    async def spend() -> object:
        return await budget.allow("192.0.2.1")

    return spend


def _limits_budget(redis_url: str) -> Way:
    limiter = FixedWindowRateLimiter(RedisStorage("async+" + redis_url, implementation="redispy"))
    item = RateLimitItemPerHour(NEVER)

    async def spend() -> object:
        return await limiter.hit(item, "requests", "192.0.2.1")

    return spend


async def _measured(way: Way, args: argparse.Namespace) -> tuple[float, float]:
    """Calls per second and this process's CPU µs per call."""
    cpu = time.process_time()
    rate = await calls_per_second(way, args.seconds, args.concurrency)
    return rate, (time.process_time() - cpu) / (rate * args.seconds) * 1e6


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    assert settings.redis_url is not None
    redis = create_redis(settings)
    pipe = RedisPipe(redis)
    pooled = PooledCommands(aioredis.Redis.from_url(settings.redis_url, max_connections=args.concurrency))
    ways: dict[str, tuple[Way, Way]] = {
        "nonce": (_nonce(pipe), _nonce(pooled)),
        "session": (_session(pipe), _session(pooled)),
        "budget": (_budget(pipe), _budget(pooled)),
        "budget, limits": (_budget(pipe), _limits_budget(settings.redis_url)),
    }
    results: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in ways}
    for ours, theirs in ways.values():  # warm up: connections, scripts
        await calls_per_second(ours, 0.5, args.concurrency)
        await calls_per_second(theirs, 0.5, args.concurrency)
    for _ in range(args.rounds):
        for name, (ours, theirs) in ways.items():
            results[name].append((*await _measured(ours, args), *await _measured(theirs, args)))
    await pipe.close()
    await redis.aclose()
    _report(results, args.concurrency)


def _report(results: dict[str, list[tuple[float, float, float, float]]], concurrency: int) -> None:
    print(f"Redis paths at {concurrency} callers, medians over {len(next(iter(results.values())))} rounds")
    for name, rounds in results.items():
        other = "limits" if name.endswith("limits") else "redis-py"
        pipe_rate, pipe_cpu = median([r[0] for r in rounds]), median([r[1] for r in rounds])
        other_rate, other_cpu = median([r[2] for r in rounds]), median([r[3] for r in rounds])
        rate_ratio = median([r[2] / r[0] for r in rounds])
        cpu_ratio = median([r[3] / r[1] for r in rounds])
        print(
            f"  {name:<15} pipe {pipe_rate:8.0f}/s {pipe_cpu:6.1f} µs CPU/call | {other:<8} {other_rate:8.0f}/s "
            f"{other_cpu:6.1f} µs CPU/call | {other}/pipe: calls/s x{rate_ratio:.2f}, CPU/call x{cpu_ratio:.2f}"
        )


if __name__ == "__main__":
    run_rounds(__doc__, (5, 2.0, 64), measure)
