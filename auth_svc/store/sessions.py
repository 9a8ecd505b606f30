"""Sessions as refresh-token families: started, rotated (a rotated token that comes back
revokes its family), ended, and purged once long expired.

A refresh token rotates only from ACTIVE, in one statement, so of two uses at once one wins and
the other is seen as reuse.
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import DateTime, LargeBinary, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth_svc.domain import TokenState, UserState
from auth_svc.models import refresh_tokens, users
from auth_svc.store.records import PURGE_BATCH, NewToken, Rotated, Rotation, revoke_sessions
from mesh.db import DriverPool, DriverStatement
from mesh.outbox import Outbox


class SessionStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> None:
        self._engine = engine
        self._driver = driver
        self._outbox = outbox

    async def start_session(self, user_id: uuid.UUID, session_id: uuid.UUID, token: NewToken) -> None:
        """A new session: `token` the first refresh token of the family `session_id`."""
        async with self._driver.connection() as connection:
            await _START_SESSION.execute(
                connection, id=session_id, digest=token.digest, user_id=user_id, expire_time=token.expire_time
            )

    async def rotate(self, digest: bytes, successor: NewToken) -> Rotated:
        """Exchanges an ACTIVE refresh token of an active account for `successor`, in its family:
        one statement on the driver path (the busiest path of the service), then, only when it
        rotated nothing, a look at why."""
        async with self._driver.connection() as connection:
            row = await _ROTATE.fetchrow(
                connection,
                digest=digest,
                id=uuid.uuid4(),
                successor=successor.digest,
                expire_time=successor.expire_time,
            )
        if row is not None:
            return Rotated(Rotation.ROTATED, row["user_id"], row["family_id"])
        async with self._engine.begin() as connection:
            seen = (
                await connection.execute(
                    select(refresh_tokens.c.state, refresh_tokens.c.family_id).where(refresh_tokens.c.digest == digest)
                )
            ).first()
            if seen is None or seen.state != int(TokenState.ROTATED):
                return Rotated(Rotation.INVALID)
            await revoke_sessions(self._outbox, connection, refresh_tokens.c.family_id == seen.family_id)
            return Rotated(Rotation.REUSED, session_id=seen.family_id)

    async def revoke_family(self, digest: bytes) -> list[uuid.UUID]:
        """Ends the session of a refresh token; answers it (none for an unknown token)."""
        family = select(refresh_tokens.c.family_id).where(refresh_tokens.c.digest == digest).scalar_subquery()
        async with self._engine.begin() as connection:
            return await revoke_sessions(self._outbox, connection, refresh_tokens.c.family_id == family)

    async def purge_spent(self, keep: datetime.timedelta, batch: int = PURGE_BATCH) -> int:
        """Deletes refresh tokens past their expiry by more than `keep` (a rotated one is kept
        until it expires: its reuse must be seen)."""
        async with self._engine.begin() as connection:
            tokens = await connection.execute(
                delete(refresh_tokens).where(
                    refresh_tokens.c.id.in_(
                        select(refresh_tokens.c.id)
                        .where(refresh_tokens.c.expire_time < func.now() - keep)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                        .scalar_subquery()
                    )
                )
            )
        return int(tokens.rowcount)


async def insert_session(
    connection: AsyncConnection, user_id: uuid.UUID, family_id: uuid.UUID, token: NewToken
) -> None:
    """A first session in the transaction of `connection` (an activation starts one)."""
    await connection.execute(
        insert(refresh_tokens).values(
            id=uuid.uuid4(),
            digest=token.digest,
            family_id=family_id,
            user_id=user_id,
            state=int(TokenState.ACTIVE),
            expire_time=token.expire_time,
        )
    )


def _rotate_statement() -> Any:
    rotated = (
        update(refresh_tokens)
        .where(
            refresh_tokens.c.digest == bindparam("digest"),
            refresh_tokens.c.state == int(TokenState.ACTIVE),
            refresh_tokens.c.expire_time > func.now(),
            refresh_tokens.c.user_id == users.c.id,
            users.c.state == int(UserState.ACTIVE),
        )
        .values(state=int(TokenState.ROTATED))
        .returning(refresh_tokens.c.family_id, refresh_tokens.c.user_id)
        .cte("rotated")
    )
    successor = select(
        bindparam("id", type_=UUID(as_uuid=True)),
        bindparam("successor", type_=LargeBinary),
        rotated.c.family_id,
        rotated.c.user_id,
        literal(int(TokenState.ACTIVE)),
        bindparam("expire_time", type_=DateTime(timezone=True)),
    )
    return (
        insert(refresh_tokens)
        .from_select(["id", "digest", "family_id", "user_id", "state", "expire_time"], successor)
        .add_cte(rotated)
        .returning(refresh_tokens.c.user_id, refresh_tokens.c.family_id)
    )


_ROTATE = DriverStatement(_rotate_statement())
_START_SESSION = DriverStatement(
    insert(refresh_tokens).values(
        id=bindparam("id"),
        digest=bindparam("digest"),
        family_id=bindparam("id"),
        user_id=bindparam("user_id"),
        state=int(TokenState.ACTIVE),
        expire_time=bindparam("expire_time"),
    )
)
