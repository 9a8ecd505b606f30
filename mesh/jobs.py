"""Periodic work a service runs beside its RPCs (expiry sweeps, relays). Every job must be safe
to run in many replicas at once; the runner only repeats it and keeps it alive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

log = structlog.get_logger("mesh.jobs")


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    interval: float
    """Seconds between the end of one run and the start of the next."""
    work: Callable[[], Awaitable[object]]


async def run_periodically(job: PeriodicJob) -> None:
    while True:
        try:
            await job.work()
        except Exception:  # one failed run must not end the job; the next run tries again
            log.exception("job run failed", job=job.name)
        await asyncio.sleep(job.interval)
