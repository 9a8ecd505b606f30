"""SQL of the `invite` schema.

Contention. A code's uses (and a campaign's capacity) are counters split over up to 32 slot rows
whose capacities add up to the limit; a CHECK keeps every slot within its capacity, so the sum
can never pass the limit. A hold takes one use from a random slot with room, skipping slots
another transaction has locked (`FOR UPDATE SKIP LOCKED`): 64 clients on one hot code work on 32
rows in parallel instead of queueing on one, and nobody reads a version and retries. No hold ever
waits on a lock (so no lock cycle can form): when every slot with room is busy it pauses a
moment and looks again; only when no slot has room is the code exhausted. A person may hold
several codes at once (each pending registration holds its own) but one code only once: holding
it again renews the live hold instead of taking a second use. One live hold per person and code,
and one confirmed use per person, are partial unique indexes. Uses return to their counter in a
fixed order (campaign before code, slots sorted), so concurrent returns cannot deadlock either.

Speed. A person's first hold on a code outside a campaign is one autocommit statement (take a use
and insert the hold) after a read of the code's terms, cached for a moment; both run straight on
asyncpg (mesh.db's driver path), which halves the event-loop CPU of a hold. Everything else goes
through the SQLAlchemy engine.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import (
    Column,
    Interval,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invite_svc import codes as code_format
from invite_svc.domain import (
    ALREADY_REDEEMED,
    BUSY,
    CAMPAIGN_FULL,
    CAMPAIGN_NAME_TAKEN,
    DEFAULT_HOLD_TTL,
    EXHAUSTED,
    HOLD_EXPIRED,
    HOLD_NOT_FOUND,
    HOLD_RELEASED,
    NOT_FOUND,
    CodeState,
    CodeTerms,
    HoldState,
    Refusal,
    Window,
    refuse_hold,
    slot_capacities,
)
from invite_svc.models import campaign_slots, campaigns, code_slots, codes, holds
from invite_svc.sealing import CodeSealer
from mesh.db import DriverPool, DriverStatement
from mesh.emails import email_domain

_ATTEMPTS = 4
EXPIRY_BATCH = 500
CONTEXT_TTL = 2.0
CONTEXT_CACHE_SIZE = 10_000
MAX_REDEMPTIONS = 1000
_BUSY_PATIENCE = 3.0


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


class _Slots:
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
        deadline = time.monotonic() + _BUSY_PATIENCE
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


CODE_USES = _Slots(code_slots, code_slots.c.code_id)
CAMPAIGN_SPOTS = _Slots(campaign_slots, campaign_slots.c.campaign_id)


class InviteStore:
    def __init__(
        self,
        engine: AsyncEngine,
        driver: DriverPool,
        sealer: CodeSealer,
        hold_ttl: datetime.timedelta = DEFAULT_HOLD_TTL,
    ) -> None:
        self._engine = engine
        self._driver = driver
        # Reads and single-statement writes need no BEGIN/ROLLBACK around them.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sealer = sealer
        self._hold_ttl = hold_ttl
        self._contexts: dict[bytes, tuple[float, Any]] = {}

    async def mint(
        self,
        count: int,
        max_uses: int | None,
        owner: Owner,
        campaign_id: uuid.UUID | None = None,
        expire_time: datetime.datetime | None = None,
        request_id: str | None = None,
        length: int = code_format.DEFAULT_LENGTH,
    ) -> list[MintedCode]:
        """`count` fresh codes; the same `request_id` again answers the same codes."""
        async with self._engine.begin() as connection:
            if request_id:
                await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:id))"), {"id": request_id})
                earlier = await self._minted_by(connection, request_id)
                if earlier:
                    return earlier
            minted: list[MintedCode] = []
            while len(minted) < count:
                code_id, code = uuid.uuid4(), code_format.generate(length)
                row = {
                    "id": code_id,
                    "lookup": self._sealer.lookup(code),
                    "sealed": self._sealer.seal(code_id, code),
                    "state": CodeState.ACTIVE,
                    "max_uses": max_uses,
                    "owner_user_id": owner.user_id,
                    "owner_admin_id": owner.admin_id,
                    "campaign_id": campaign_id,
                    "expire_time": expire_time,
                    "mint_request_id": request_id,
                }
                # A collision (40 random bits) is retried with a new code, not raised.
                statement = upsert(codes).values(row).on_conflict_do_nothing(index_elements=["lookup"])
                inserted = await connection.execute(statement.returning(codes.c.id))
                if inserted.scalar() is None:
                    continue
                if max_uses:
                    await connection.execute(
                        insert(code_slots),
                        [
                            {"code_id": code_id, "slot": slot, "capacity": capacity}
                            for slot, capacity in enumerate(slot_capacities(max_uses))
                        ],
                    )
                minted.append(MintedCode(code_id, code, max_uses, owner, campaign_id, expire_time))
            return minted

    async def _minted_by(self, connection: AsyncConnection, request_id: str) -> list[MintedCode]:
        rows = await connection.execute(
            select(codes).where(codes.c.mint_request_id == request_id).order_by(codes.c.create_time, codes.c.id)
        )
        return [self._minted(row._mapping) for row in rows]

    def _minted(self, row: Any) -> MintedCode:
        return MintedCode(
            id=row["id"],
            code=self._sealer.unseal(row["id"], row["sealed"]),
            max_uses=row["max_uses"],
            owner=Owner(row["owner_user_id"], row["owner_admin_id"]),
            campaign_id=row["campaign_id"],
            expire_time=row["expire_time"],
        )

    async def create_campaign(
        self,
        display_name: str,
        capacity: int | None = None,
        allowed_email_domains: frozenset[str] = frozenset(),
        invite_quota: int = 0,
        window: Window | None = None,
        request_id: str | None = None,
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

    async def campaigns(self, limit: int, after: tuple[datetime.datetime, uuid.UUID] | None) -> list[Campaign]:
        """Campaigns, oldest first, keyset-paginated."""
        query = _CAMPAIGNS.order_by(campaigns.c.create_time, campaigns.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(campaigns.c.create_time, campaigns.c.id) > tuple_(*after))
        async with self._autocommit.connect() as connection:
            return [_campaign(row._mapping) for row in await connection.execute(query)]

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
                if _constraint(error) == "holds_request_id_key":
                    return await self._hold_by_request(request_id)
                if _constraint(error) != _ONE_LIVE_PER_EMAIL_AND_CODE:
                    raise
                # The same person's hold of this code committed meanwhile: renew that one.
        raise Refusal(BUSY, "this invite code is very busy right now; try again")

    async def _code_terms(self, lookup: bytes) -> Any:
        """A code's terms, cached for CONTEXT_TTL: a hot code is read once, not once per hold.
        Changes to a code (disable, expiry) reach holds within that time."""
        now = time.monotonic()
        cached = self._contexts.get(lookup)
        if cached is not None and now - cached[0] < CONTEXT_TTL:
            return cached[1]
        async with self._driver.connection() as connection:
            row = await _CODE_TERMS.fetchrow(connection, lookup=lookup)
        if row is None:
            raise Refusal(NOT_FOUND, "no such invite code")
        if len(self._contexts) >= CONTEXT_CACHE_SIZE:
            self._contexts.pop(next(iter(self._contexts)))
        self._contexts[lookup] = (now, row)
        return row

    async def _hold_alone(self, lookup: bytes, canonical_email: str, request_id: str) -> HoldRecord | None:
        """The common hold, a person's first of the code, on a code outside any campaign: one
        atomic statement with no transaction around it. Answers None when the hold needs the
        transaction (a campaign, no use left); a unique violation (same request, or the person
        holds the code) is raised for hold() to read."""
        context = await self._code_terms(lookup)
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
        deadline, pause = time.monotonic() + _BUSY_PATIENCE, 0.001
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
                _INSERT_HOLD,
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
            row = (await connection.execute(_hold_with_terms().where(holds.c.request_id == request_id))).one()
            return _hold(row._mapping)

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
                if _constraint(error) != "holds_one_use_per_email":
                    raise
                raise Refusal(ALREADY_REDEEMED, "this email has already redeemed an invite") from None
            if confirmed.first() is None:
                current = await _hold_by_id(connection, hold_id)
                if current.state is HoldState.RELEASED:
                    raise Refusal(HOLD_RELEASED, "this hold was released")
                if current.state is not HoldState.CONFIRMED:
                    raise Refusal(HOLD_EXPIRED, "this hold has expired")
                return current
            return await _hold_by_id(connection, hold_id)

    async def release(self, hold_id: uuid.UUID) -> HoldRecord:
        """The held use goes back to its code; releasing again, or a finished hold, changes nothing."""
        async with self._engine.begin() as connection:
            released = await connection.execute(
                update(holds)
                .where(holds.c.id == hold_id, holds.c.state == HoldState.HELD)
                .values(state=HoldState.RELEASED, finish_time=func.now())
                .returning(holds.c.code_id, holds.c.code_slot, holds.c.campaign_id, holds.c.campaign_slot)
            )
            await _give_back(connection, [row._mapping for row in released])
            return await _hold_by_id(connection, hold_id)

    async def referral_tree(self, root: Owner, depth: int) -> list[ReferralNode]:
        """Whom `root` invited (confirmed uses of its codes), and whom they invited, `depth` levels down."""
        invited = holds.join(codes, holds.c.code_id == codes.c.id)
        level = (
            select(
                holds.c.user_id,
                holds.c.code_id,
                holds.c.finish_time,
                codes.c.owner_user_id.label("parent"),
                literal(1).label("level"),
            )
            .select_from(invited)
            .where(
                holds.c.state == HoldState.CONFIRMED,
                holds.c.user_id.is_not(None),
                codes.c.owner_user_id == root.user_id if root.user_id else codes.c.owner_admin_id == root.admin_id,
            )
            .cte("tree", recursive=True)
        )
        below = (
            select(
                holds.c.user_id,
                holds.c.code_id,
                holds.c.finish_time,
                codes.c.owner_user_id,
                (level.c.level + 1).label("level"),
            )
            .select_from(invited.join(level, codes.c.owner_user_id == level.c.user_id))
            .where(holds.c.state == HoldState.CONFIRMED, holds.c.user_id.is_not(None), level.c.level < depth)
        )
        tree = level.union_all(below)
        async with self._autocommit.connect() as connection:
            rows = (await connection.execute(select(tree).order_by(tree.c.level, tree.c.finish_time))).all()
        nodes = {row.user_id: ReferralNode(row.user_id, row.code_id, row.finish_time, []) for row in rows}
        roots: list[ReferralNode] = []
        for row in rows:
            parent = nodes.get(row.parent) if row.level > 1 else None
            (parent.children if parent is not None else roots).append(nodes[row.user_id])
        return roots

    async def list_codes(
        self,
        limit: int,
        after: tuple[datetime.datetime, uuid.UUID] | None = None,
        owner: Owner | None = None,
        campaign_id: uuid.UUID | None = None,
        state: CodeState | None = None,
    ) -> list[OwnedCode]:
        """Codes, oldest first, with their confirmed and held uses; keyset-paginated."""
        query = _LISTED_CODES.order_by(codes.c.create_time, codes.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(codes.c.create_time, codes.c.id) > tuple_(*after))
        if owner is not None and owner.user_id is not None:
            query = query.where(codes.c.owner_user_id == owner.user_id)
        if owner is not None and owner.admin_id is not None:
            query = query.where(codes.c.owner_admin_id == owner.admin_id)
        if campaign_id is not None:
            query = query.where(codes.c.campaign_id == campaign_id)
        if state is not None:
            query = query.where(codes.c.state == state)
        async with self._autocommit.connect() as connection:
            return [self._owned(row._mapping) for row in await connection.execute(query)]

    async def code(self, code: str) -> tuple[OwnedCode, list[Redemption]]:
        """One code by its canonical form, with its uses, newest first."""
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(_LISTED_CODES.where(codes.c.lookup == self._sealer.lookup(code)))).first()
            if row is None:
                raise Refusal(NOT_FOUND, "no such invite code")
            used = await connection.execute(
                _hold_with_terms()
                .add_columns(holds.c.user_id, holds.c.create_time)
                .where(holds.c.code_id == row.id)
                .order_by(holds.c.create_time.desc())
                .limit(MAX_REDEMPTIONS)
            )
            return self._owned(row._mapping), [
                Redemption(_hold(use._mapping), use.user_id, use.create_time) for use in used
            ]

    async def disable(self, code: str) -> OwnedCode:
        """No new holds on the code; its confirmed uses stay. Disabling twice changes nothing.
        Other replicas' cached terms of the code lapse within CONTEXT_TTL."""
        self._contexts.pop(self._sealer.lookup(code), None)
        async with self._engine.begin() as connection:
            disabled = await connection.execute(
                update(codes)
                .where(codes.c.lookup == self._sealer.lookup(code))
                .values(state=func.greatest(codes.c.state, CodeState.DISABLED))
                .returning(codes.c.id)
            )
            code_id = disabled.scalar()
            if code_id is None:
                raise Refusal(NOT_FOUND, "no such invite code")
            return self._owned((await connection.execute(_LISTED_CODES.where(codes.c.id == code_id))).one()._mapping)

    def _owned(self, row: Any) -> OwnedCode:
        return OwnedCode(
            self._minted(row), CodeState(row["state"]), int(row["confirmed"]), int(row["held"]), row["create_time"]
        )

    async def expire_due(self, batch: int = EXPIRY_BATCH) -> int:
        """Expires holds past their time to live and returns their uses; safe in many replicas."""
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
            await _give_back(connection, rows)
            await connection.execute(
                update(codes)
                .where(codes.c.state == CodeState.ACTIVE, codes.c.expire_time <= func.now())
                .values(state=CodeState.EXPIRED)
            )
            return len(rows)


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
_INSERT_HOLD = insert(holds)
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
_LISTED_CODES = select(
    codes,
    select(func.count())
    .where(holds.c.code_id == codes.c.id, holds.c.state == HoldState.CONFIRMED)
    .scalar_subquery()
    .label("confirmed"),
    select(func.count())
    .where(holds.c.code_id == codes.c.id, holds.c.state == HoldState.HELD)
    .scalar_subquery()
    .label("held"),
)
_CAMPAIGNS = select(
    campaigns,
    select(func.coalesce(func.sum(campaign_slots.c.taken), 0))
    .where(campaign_slots.c.campaign_id == campaigns.c.id)
    .scalar_subquery()
    .label("taken"),
)


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
    )


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
        return await _hold_by_id(connection, context["earlier"])
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


def _hold_with_terms() -> Any:
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


async def _hold_by_id(connection: AsyncConnection, hold_id: uuid.UUID) -> HoldRecord:
    row = (await connection.execute(_hold_with_terms().where(holds.c.id == hold_id))).first()
    if row is None:
        raise Refusal(HOLD_NOT_FOUND, "no such hold")
    return _hold(row._mapping)


def _hold(row: Any) -> HoldRecord:
    return HoldRecord(
        id=row["id"],
        code_id=row["code_id"],
        state=HoldState(row["state"]),
        expire_time=row["expire_time"],
        referrer=Owner(row["owner_user_id"], row["owner_admin_id"]),
        campaign_id=row["campaign_id"],
        invite_quota=int(row["invite_quota"]),
    )


async def _give_back(connection: AsyncConnection, rows: Sequence[Any]) -> None:
    """Returns the uses of finished holds: campaign spots first, then code uses (the take order)."""
    spots = Counter((r["campaign_id"], r["campaign_slot"]) for r in rows if r["campaign_slot"] is not None)
    uses = Counter((r["code_id"], r["code_slot"]) for r in rows if r["code_slot"] is not None)
    await CAMPAIGN_SPOTS.give_back(connection, spots)
    await CODE_USES.give_back(connection, uses)


def _constraint(error: IntegrityError) -> str:
    cause = getattr(error.orig, "__cause__", None)
    return str(getattr(cause, "constraint_name", "") or "")
