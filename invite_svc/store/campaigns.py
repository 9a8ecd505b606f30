"""Campaigns: made once per name (and once per request id), listed newest first; what an admin may
change of one is its waitlist top-up."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import func, insert, select, text, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from invite_svc.domain import CAMPAIGN_NAME_TAKEN, CAMPAIGN_NOT_FOUND, Refusal, Window, slot_capacities
from invite_svc.models import campaign_slots, campaigns
from invite_svc.store.records import Campaign


class CampaignStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")

    async def create_campaign(
        self,
        display_name: str,
        capacity: int | None = None,
        allowed_email_domains: frozenset[str] = frozenset(),
        invite_quota: int = 0,
        window: Window | None = None,
        request_id: str | None = None,
        waitlist_top_up: int = 0,
    ) -> Campaign:
        """A new campaign; the same `request_id` again answers the first one."""
        campaign_id, window = uuid.uuid4(), window or Window()
        async with self._engine.begin() as connection:
            if request_id:
                await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": request_id})
                earlier = (await connection.execute(_CAMPAIGNS.where(campaigns.c.request_id == request_id))).first()
                if earlier is not None:
                    return _campaign(earlier._mapping)
            named = (await connection.execute(_CAMPAIGNS.where(campaigns.c.display_name == display_name))).first()
            if named is not None:
                raise Refusal(CAMPAIGN_NAME_TAKEN, "a campaign with this name exists")
            await connection.execute(
                insert(campaigns).values(
                    id=campaign_id,
                    display_name=display_name,
                    capacity=capacity,
                    allowed_email_domains=sorted(allowed_email_domains),
                    invite_quota=invite_quota,
                    start_time=window.start,
                    end_time=window.end,
                    request_id=request_id,
                    waitlist_top_up=waitlist_top_up,
                )
            )
            if capacity:
                await connection.execute(
                    insert(campaign_slots),
                    [
                        {"campaign_id": campaign_id, "slot": slot, "capacity": spots}
                        for slot, spots in enumerate(slot_capacities(capacity))
                    ],
                )
            return _campaign((await connection.execute(_CAMPAIGNS.where(campaigns.c.id == campaign_id))).one()._mapping)

    async def update_waitlist_top_up(self, campaign_id: uuid.UUID, waitlist_top_up: int) -> Campaign:
        async with self._engine.begin() as connection:
            updated = await connection.execute(
                update(campaigns).where(campaigns.c.id == campaign_id).values(waitlist_top_up=waitlist_top_up)
            )
            if not updated.rowcount:
                raise Refusal(CAMPAIGN_NOT_FOUND, "no such campaign")
            return _campaign((await connection.execute(_CAMPAIGNS.where(campaigns.c.id == campaign_id))).one()._mapping)

    async def campaigns(self, limit: int, after: tuple[datetime.datetime, uuid.UUID] | None) -> list[Campaign]:
        """Campaigns, newest first (the one an admin just made is on the first page),
        keyset-paginated."""
        query = _CAMPAIGNS.order_by(campaigns.c.create_time.desc(), campaigns.c.id.desc()).limit(limit)
        if after is not None:
            query = query.where(tuple_(campaigns.c.create_time, campaigns.c.id) < tuple_(*after))
        async with self._autocommit.connect() as connection:
            return [_campaign(row._mapping) for row in await connection.execute(query)]


SPOTS_TAKEN = (
    select(func.coalesce(func.sum(campaign_slots.c.taken), 0))
    .where(campaign_slots.c.campaign_id == campaigns.c.id)
    .scalar_subquery()
)
"""A campaign's spots taken, in a statement that selects from `campaigns`."""
_CAMPAIGNS = select(campaigns, SPOTS_TAKEN.label("taken"))


def _campaign(row: Any) -> Campaign:
    return Campaign(
        id=row["id"],
        display_name=row["display_name"],
        capacity=row["capacity"],
        taken=int(row["taken"]),
        allowed_email_domains=frozenset(row["allowed_email_domains"] or ()),
        invite_quota=row["invite_quota"],
        window=Window(row["start_time"], row["end_time"]),
        create_time=row["create_time"],
        waitlist_top_up=row["waitlist_top_up"],
    )
