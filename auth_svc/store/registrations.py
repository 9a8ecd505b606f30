"""Pending registrations: written where the email has no account, in the same statement that
looks; each of an email is a row of its own that nothing later overwrites; the account's owner
is mailed a notice instead; lapsed ones are deleted."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from sqlalchemy import (
    DateTime,
    Interval,
    LargeBinary,
    SmallInteger,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc.domain import UserState
from auth_svc.models import outbox, users, verification_codes
from auth_svc.store.records import PURGE_BATCH, NewCode, Registered, Registration, UserRecord, add_mail, user_record
from auth_svc.store.users import ACCOUNT
from mesh.db import DriverPool, DriverStatement
from mesh.mailing import SEND_EMAIL, Mail, mail_payload
from mesh.outbox import Outbox


class RegistrationStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> None:
        self._engine = engine
        self._driver = driver
        self._outbox = outbox

    async def pending_registration(self, canonical_email: str, digest: bytes | None) -> UserRecord | None:
        """The live pending registration of an email that `digest` names, or its newest."""
        statement = _PENDING_NEWEST if digest is None else _PENDING_NAMED
        named = {} if digest is None else {"digest": digest}
        async with self._driver.connection() as connection:
            row = await statement.fetchrow(connection, canonical_email=canonical_email, **named)
        return user_record(row) if row else None

    async def submitted_again(
        self, canonical_email: str, submission: bytes, within: float
    ) -> tuple[uuid.UUID, datetime.datetime] | None:
        """The email's live pending registration made from `submission` in the last `within`
        seconds, and when its code expires; None when there is none."""
        async with self._driver.connection() as connection:
            row = await _SUBMITTED_AGAIN.fetchrow(
                connection,
                canonical_email=canonical_email,
                submission=submission,
                within=datetime.timedelta(seconds=within),
            )
        return (row["id"], row["expire_time"]) if row else None

    async def register(self, registration: Registration, code: NewCode, mail: Mail) -> Registered:
        """A pending registration with its verification code and its email, unless the email has
        an account: one statement, so the look and the write are one atomic step, on the driver
        path. Earlier pending registrations of the email are left as they are."""
        message_id, sealed = self._outbox.sealed(SEND_EMAIL, mail_payload(mail))
        async with self._driver.connection() as connection:
            row = await _REGISTER.fetchrow(
                connection,
                state=int(UserState.PENDING_VERIFICATION),
                **vars(registration),
                code_digest=code.digest,
                code_expire_time=code.expire_time,
                attempts_left=code.attempts,
                message_id=message_id,
                payload=sealed,
            )
        assert row is not None, "the statement answers the registration or the account"
        if not row["written"]:
            return Registered(None, user_record(row))
        self._outbox.notify()
        return Registered(user_record(row), None)

    async def notify(self, user: UserRecord, mail: Mail) -> None:
        """Mails the owner of an account (a registration of their email was tried)."""
        async with self._engine.begin() as connection:
            await add_mail(self._outbox, connection, user.canonical_email, mail)
        self._outbox.notify()

    async def expire_pending(self, batch: int = PURGE_BATCH) -> int:
        """Deletes pending registrations whose hold has lapsed (invite_svc returns the use itself)."""
        due = (
            select(users.c.id)
            .where(users.c.state == int(UserState.PENDING_VERIFICATION), users.c.hold_expire_time < func.now())
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(users).where(users.c.id.in_(due.scalar_subquery())))
        return int(result.rowcount)


def _register_statement() -> Any:
    columns = (
        "email",
        "canonical_email",
        "password_hash",
        "state",
        "registration_digest",
        "submission_digest",
        "hold_id",
        "hold_expire_time",
        "referrer_user_id",
        "referrer_admin_id",
        "campaign_id",
        "invite_quota",
        "invite_uses",
    )
    account = ACCOUNT.cte("account")
    registration = (
        insert(users)
        .from_select(
            ["id", *columns],
            select(*(bindparam(name, type_=users.c[name].type) for name in ("id", *columns))).where(
                ~exists(select(account.c.id))
            ),
        )
        .returning(*users.c)
        .cte("registration")
    )
    code = insert(verification_codes).from_select(
        ["user_id", "code_digest", "expire_time", "attempts_left"],
        select(
            registration.c.id,
            bindparam("code_digest", type_=LargeBinary),
            bindparam("code_expire_time", type_=DateTime(timezone=True)),
            bindparam("attempts_left", type_=SmallInteger),
        ),
    )
    mail = insert(outbox).from_select(
        ["id", "aggregate", "kind", "payload"],
        select(
            bindparam("message_id", type_=UUID(as_uuid=True)),
            registration.c.canonical_email,
            literal(SEND_EMAIL),
            bindparam("payload", type_=LargeBinary),
        ),
    )
    # Every data-modifying CTE runs, and the code and the mail only for a registration written.
    written = select(registration, literal(True).label("written"))
    found = select(account, literal(False).label("written"))
    return written.union_all(found).add_cte(code.cte("code"), mail.cte("mail"))


_PENDING = select(users).where(
    users.c.canonical_email == bindparam("canonical_email"),
    users.c.state == int(UserState.PENDING_VERIFICATION),
    users.c.hold_expire_time > func.now(),
)
_REGISTER = DriverStatement(_register_statement())
_PENDING_NAMED = DriverStatement(_PENDING.where(users.c.registration_digest == bindparam("digest")))
_PENDING_NEWEST = DriverStatement(_PENDING.order_by(users.c.create_time.desc()).limit(1))
_SUBMITTED_AGAIN = DriverStatement(
    _PENDING.with_only_columns(users.c.id, verification_codes.c.expire_time)
    .join_from(users, verification_codes, verification_codes.c.user_id == users.c.id)
    .where(
        users.c.submission_digest == bindparam("submission"),
        users.c.create_time > func.now() - bindparam("within", type_=Interval),
    )
    .order_by(users.c.create_time.desc())
    .limit(1)
)
