"""The double-submit guard's mark (auth_svc.submissions) on a real Redis: short-lived and renewed
while its registration runs, so a process killed mid-way leaves a mark that lapses within
seconds, and a live registration slower than that keeps it."""

from __future__ import annotations

import asyncio
import uuid

from auth_svc.submissions import FirstSubmission
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

KEYS = KeySpace("auth-test")


async def test_a_registration_slower_than_its_marks_life_keeps_the_mark_and_runs_once(pipe: RedisPipe) -> None:
    guard = FirstSubmission(pipe, KEYS, in_flight_ttl=0.3)
    email, runs = f"{uuid.uuid4().hex}@example.com", []
    started, release = asyncio.Event(), asyncio.Event()

    async def slow() -> bytes:
        runs.append(1)
        started.set()
        await release.wait()
        return b"the first answer"

    first = asyncio.create_task(guard.answer(email, b"same", slow))
    await started.wait()
    # Four lives of the mark later, a client sends the same registration again.
    await asyncio.sleep(1.2)
    again = asyncio.create_task(guard.answer(email, b"same", slow))
    await asyncio.sleep(0.1)
    release.set()

    assert await first == await again == b"the first answer"
    assert runs == [1]


async def test_the_mark_lives_no_longer_than_its_in_flight_life(pipe: RedisPipe) -> None:
    """What a process killed mid-registration leaves behind lapses on its own that soon."""
    guard = FirstSubmission(pipe, KEYS)
    email, started = f"{uuid.uuid4().hex}@example.com", asyncio.Event()

    async def never() -> bytes:
        started.set()
        await asyncio.Event().wait()
        return b""

    running = asyncio.create_task(guard.answer(email, b"same", never))
    await started.wait()
    left = await pipe.execute("PTTL", KEYS.tagged(email, "registration"))
    running.cancel()

    assert 0 < int(left) <= 3000
