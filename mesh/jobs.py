"""Work a service runs beside its RPCs: periodic jobs (expiry sweeps, relays) and long-running
workers (mail senders). Every one must be safe to run in many replicas at once; the runner only
repeats a job and keeps it alive, and asks a worker to finish when the service stops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

log = structlog.get_logger("mesh.jobs")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: float
    """Seconds between the end of one run and the start of the next."""
    work: Callable[[], Awaitable[object]]


async def run_periodically(job: PeriodicJob, stopping: asyncio.Event) -> None:
    """Runs `job` until `stopping` is set. Cancelling works too, but a cancellation can be lost
    in a database or Redis client (Python 3.11's `wait_for` drops one that races a result), and
    the flag still ends the loop then."""
    while not stopping.is_set():
        try:
            await job.work()
        except Exception:  # one failed run must not end the job; the next run tries again
            log.exception("job run failed", job=job.name)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), job.interval)


class Worker(Protocol):
    async def run(self) -> None:
        """Works until `stop()`, then finishes what it has in hand and returns."""
        ...

    async def stop(self) -> None: ...
