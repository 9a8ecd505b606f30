"""What a service needs to talk to a helper over one connection, request after request, answers
back in order: writes gathered into batches, and a watch for a peer gone silent.

A service's busiest paths send one small record per call (a Redis command, a signature to
check). grpc.aio starts one call per event-loop turn, so writing each record as it comes made
every call a write, a read and a wake-up of the peer of its own; gathering them costs each call
at most `interval` of waiting, and an idle service none.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable


class BatchedWrites:
    """A write after a quiet spell leaves at once; the ones that follow within `interval` leave
    together in the next write (0: once per event-loop turn)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self._loop = loop
        self._interval = interval
        self._chunks: list[bytes] = []
        self._last_write = -math.inf
        self.transport: asyncio.WriteTransport | None = None
        """Where gathered chunks go; while None, they are dropped."""

    def add(self, chunk: bytes) -> None:
        if not self._chunks:
            due = self._last_write + self._interval
            if due <= self._loop.time():
                self._loop.call_soon(self._write)
            else:
                self._loop.call_at(due, self._write)
        self._chunks.append(chunk)

    def _write(self) -> None:
        self._last_write = self._loop.time()
        if self.transport is not None:
            self.transport.write(b"".join(self._chunks))
        self._chunks.clear()


class SilenceWatch:
    """Calls `on_silence` once answers are awaited (`waiting()`) and none came for `timeout`
    seconds: a peer that hangs must not hang its callers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        waiting: Callable[[], bool],
        on_silence: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._waiting = waiting
        self._on_silence = on_silence
        self._last_answer = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def asked(self) -> None:
        """Call before a request goes out while no answer was awaited."""
        self._last_answer = self._loop.time()
        if self._timer is None:
            self._timer = self._loop.call_later(self._timeout, self._check)

    def answered(self) -> None:
        self._last_answer = self._loop.time()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        if not self._waiting():
            return
        silent_until = self._last_answer + self._timeout
        if self._loop.time() >= silent_until:
            self._on_silence()
        else:
            self._timer = self._loop.call_at(silent_until, self._check)
