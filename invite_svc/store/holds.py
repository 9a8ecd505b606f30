"""Holds: one use of a code held for a person while they register, then confirmed, released,
or expired (its use returns to the code).

A person may hold several codes at once (each pending registration holds its own) but one code
only once: holding it again renews the live hold instead of taking a second use. One live hold
per person and code, and one confirmed use per person, are partial unique indexes.

Speed. A person's first hold on a code outside a campaign is one autocommit statement (take a use
and insert the hold) after a read of the code's terms, cached for a moment; both run straight on
asyncpg (mesh.db's driver path), which halves the event-loop CPU of a hold. Holds that need a
transaction (a campaign, a renewal) take campaign spots before code uses: one lock order.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import time
import uuid
from typing import Any

import asyncpg
from sqlalchemy import Interval, bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invite_svc.domain import (
    ALREADY_REDEEMED,
    BUSY,
    CAMPAIGN_FULL,
    DEFAULT_HOLD_TTL,
    EXHAUSTED,
    HOLD_EXPIRED,
    HOLD_RELEASED,
    NOT_FOUND,
    CodeState,
    CodeTerms,
    HoldState,
    Refusal,
    Window,
    refuse_hold,
)
from invite_svc.models import campaigns, codes, holds
from invite_svc.sealing import CodeSealer
from invite_svc.store.records import HoldRecord, Owner, constraint, hold_by_id, hold_record, hold_with_terms
from invite_svc.store.slots import BUSY_PATIENCE, CAMPAIGN_SPOTS, CODE_USES, give_back_uses
from mesh.db import DriverPool, DriverStatement
from mesh.emails import email_domain

_ATTEMPTS = 4
EXPIRY_BATCH = 500
CONTEXT_TTL = 2.0
CONTEXT_CACHE_SIZE = 10_000


class CodeTermsCache:
    """A code's terms, cached for CONTEXT_TTL: a hot code is read once, not once per hold.
    Changes to a code (disable, expiry) reach holds within that time."""

    def __init__(self, driver: DriverPool) -> None:
        self._driver = driver
        self._terms: dict[bytes, tuple[float, Any]] = {}

    async def terms(self, lookup: bytes) -> Any:
        now = time.monotonic()
        cached = self._terms.get(lookup)
        if cached is not None and now - cached[0] < CONTEXT_TTL:
            return cached[1]
        async with self._driver.connection() as connection:
            row = await _CODE_TERMS.fetchrow(connection, lookup=lookup)
        if row is None:
            raise Refusal(NOT_FOUND, "no such invite code")
        if len(self._terms) >= CONTEXT_CACHE_SIZE:
            self._terms.pop(next(iter(self._terms)))
        self._terms[lookup] = (now, row)
        return row

    def forget(self, lookup: bytes) -> None:
        self._terms.pop(lookup, None)


class HoldStore:
    def __init__(
        self,
        engine: AsyncEngine,
        driver: DriverPool,
        sealer: CodeSealer,
        terms: CodeTermsCache,
        hold_ttl: datetime.timedelta = DEFAULT_HOLD_TTL,
    ) -> None:
        self._engine = engine
        self._driver = driver
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sealer = sealer
        self._terms = terms
        self._hold_ttl = hold_ttl

    async def check(self, code: str, now: datetime.datetime) -> None:
        """Raises the Refusal a hold of `code` would meet right now (email rules aside)."""
        async with self._driver.connection() as connection:
            row = await _CODE_TERMS.fetchrow(connection, lookup=self._sealer.lookup(code))
            if row is None:
                raise Refusal(NOT_FOUND, "no such invite code")
            refuse_hold(_terms(row, ignore_domains=True), "", now)
            if row["max_uses"] and not await _CODE_HAS_ROOM.fetchval(connection, owner=row["id"]):
                raise Refusal(EXHAUSTED, "this invite code has no uses left")

    async def hold(self, code: str, canonical_email: str, request_id: str) -> HoldRecord:
        """One use of `code` held for the person; their own live hold of the same code is renewed
        and answered instead. Whether the person has used a code already is not asked here: a hold
        must not tell (ConfirmHold refuses a second use)."""
        lookup = self._sealer.lookup(code)
        try:
            held = await self._hold_alone(lookup, canonical_email, request_id)
        except asyncpg.UniqueViolationError as error:
            if error.constraint_name == "holds_request_id_key":
                return await self._hold_by_request(request_id)
            if error.constraint_name != _ONE_LIVE_PER_EMAIL_AND_CODE:
                raise
            held = None  # the person holds this code already: the transaction renews that hold
        if held is not None:
            return held
        for _ in range(_ATTEMPTS):
            try:
                return await self._hold_in_transaction(lookup, canonical_email, request_id)
            except IntegrityError as error:
                if constraint(error) == "holds_request_id_key":
                    return await self._hold_by_request(request_id)
                if constraint(error) != _ONE_LIVE_PER_EMAIL_AND_CODE:
                    raise
                # The same person's hold of this code committed meanwhile: renew that one.
        raise Refusal(BUSY, "this invite code is very busy right now; try again")

    async def confirm(self, hold_id: uuid.UUID, user_id: uuid.UUID | None = None) -> HoldRecord:
        """The hold becomes a confirmed use of `user_id`; confirming twice answers the same."""
        async with self._engine.begin() as connection:
            try:
                confirmed = await connection.execute(
                    update(holds)
                    .where(holds.c.id == hold_id, holds.c.state == HoldState.HELD, holds.c.expire_time > func.now())
                    .values(state=HoldState.CONFIRMED, finish_time=func.now(), user_id=user_id)
                    .returning(holds.c.id)
                )
            except IntegrityError as error:
                if constraint(error) != "holds_one_use_per_email":
                    raise
                raise Refusal(ALREADY_REDEEMED, "this email has already redeemed an invite") from None
            if confirmed.first() is None:
                current = await hold_by_id(connection, hold_id)
                if current.state is HoldState.RELEASED:
                    raise Refusal(HOLD_RELEASED, "this hold was released")
                if current.state is not HoldState.CONFIRMED:
                    raise Refusal(HOLD_EXPIRED, "this hold has expired")
                return current
            return await hold_by_id(connection, hold_id)

    async def release(self, hold_id: uuid.UUID) -> HoldRecord:
        """The held use goes back to its code; releasing again, or a finished hold, changes nothing."""
        async with self._engine.begin() as connection:
            released = await connection.execute(
                update(holds)
                .where(holds.c.id == hold_id, holds.c.state == HoldState.HELD)
                .values(state=HoldState.RELEASED, finish_time=func.now())
                .returning(holds.c.code_id, holds.c.code_slot, holds.c.campaign_id, holds.c.campaign_slot)
            )
            await give_back_uses(connection, [row._mapping for row in released])
            return await hold_by_id(connection, hold_id)

    async def expire_due(self, batch: int = EXPIRY_BATCH) -> int:
        """Expires holds past their time to live and returns their uses, and marks codes past their
        end; safe in many replicas."""
        async with self._engine.begin() as connection:
            due = (
                select(holds.c.id)
                .where(holds.c.state == HoldState.HELD, holds.c.expire_time <= func.now())
                .order_by(holds.c.expire_time)
                .limit(batch)
                .with_for_update(skip_locked=True)
                .cte("due")
            )
            expired = await connection.execute(
                update(holds)
                .where(holds.c.id == due.c.id)
                .values(state=HoldState.EXPIRED, finish_time=func.now())
                .returning(holds.c.code_id, holds.c.code_slot, holds.c.campaign_id, holds.c.campaign_slot)
            )
            rows = [row._mapping for row in expired]
            await give_back_uses(connection, rows)
            await connection.execute(
                update(codes)
                .where(codes.c.state == CodeState.ACTIVE, codes.c.expire_time <= func.now())
                .values(state=CodeState.EXPIRED)
            )
            return len(rows)

    async def _hold_alone(self, lookup: bytes, canonical_email: str, request_id: str) -> HoldRecord | None:
        """The common hold, a person's first of the code, on a code outside any campaign: one
        atomic statement with no transaction around it. Answers None when the hold needs the
        transaction (a campaign, no use left); a unique violation (same request, or the person
        holds the code) is raised for hold() to read."""
        context = await self._terms.terms(lookup)
        refuse_hold(_terms(context), email_domain(canonical_email), datetime.datetime.now(datetime.UTC))
        if context["campaign_capacity"]:
            return None
        values = {
            "id": uuid.uuid4(),
            "code_id": context["id"],
            "canonical_email": canonical_email,
            "request_id": request_id,
            "ttl": self._hold_ttl,
        }
        statement = _TAKE_USE_AND_HOLD if context["max_uses"] else _HOLD_UNLIMITED
        deadline, pause = time.monotonic() + BUSY_PATIENCE, 0.001
        async with self._driver.connection() as connection:
            while (row := await statement.fetchrow(connection, **values)) is None:
                if not await _CODE_HAS_ROOM.fetchval(connection, owner=context["id"]):
                    return None  # exhausted, unless the person's own live hold has the last use
                if time.monotonic() > deadline:
                    raise Refusal(BUSY, "this invite code is very busy right now; try again")
                await asyncio.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
                pause = min(pause * 2, 0.02)
        return _held(context, values["id"], row["expire_time"])

    async def _hold_in_transaction(self, lookup: bytes, canonical_email: str, request_id: str) -> HoldRecord:
        async with self._engine.begin() as connection:
            context = await _decide(connection, lookup, canonical_email, request_id)
            if isinstance(context, HoldRecord):
                return context
            # First, before any slot is locked: the renewal may wait on the expiry sweep's lock of
            # the hold, and the sweep may wait on slots, so a slot held here could close a cycle.
            renewed = (
                await connection.execute(
                    _RENEW_LIVE_HOLD, {"email": canonical_email, "held_code_id": context["id"], "ttl": self._hold_ttl}
                )
            ).first()
            if renewed is not None:
                return _held(context, renewed.id, renewed.expire_time)
            # Campaign before code, always: one lock order keeps concurrent holds from deadlocking.
            campaign_slot = None
            if context["campaign_capacity"]:
                campaign_slot = await CAMPAIGN_SPOTS.take(connection, context["campaign_id"])
                if campaign_slot is None:
                    raise Refusal(CAMPAIGN_FULL, "this invite campaign is full")
            code_slot = None
            if context["max_uses"]:
                code_slot = await CODE_USES.take(connection, context["id"])
                if code_slot is None:
                    raise Refusal(EXHAUSTED, "this invite code has no uses left")
            hold = _held(context, uuid.uuid4(), context["now"] + self._hold_ttl)
            await connection.execute(
                insert(holds),
                {
                    "id": hold.id,
                    "code_id": hold.code_id,
                    "code_slot": code_slot,
                    "campaign_id": hold.campaign_id,
                    "campaign_slot": campaign_slot,
                    "canonical_email": canonical_email,
                    "state": HoldState.HELD,
                    "request_id": request_id,
                    "expire_time": hold.expire_time,
                },
            )
            return hold

    async def _hold_by_request(self, request_id: str) -> HoldRecord:
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(hold_with_terms().where(holds.c.request_id == request_id))).one()
            return hold_record(row._mapping)


async def _decide(
    connection: AsyncConnection, lookup: bytes, canonical_email: str, request_id: str
) -> Any | HoldRecord:
    """The hold's context once the rules allow it, or the hold an earlier same request made."""
    found = await connection.execute(
        _HOLD_CONTEXT, {"lookup": lookup, "email": canonical_email, "request_id": request_id}
    )
    row = found.first()
    if row is None:
        raise Refusal(NOT_FOUND, "no such invite code")
    context = row._mapping
    if context["earlier"] is not None:
        return await hold_by_id(connection, context["earlier"])
    refuse_hold(_terms(context), email_domain(canonical_email), context["now"])
    return context


def _terms(row: Any, ignore_domains: bool = False) -> CodeTerms:
    return CodeTerms(
        state=CodeState(row["state"]),
        window=Window(row["start_time"], row["expire_time"]),
        campaign_window=Window(row["campaign_start"], row["campaign_end"]) if row["campaign_id"] else None,
        allowed_email_domains=frozenset() if ignore_domains else frozenset(row["allowed_email_domains"] or ()),
    )


def _held(context: Any, hold_id: uuid.UUID, expire_time: datetime.datetime) -> HoldRecord:
    """The live hold just taken on the code whose terms `context` holds."""
    return HoldRecord(
        id=hold_id,
        code_id=context["id"],
        state=HoldState.HELD,
        expire_time=expire_time,
        referrer=Owner(context["owner_user_id"], context["owner_admin_id"]),
        campaign_id=context["campaign_id"],
        invite_quota=int(context["invite_quota"]),
    )


# A code's own terms, the same for every hold of it.
_CODE_CONTEXT = (
    select(
        codes.c.id,
        codes.c.state,
        codes.c.max_uses,
        codes.c.start_time,
        codes.c.expire_time,
        codes.c.campaign_id,
        codes.c.owner_user_id,
        codes.c.owner_admin_id,
        campaigns.c.capacity.label("campaign_capacity"),
        campaigns.c.start_time.label("campaign_start"),
        campaigns.c.end_time.label("campaign_end"),
        campaigns.c.allowed_email_domains,
        func.coalesce(campaigns.c.invite_quota, 0).label("invite_quota"),
    )
    .select_from(codes.outerjoin(campaigns, codes.c.campaign_id == campaigns.c.id))
    .where(codes.c.lookup == bindparam("lookup"))
)
# Everything a hold in a transaction needs to decide, in one round trip: the code's terms and
# whether this request was made before.
_HOLD_CONTEXT = _CODE_CONTEXT.add_columns(
    func.now().label("now"),
    select(holds.c.id).where(holds.c.request_id == bindparam("request_id")).scalar_subquery().label("earlier"),
)
_ONE_LIVE_PER_EMAIL_AND_CODE = "holds_one_live_per_email_and_code"
_RENEW_LIVE_HOLD = (
    update(holds)
    .where(
        holds.c.canonical_email == bindparam("email"),
        holds.c.code_id == bindparam("held_code_id"),
        holds.c.state == HoldState.HELD,
    )
    .values(expire_time=func.now() + bindparam("ttl", type_=Interval))
    .returning(holds.c.id, holds.c.expire_time)
)
# One use taken and the hold written in one statement: both happen, or (no slot free) neither.
# The hot path runs straight on asyncpg (mesh.db): a code's terms, and taking a use with the hold.
_CODE_TERMS = DriverStatement(_CODE_CONTEXT)
_CODE_HAS_ROOM = DriverStatement(CODE_USES.has_room_query)
_TAKE_USE_AND_HOLD = DriverStatement(
    text(
        """
    WITH use AS (
        UPDATE invite.code_slots SET taken = taken + 1
        WHERE code_id = :code_id AND taken < capacity AND slot = (
            SELECT slot FROM invite.code_slots WHERE code_id = :code_id AND taken < capacity
            ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING slot)
    INSERT INTO invite.holds (id, code_id, code_slot, canonical_email, state, request_id, expire_time)
    SELECT :id, :code_id, use.slot, :canonical_email, 1, :request_id, now() + :ttl FROM use
    RETURNING expire_time
    """
    )
)
_HOLD_UNLIMITED = DriverStatement(
    text(
        """
    INSERT INTO invite.holds (id, code_id, canonical_email, state, request_id, expire_time)
    VALUES (:id, :code_id, :canonical_email, 1, :request_id, now() + :ttl)
    RETURNING expire_time
    """
    )
)
