"""Verification codes of pending registrations: replaced on a resend, an attempt taken before
the code is compared (so parallel guesses cannot exceed the limit), and the registration made
the account, of which the one canonical-email index lets only one of an email be."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth_svc.domain import UserState
from auth_svc.models import users, verification_codes
from auth_svc.store.records import Attempt, NewCode, NewToken, UserRecord, Work, add_mail, user_record
from auth_svc.store.sessions import insert_session
from mesh.db import DriverPool, DriverStatement
from mesh.mailing import Mail
from mesh.outbox import Outbox

_ONE_ACCOUNT_PER_EMAIL = "users_one_account_per_email"


class VerificationStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> None:
        self._engine = engine
        self._driver = driver
        self._outbox = outbox

    async def replace_code(self, user: UserRecord, code: NewCode, mail: Mail) -> bool:
        """A new verification code for a pending registration (its old one stops working)."""
        async with self._engine.begin() as connection:
            pending = await connection.scalar(
                select(users.c.id)
                .where(users.c.id == user.id, users.c.state == int(UserState.PENDING_VERIFICATION))
                .with_for_update()
            )
            if pending is None:
                return False
            await _replace_code(connection, user.id, code)
            await add_mail(self._outbox, connection, user.canonical_email, mail)
        self._outbox.notify()
        return True

    async def take_verification_attempt(self, canonical_email: str, digest: bytes) -> Attempt | None:
        """Spends one attempt at the live code of the pending registration `digest` names and
        answers it; None when there is none, its code expired, or its attempts are spent."""
        async with self._driver.connection() as connection:
            row = await _TAKE_NAMED_ATTEMPT.fetchrow(connection, canonical_email=canonical_email, digest=digest)
        return Attempt(**row) if row else None

    async def take_verification_attempts(self, canonical_email: str) -> list[Attempt]:
        """Spends one attempt at the live code of every pending registration of the email, for a
        verification that names its registration by password: which one it is shows only once
        the code is compared, and an attempt must be spent before that."""
        async with self._driver.connection() as connection:
            rows = await _TAKE_ATTEMPTS.fetch(connection, canonical_email=canonical_email)
        return [Attempt(**row) for row in rows]

    async def take_repeated_attempt(self, canonical_email: str, digest: bytes) -> Attempt | None:
        """Spends one attempt at the code that made the registration `digest` names an account,
        while that code is live: a verification presented again by a client that lost the first
        answer (a replica killed between its commit and its reply)."""
        async with self._driver.connection() as connection:
            row = await _TAKE_REPEATED_ATTEMPT.fetchrow(connection, canonical_email=canonical_email, digest=digest)
        return Attempt(**row) if row else None

    async def purge_expired(self) -> int:
        async with self._engine.begin() as connection:
            deleted = await connection.execute(
                delete(verification_codes).where(verification_codes.c.expire_time < func.now())
            )
        return int(deleted.rowcount)

    async def activate(
        self,
        pending_id: uuid.UUID,
        session_id: uuid.UUID,
        session: NewToken,
        follow_up: Callable[[UserRecord, list[uuid.UUID]], Sequence[Work]],
    ) -> UserRecord | None:
        """Pending → ACTIVE, with a first session (`session` the first refresh token of the family
        `session_id`); the email's other pending registrations are removed, and
        `follow_up(account, their holds)` says what the outbox then owes other services. None if
        the registration is gone or another one of the email won."""
        try:
            async with self._engine.begin() as connection:
                row = (
                    await connection.execute(
                        update(users)
                        .where(users.c.id == pending_id, users.c.state == int(UserState.PENDING_VERIFICATION))
                        .values(state=int(UserState.ACTIVE), verify_time=func.now())
                        .returning(*users.c)
                    )
                ).first()
                if row is None:
                    return None
                account = user_record(row)
                lapsed = await connection.execute(
                    delete(users)
                    .where(
                        users.c.canonical_email == account.canonical_email,
                        users.c.state == int(UserState.PENDING_VERIFICATION),
                    )
                    .returning(users.c.hold_id)
                )
                others = sorted({hold for hold in lapsed.scalars() if hold and hold != account.hold_id})
                # The code stays until it expires (`purge_expired`): a client that lost this
                # answer presents it again (`take_repeated_attempt`).
                for item in follow_up(account, others):
                    await self._outbox.add(connection, account.canonical_email, item.kind, item.payload)
                await insert_session(connection, pending_id, session_id, session)
        except IntegrityError as error:
            if _constraint(error) != _ONE_ACCOUNT_PER_EMAIL:
                raise
            return None
        self._outbox.notify()
        return account


async def _replace_code(connection: AsyncConnection, user_id: uuid.UUID, code: NewCode) -> None:
    statement = upsert(verification_codes).values(
        user_id=user_id, code_digest=code.digest, expire_time=code.expire_time, attempts_left=code.attempts
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[verification_codes.c.user_id],
            set_={name: statement.excluded[name] for name in ("code_digest", "expire_time", "attempts_left")},
        )
    )


def _attempt_statement(*conditions: Any) -> Any:
    """Spends one attempt at the live codes of the email's registrations `conditions` select."""
    return (
        update(verification_codes)
        .where(
            verification_codes.c.user_id == users.c.id,
            users.c.canonical_email == bindparam("canonical_email"),
            verification_codes.c.attempts_left > 0,
            verification_codes.c.expire_time > func.now(),
            *conditions,
        )
        .values(attempts_left=verification_codes.c.attempts_left - 1)
        .returning(verification_codes.c.user_id, verification_codes.c.code_digest, users.c.password_hash)
    )


def _constraint(error: IntegrityError) -> str:
    return str(getattr(getattr(error.orig, "__cause__", None), "constraint_name", "") or "")


_PENDING = (users.c.state == int(UserState.PENDING_VERIFICATION), users.c.hold_expire_time > func.now())
_NAMED = users.c.registration_digest == bindparam("digest")
_TAKE_NAMED_ATTEMPT = DriverStatement(_attempt_statement(*_PENDING, _NAMED))
_TAKE_ATTEMPTS = DriverStatement(_attempt_statement(*_PENDING))
_TAKE_REPEATED_ATTEMPT = DriverStatement(_attempt_statement(users.c.state == int(UserState.ACTIVE), _NAMED))
