"""invite_svc's periodic work: expire lapsed holds (returning their uses) and past-due codes."""

from __future__ import annotations

import structlog

from invite_svc.store.holds import EXPIRY_BATCH, HoldStore
from mesh.jobs import PeriodicJob

log = structlog.get_logger("invite_svc.jobs")


def expiry_job(holds: HoldStore, interval: float) -> PeriodicJob:
    async def expire() -> None:
        # Full batches mean more are due: keep going before sleeping.
        while (expired := await holds.expire_due()) > 0:
            log.info("holds expired", count=expired)
            if expired < EXPIRY_BATCH:
                break

    return PeriodicJob("invite-expiry", interval, expire)
