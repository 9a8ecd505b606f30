"""auth_svc's periodic work, safe in many replicas at once: pending registrations whose hold
lapsed are deleted (invite_svc returns the use by itself), spent and long-expired tokens go,
delivered outbox rows are purged, and the access-token key ring is read again and rotated when
due."""

from __future__ import annotations

import datetime

import structlog

from auth_svc.store import AuthStore
from auth_svc.store.records import PURGE_BATCH
from mesh.jobs import PeriodicJob
from mesh.outbox import Outbox
from mesh.token_keys import StoredKeyRing

log = structlog.get_logger("auth_svc.jobs")
KEEP_SPENT = datetime.timedelta(days=1)
KEEP_DELIVERED = datetime.timedelta(days=1)


def sweep_job(store: AuthStore, outbox: Outbox, keys: StoredKeyRing, interval: float) -> PeriodicJob:
    async def sweep() -> None:
        while (expired := await store.registrations.expire_pending()) > 0:
            log.info("lapsed registrations removed", count=expired)
            if expired < PURGE_BATCH:
                break
        await store.verification.purge_expired()
        await store.sessions.purge_spent(KEEP_SPENT)
        await store.recovery.purge_spent(KEEP_SPENT)
        await outbox.purge_delivered(KEEP_DELIVERED)
        await keys.refresh()

    return PeriodicJob("auth-sweep", interval, sweep)
