"""Gathered writes and the silence watch, on a real event loop with a transport that records."""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.pipelining import BatchedWrites, SilenceWatch


class Recording(asyncio.WriteTransport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.wrote = asyncio.Event()

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.wrote.set()


async def test_a_write_after_a_quiet_spell_leaves_in_the_same_loop_turn() -> None:
    writes = BatchedWrites(asyncio.get_running_loop(), interval=60.0)
    writes.transport = transport = Recording()

    writes.add(b"a")
    writes.add(b"b")
    await asyncio.sleep(0)

    assert transport.writes == [b"ab"]


async def test_writes_within_the_interval_wait_and_leave_together() -> None:
    loop = asyncio.get_running_loop()
    writes = BatchedWrites(loop, interval=0.05)
    writes.transport = transport = Recording()
    writes.add(b"first")
    await asyncio.sleep(0)
    started = loop.time()

    writes.add(b"second")
    writes.add(b"third")
    await asyncio.sleep(0)
    assert transport.writes == [b"first"]
    transport.wrote.clear()
    await asyncio.wait_for(transport.wrote.wait(), 2.0)

    assert transport.writes == [b"first", b"secondthird"]
    assert loop.time() - started >= 0.04


async def test_without_a_transport_writes_are_dropped() -> None:
    writes = BatchedWrites(asyncio.get_running_loop(), interval=0.0)
    writes.add(b"lost")
    await asyncio.sleep(0)
    writes.transport = transport = Recording()
    writes.add(b"kept")
    await asyncio.sleep(0)

    assert transport.writes == [b"kept"]


async def test_silence_is_reported_only_while_answers_are_awaited() -> None:
    loop = asyncio.get_running_loop()
    awaited = [True]
    silent = asyncio.Event()
    watch = SilenceWatch(loop, 0.05, lambda: awaited[0], silent.set)

    watch.asked()
    await asyncio.wait_for(silent.wait(), 2.0)

    silent.clear()
    awaited[0] = False
    watch.asked()
    await asyncio.sleep(0.1)
    assert not silent.is_set()


async def test_answers_keep_the_watch_quiet() -> None:
    loop = asyncio.get_running_loop()
    silent = asyncio.Event()
    watch = SilenceWatch(loop, 0.1, lambda: True, silent.set)
    watch.asked()
    answering_until = loop.time() + 0.3

    while loop.time() < answering_until:
        watch.answered()
        await asyncio.sleep(0.02)
    assert not silent.is_set()
    await asyncio.wait_for(silent.wait(), 2.0)
    watch.stop()
