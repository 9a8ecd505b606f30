"""invite_svc's periodic work: expire lapsed holds (returning their uses) and past-due codes, drop
delivered outbox rows, keep the waitlist's places index caught up, and top up the campaigns that
keep waitlist invitations out."""

from __future__ import annotations

import datetime

import structlog

from invite_svc.store.holds import EXPIRY_BATCH, HoldStore
from invite_svc.store.places import Places
from invite_svc.store.waitlist import WaitlistStore
from invite_svc.waitlist import Waitlist
from mesh.jobs import PeriodicJob
from mesh.outbox import Outbox

log = structlog.get_logger("invite_svc.jobs")
KEEP_DELIVERED = datetime.timedelta(days=1)


def expiry_job(holds: HoldStore, outbox: Outbox, interval: float) -> PeriodicJob:
    async def expire() -> None:
        await outbox.purge_delivered(KEEP_DELIVERED)
        # Full batches mean more are due: keep going before sleeping.
        while (expired := await holds.expire_due()) > 0:
            log.info("holds expired", count=expired)
            if expired < EXPIRY_BATCH:
                break

    return PeriodicJob("invite-expiry", interval, expire)


def places_job(waitlist: WaitlistStore, places: Places, interval: float) -> PeriodicJob:
    """Catches the places index in Redis up with PostgreSQL: writes again the places that changed
    since the last catch-up (as they are now), or rebuilds the index when it has never been
    caught up. The mark of the last catch-up lives in the same Redis as the index, so a Redis
    restored from an older snapshot replays from that snapshot's mark and misses nothing. Safe
    in every replica: every write is of the truth as read, and one replica rebuilds at a time."""

    async def catch_up() -> None:
        moment = await waitlist.now()
        since = await places.synced_until()
        if since is None:
            if await places.rebuild(waitlist.everyone_waiting(), waitlist.changed_since, moment):
                log.info("waitlist places index rebuilt", waiting=await places.size())
            return
        async for waiting, gone in waitlist.changed_since(since):
            await places.apply(waiting, gone)
        await places.mark_synced(moment)

    return PeriodicJob("waitlist-places", interval, catch_up)


def top_up_job(waitlist: Waitlist, interval: float) -> PeriodicJob:
    """Invites the next people waiting for each open campaign with a waitlist top-up, as many as
    bring its invitations out up to it. Safe in every replica: each top-up counts and invites
    under the lock every release takes."""

    async def top_up() -> None:
        for campaign_id, invited in await waitlist.top_up():
            log.info("waitlist topped up", campaign_id=str(campaign_id), invited=invited)

    return PeriodicJob("waitlist-top-up", interval, top_up)
