"""SQL of the `invite` schema, a slice per concern: codes (minting, listing, disabling), holds,
campaigns and referrals.

Contention. A code's uses (and a campaign's capacity) are counters split over up to 32 slot rows
whose capacities add up to the limit (invite_svc.store.slots); a CHECK keeps every slot within
its capacity, so the sum can never pass the limit. A hold takes one use from a random slot with
room, skipping slots another transaction has locked (`FOR UPDATE SKIP LOCKED`): 64 clients on one
hot code work on 32 rows in parallel instead of queueing on one, and nobody reads a version and
retries. No hold ever waits on a lock (so no lock cycle can form): when every slot with room is
busy it pauses a moment and looks again; only when no slot has room is the code exhausted. Uses
return to their counter in a fixed order (campaign before code, slots sorted), so concurrent
returns cannot deadlock either.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from invite_svc.domain import DEFAULT_HOLD_TTL
from invite_svc.sealing import CodeSealer
from invite_svc.store.campaigns import CampaignStore
from invite_svc.store.codes import CodeStore
from invite_svc.store.holds import CodeTermsCache, HoldStore
from invite_svc.store.referrals import ReferralStore
from mesh.db import DriverPool


@dataclass(frozen=True)
class InviteStore:
    codes: CodeStore
    holds: HoldStore
    campaigns: CampaignStore
    referrals: ReferralStore

    @classmethod
    def over(
        cls,
        engine: AsyncEngine,
        driver: DriverPool,
        sealer: CodeSealer,
        hold_ttl: datetime.timedelta = DEFAULT_HOLD_TTL,
    ) -> InviteStore:
        terms = CodeTermsCache(driver)
        return cls(
            CodeStore(engine, driver, sealer, terms),
            HoldStore(engine, driver, sealer, terms, hold_ttl),
            CampaignStore(engine),
            ReferralStore(engine, driver, sealer),
        )
