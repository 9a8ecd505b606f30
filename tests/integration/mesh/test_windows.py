"""Window counters against a real Redis: a count's lifetime starts with its first hit, several
counts go in one step, and a Redis that forgot the script (a restart, a flush) is taught again."""

from __future__ import annotations

import asyncio
import uuid

from mesh.redis_pipe import RedisPipe
from mesh.windows import Count, Hit, WindowCounters


def _key() -> str:
    return f"windows-test:{uuid.uuid4().hex}"


async def test_hits_add_up_and_the_lifetime_starts_with_the_first(pipe: RedisPipe) -> None:
    counters, key, other = WindowCounters(pipe), _key(), _key()

    first = await counters.add([Hit(key, 1, 60), Hit(other, 5, 10)])
    second = await counters.add([Hit(key, 2, 3600)])
    (peeked, peeked_other, missing) = await counters.peek([key, other, _key()])

    assert (first, second) == ([1, 5], [3])
    # The second add did not stretch the first one's lifetime.
    assert peeked.count == 3 and 50 < peeked.seconds_left <= 60
    assert peeked_other.count == 5 and 0 < peeked_other.seconds_left <= 10
    assert missing == Count(0, 0.0)


async def test_concurrent_adds_lose_no_hit(pipe: RedisPipe) -> None:
    counters, key = WindowCounters(pipe), _key()

    counts = await asyncio.gather(*(counters.add([Hit(key, 1, 60)]) for _ in range(200)))

    assert sorted(count for (count,) in counts) == list(range(1, 201))


async def test_a_count_given_back_or_cleared(pipe: RedisPipe) -> None:
    counters, key = WindowCounters(pipe), _key()
    await counters.add([Hit(key, 3, 60)])

    await counters.give_back([key])
    given_back = (await counters.peek([key]))[0].count
    await counters.clear(key)

    assert given_back == 2
    assert (await counters.peek([key]))[0] == Count(0, 0.0)


async def test_a_redis_that_forgot_the_script_is_taught_it_again(pipe: RedisPipe) -> None:
    counters, key = WindowCounters(pipe), _key()
    await counters.add([Hit(key, 1, 60)])
    await pipe.execute("SCRIPT", "FLUSH")

    assert await counters.add([Hit(key, 1, 60), Hit(_key(), 1, 60)]) == [2, 1]
