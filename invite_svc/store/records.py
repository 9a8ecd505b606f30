"""What the invite schema's slices answer, and the reads of a hold they share."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from invite_svc.domain import HOLD_NOT_FOUND, CodeState, HoldState, Refusal, Window
from invite_svc.models import campaigns, codes, holds


@dataclass(frozen=True)
class Owner:
    user_id: uuid.UUID | None = None
    admin_id: uuid.UUID | None = None


@dataclass(frozen=True)
class MintedCode:
    id: uuid.UUID
    code: str
    max_uses: int | None
    owner: Owner
    campaign_id: uuid.UUID | None
    expire_time: datetime.datetime | None


@dataclass(frozen=True)
class HoldRecord:
    id: uuid.UUID
    code_id: uuid.UUID
    state: HoldState
    expire_time: datetime.datetime
    referrer: Owner
    campaign_id: uuid.UUID | None
    invite_quota: int


@dataclass(frozen=True)
class ReferralNode:
    user_id: uuid.UUID
    code_id: uuid.UUID
    confirm_time: datetime.datetime
    children: list[ReferralNode]


@dataclass(frozen=True)
class Campaign:
    id: uuid.UUID
    display_name: str
    capacity: int | None
    taken: int
    allowed_email_domains: frozenset[str]
    invite_quota: int
    window: Window
    create_time: datetime.datetime
    waitlist_top_up: int


@dataclass(frozen=True)
class Redemption:
    hold: HoldRecord
    user_id: uuid.UUID | None
    create_time: datetime.datetime


@dataclass(frozen=True)
class OwnedCode:
    code: MintedCode
    state: CodeState
    confirmed_uses: int
    held_uses: int
    create_time: datetime.datetime


def hold_with_terms() -> Any:
    """A hold with what its answer tells of its code: who invited, the campaign's quota."""
    return select(
        holds.c.id,
        holds.c.code_id,
        holds.c.state,
        holds.c.expire_time,
        holds.c.campaign_id,
        codes.c.owner_user_id,
        codes.c.owner_admin_id,
        func.coalesce(campaigns.c.invite_quota, 0).label("invite_quota"),
    ).select_from(
        holds.join(codes, holds.c.code_id == codes.c.id).outerjoin(campaigns, holds.c.campaign_id == campaigns.c.id)
    )


def hold_record(row: Any) -> HoldRecord:
    return HoldRecord(
        id=row["id"],
        code_id=row["code_id"],
        state=HoldState(row["state"]),
        expire_time=row["expire_time"],
        referrer=Owner(row["owner_user_id"], row["owner_admin_id"]),
        campaign_id=row["campaign_id"],
        invite_quota=int(row["invite_quota"]),
    )


async def hold_by_id(connection: AsyncConnection, hold_id: uuid.UUID) -> HoldRecord:
    row = (await connection.execute(hold_with_terms().where(holds.c.id == hold_id))).first()
    if row is None:
        raise Refusal(HOLD_NOT_FOUND, "no such hold")
    return hold_record(row._mapping)


def constraint(error: IntegrityError) -> str:
    """The name of the constraint a write broke."""
    cause = getattr(error.orig, "__cause__", None)
    return str(getattr(cause, "constraint_name", "") or "")
