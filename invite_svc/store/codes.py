"""Codes: minted (sealed, so a dump of the schema holds no plain code; the same request id
answers the same codes), listed with their uses, looked up, and disabled."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import bindparam, func, insert, null, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invite_svc.domain import NOT_FOUND, CodeState, HoldState, Refusal, slot_capacities
from invite_svc.models import code_slots, codes, holds
from invite_svc.sealing import CodeSealer
from invite_svc.store.holds import CodeTermsCache
from invite_svc.store.records import MintedCode, OwnedCode, Owner, Redemption, hold_record, hold_with_terms
from mesh import invite_codes as code_format
from mesh.db import DriverPool, DriverStatement

MAX_REDEMPTIONS = 1000


class CodeStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, sealer: CodeSealer, terms: CodeTermsCache) -> None:
        self._engine = engine
        self._driver = driver
        # Reads and single-statement writes need no BEGIN/ROLLBACK around them.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._sealer = sealer
        self._terms = terms

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
            return await insert_codes(
                connection, self._sealer, count, max_uses, owner, campaign_id, expire_time, request_id, length
            )

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

    async def codes_of_user(
        self, user_id: uuid.UUID, limit: int, after: tuple[datetime.datetime, uuid.UUID] | None = None
    ) -> list[OwnedCode]:
        """A user's own codes as `list_codes` lists them, by a statement compiled once (a person's
        /me asks on every view)."""
        after_time, after_id = after or (None, None)
        async with self._driver.connection() as connection:
            rows = await _CODES_OF_USER.fetch(
                connection, owner=user_id, limit=limit, after_time=after_time, after_id=after_id
            )
        return [self._owned(row) for row in rows]

    async def code(self, code: str) -> tuple[OwnedCode, list[Redemption]]:
        """One code by its canonical form, with its uses, newest first."""
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(_LISTED_CODES.where(codes.c.lookup == self._sealer.lookup(code)))).first()
            if row is None:
                raise Refusal(NOT_FOUND, "no such invite code")
            used = await connection.execute(
                hold_with_terms()
                .add_columns(holds.c.user_id, holds.c.create_time)
                .where(holds.c.code_id == row.id)
                .order_by(holds.c.create_time.desc())
                .limit(MAX_REDEMPTIONS)
            )
            return self._owned(row._mapping), [
                Redemption(hold_record(use._mapping), use.user_id, use.create_time) for use in used
            ]

    async def disable(self, code: str) -> OwnedCode:
        """No new holds on the code; its confirmed uses stay. Disabling twice changes nothing.
        Other replicas' cached terms of the code lapse within their cache's lifetime."""
        lookup = self._sealer.lookup(code)
        self._terms.forget(lookup)
        async with self._engine.begin() as connection:
            disabled = await connection.execute(
                update(codes)
                .where(codes.c.lookup == lookup)
                .values(state=func.greatest(codes.c.state, CodeState.DISABLED))
                .returning(codes.c.id)
            )
            code_id = disabled.scalar()
            if code_id is None:
                raise Refusal(NOT_FOUND, "no such invite code")
            return self._owned((await connection.execute(_LISTED_CODES.where(codes.c.id == code_id))).one()._mapping)

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

    def _owned(self, row: Any) -> OwnedCode:
        return OwnedCode(
            self._minted(row), CodeState(row["state"]), int(row["confirmed"]), int(row["held"]), row["create_time"]
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

_after_time = bindparam("after_time", type_=codes.c.create_time.type, required=False, value=None)
_CODES_OF_USER = DriverStatement(
    _LISTED_CODES.where(
        codes.c.owner_user_id == bindparam("owner"),
        or_(
            _after_time.is_(null()),
            tuple_(codes.c.create_time, codes.c.id)
            > tuple_(_after_time, bindparam("after_id", type_=codes.c.id.type, required=False, value=None)),
        ),
    )
    .order_by(codes.c.create_time, codes.c.id)
    .limit(bindparam("limit"))
)


async def insert_codes(
    connection: AsyncConnection,
    sealer: CodeSealer,
    count: int,
    max_uses: int | None,
    owner: Owner,
    campaign_id: uuid.UUID | None = None,
    expire_time: datetime.datetime | None = None,
    request_id: str | None = None,
    length: int = code_format.DEFAULT_LENGTH,
) -> list[MintedCode]:
    """`count` fresh codes written in the transaction of `connection`."""
    minted: list[MintedCode] = []
    while len(minted) < count:
        code_id, code = uuid.uuid4(), code_format.generate(length)
        row = {
            "id": code_id,
            "lookup": sealer.lookup(code),
            "sealed": sealer.seal(code_id, code),
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
