"""Split counters: a code's uses, or a campaign's spots, over up to 32 slot rows whose
capacities add up to the limit; a CHECK keeps every slot within its capacity."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Table, and_, bindparam, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from invite_svc.domain import BUSY, Refusal
from invite_svc.models import campaign_slots, code_slots

BUSY_PATIENCE = 3.0
"""Seconds a hold looks again for a slot with room while every such slot is locked."""


class Slots:
    """One split counter table: `code_slots` per code or `campaign_slots` per campaign."""

    def __init__(self, table: Table, owner: Column[uuid.UUID]) -> None:
        with_room = and_(owner == bindparam("owner"), table.c.taken < table.c.capacity)
        free = select(table.c.slot).where(with_room).order_by(func.random()).limit(1)
        self._take = (
            update(table)
            .where(with_room, table.c.slot == free.with_for_update(skip_locked=True).scalar_subquery())
            .values(taken=table.c.taken + 1)
            .returning(table.c.slot)
        )
        self.has_room_query = select(exists().where(with_room))
        self._give_back = (
            update(table)
            .where(owner == bindparam("owner"), table.c.slot == bindparam("slot_number"))
            .values(taken=table.c.taken - bindparam("uses"))
        )

    async def take(self, connection: AsyncConnection, owner: uuid.UUID) -> int | None:
        """One use from a slot with room; None when there is none left.

        Never waits on a lock: when every slot with room is locked by transactions in flight, it
        pauses briefly and looks again. Nobody waiting on a lock means no lock cycle can form.
        """
        deadline = time.monotonic() + BUSY_PATIENCE
        pause = 0.001
        while True:
            slot = (await connection.execute(self._take, {"owner": owner})).scalar()
            if slot is not None:
                return int(slot)
            if not await self.has_room(connection, owner):
                return None
            if time.monotonic() > deadline:
                raise Refusal(BUSY, "this invite code is very busy right now; try again")
            await asyncio.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
            pause = min(pause * 2, 0.02)

    async def has_room(self, connection: AsyncConnection, owner: uuid.UUID) -> bool:
        return bool((await connection.execute(self.has_room_query, {"owner": owner})).scalar())

    async def give_back(self, connection: AsyncConnection, returned: Counter[tuple[uuid.UUID, int]]) -> None:
        """Returns uses per (owner, slot), in one fixed order so that concurrent returns never deadlock."""
        for (owner, slot), uses in sorted(returned.items()):
            await connection.execute(self._give_back, {"owner": owner, "slot_number": slot, "uses": uses})


CODE_USES = Slots(code_slots, code_slots.c.code_id)
CAMPAIGN_SPOTS = Slots(campaign_slots, campaign_slots.c.campaign_id)


async def give_back_uses(connection: AsyncConnection, rows: Sequence[Any]) -> None:
    """Returns the uses of finished holds: campaign spots first, then code uses (the take order)."""
    spots = Counter((r["campaign_id"], r["campaign_slot"]) for r in rows if r["campaign_slot"] is not None)
    uses = Counter((r["code_id"], r["code_slot"]) for r in rows if r["code_slot"] is not None)
    await CAMPAIGN_SPOTS.give_back(connection, spots)
    await CODE_USES.give_back(connection, uses)
