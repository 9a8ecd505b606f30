"""Work a call starts that must end even when the call does not: a saga whose client went away or
whose deadline passed (it finishes, or gives back what it holds, instead of stopping half done),
and work queued to run after the answer went out. Every such task is tracked, so a stopping
service waits for it rather than dropping it (`FollowUps` is a mesh.jobs Worker)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("mesh.followups")
T = TypeVar("T")


class FollowUps:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    def start(self, work: Coroutine[Any, Any, object]) -> None:
        """Runs `work` on its own, after the caller's answer if the caller answers now; a failure
        is logged, since nobody awaits it."""
        self._track(asyncio.ensure_future(work)).add_done_callback(_log_failure)

    async def outlasting(self, work: Callable[[asyncio.Event], Awaitable[T]]) -> T:
        """Runs `work(abandoned)` to its end even if this call is cancelled. The event is set once
        the call is gone, so that the work can give back what it holds instead of going on."""
        abandoned = asyncio.Event()
        task = self._track(asyncio.ensure_future(work(abandoned)))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            abandoned.set()
            task.add_done_callback(_log_failure)
            raise

    def _track(self, task: asyncio.Task[T]) -> asyncio.Task[T]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def settled(self) -> None:
        """Waits until every follow-up started so far has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> None:
        await self._stopping.wait()

    async def stop(self) -> None:
        self._stopping.set()
        await self.settled()


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("follow-up failed", error=type(error).__name__, exc_info=error)
