"""Password resets: a token mailed, then spent once for a new password, which ends every session."""

from __future__ import annotations

import datetime
import uuid

from sqlalchemy import delete, func, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc.domain import UserState
from auth_svc.models import password_resets, refresh_tokens, users
from auth_svc.store.records import NewToken, UserRecord, add_mail, revoke_sessions
from mesh.mailing import Mail
from mesh.outbox import Outbox


class RecoveryStore:
    def __init__(self, engine: AsyncEngine, outbox: Outbox) -> None:
        self._engine = engine
        self._outbox = outbox

    async def add_reset(self, user: UserRecord, token: NewToken, mail: Mail) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(password_resets).values(digest=token.digest, user_id=user.id, expire_time=token.expire_time)
            )
            await add_mail(self._outbox, connection, user.canonical_email, mail)
        self._outbox.notify()

    async def reset_password(self, digest: bytes, password_hash: str) -> tuple[uuid.UUID | None, list[uuid.UUID]]:
        """Spends a live reset token: the new password, every reset token of the account spent,
        every session revoked. Answers the account (None for an unknown, spent or expired token)
        and the sessions revoked."""
        async with self._engine.begin() as connection:
            user_id = await connection.scalar(
                update(password_resets)
                .where(
                    password_resets.c.digest == digest,
                    password_resets.c.use_time.is_(None),
                    password_resets.c.expire_time > func.now(),
                    password_resets.c.user_id == users.c.id,
                    users.c.state == int(UserState.ACTIVE),
                )
                .values(use_time=func.now())
                .returning(password_resets.c.user_id)
            )
            if user_id is None:
                return None, []
            await connection.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))
            await connection.execute(
                update(password_resets)
                .where(password_resets.c.user_id == user_id, password_resets.c.use_time.is_(None))
                .values(use_time=func.now())
            )
            revoked = await revoke_sessions(self._outbox, connection, refresh_tokens.c.user_id == user_id)
        return user_id, revoked

    async def purge_spent(self, keep: datetime.timedelta) -> int:
        """Deletes spent reset tokens and those past their expiry by more than `keep`."""
        async with self._engine.begin() as connection:
            resets = await connection.execute(
                delete(password_resets).where(
                    or_(password_resets.c.use_time.is_not(None), password_resets.c.expire_time < func.now() - keep)
                )
            )
        return int(resets.rowcount)
