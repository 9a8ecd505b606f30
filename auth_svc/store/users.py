"""The accounts: read by id and by email, listed, their password rehashed, suspended and
reactivated."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import and_, bindparam, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc.domain import UserState
from auth_svc.models import refresh_tokens, users
from auth_svc.store.records import UserRecord, revoke_sessions, user_record
from mesh.cursors import Keyset
from mesh.db import DriverPool, DriverStatement
from mesh.outbox import Outbox

ACCOUNT = select(users).where(
    users.c.canonical_email == bindparam("canonical_email"),
    users.c.state != int(UserState.PENDING_VERIFICATION),
)
"""The account of an email (active or suspended), not its pending registrations."""


class UserStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> None:
        self._engine = engine
        self._driver = driver
        self._outbox = outbox

    async def user(self, user_id: uuid.UUID) -> UserRecord | None:
        async with self._driver.connection() as connection:
            row = await _USER_BY_ID.fetchrow(connection, id=user_id)
        return user_record(row) if row else None

    async def account(self, canonical_email: str) -> UserRecord | None:
        """The account of an email (active or suspended), not its pending registrations."""
        async with self._driver.connection() as connection:
            row = await _ACCOUNT_BY_EMAIL.fetchrow(connection, canonical_email=canonical_email)
        return user_record(row) if row else None

    async def signing_in(self, canonical_email: str) -> UserRecord | None:
        """Whom a sign-in with this email is about: its account, else its newest pending
        registration (so that its own password can be told to verify first)."""
        async with self._driver.connection() as connection:
            row = await _SIGNING_IN.fetchrow(connection, canonical_email=canonical_email)
        return user_record(row) if row else None

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))

    async def page(self, limit: int, after: Keyset | None, state: UserState | None) -> list[UserRecord]:
        """Users newest first, keyset-paginated on (create_time, id)."""
        query = select(users).order_by(users.c.create_time.desc(), users.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(users.c.state == int(state))
        if after is not None:
            query = query.where(tuple_(users.c.create_time, users.c.id) < tuple_(*after))
        async with self._engine.connect() as connection:
            return [user_record(row) for row in await connection.execute(query)]

    async def registrations(self, start: datetime.datetime, end: datetime.datetime) -> tuple[int, int]:
        """Registrations begun in [start, end), and emails proven in it."""
        async with self._driver.connection() as connection:
            row = await _REGISTRATIONS.fetchrow(connection, start=start, end=end)
        assert row is not None
        return int(row["started"]), int(row["verified"])

    async def change_state(
        self, user_id: uuid.UUID, allowed_from: frozenset[UserState], to: UserState
    ) -> tuple[UserRecord | None, list[uuid.UUID]]:
        """Moves an account from one of `allowed_from` to `to`; leaving ACTIVE revokes every
        session. Answers the account (None when unknown or in another state) and the sessions
        revoked."""
        revoked: list[uuid.UUID] = []
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(users)
                    .where(users.c.id == user_id, users.c.state.in_([int(state) for state in allowed_from]))
                    .values(state=int(to))
                    .returning(*users.c)
                )
            ).first()
            if row is not None and to is not UserState.ACTIVE:
                revoked = await revoke_sessions(self._outbox, connection, refresh_tokens.c.user_id == user_id)
        return (user_record(row) if row else None), revoked


_USER_BY_ID = DriverStatement(select(users).where(users.c.id == bindparam("id")))
_ACCOUNT_BY_EMAIL = DriverStatement(ACCOUNT)
_SIGNING_IN = DriverStatement(
    select(users)
    .where(users.c.canonical_email == bindparam("canonical_email"))
    .order_by(users.c.state == int(UserState.PENDING_VERIFICATION), users.c.create_time.desc())
    .limit(1)
)


def _within(column: Any) -> Any:
    return and_(column >= bindparam("start", type_=column.type), column < bindparam("end", type_=column.type))


_REGISTRATIONS = DriverStatement(
    select(
        func.count().filter(_within(users.c.create_time)).label("started"),
        func.count().filter(_within(users.c.verify_time)).label("verified"),
    ).where(_within(users.c.create_time) | _within(users.c.verify_time))
)
