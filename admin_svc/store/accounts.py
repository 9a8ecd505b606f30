"""Admin accounts and their sessions: made, read, listed, changed; a sign-in's TOTP step taken
once; sessions started and ended."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

from sqlalchemy import Row, insert, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from admin_svc.domain import AdminState
from admin_svc.models import admins, sessions
from mesh.access import AdminRole
from mesh.cursors import Keyset
from mesh.errors import AlreadyExists


@dataclass(frozen=True)
class AdminRecord:
    id: uuid.UUID
    email: str
    role: AdminRole
    state: AdminState
    password_hash: str
    sealed_totp_secret: bytes
    totp_last_step: int
    create_time: datetime.datetime
    last_sign_in_time: datetime.datetime | None


@dataclass(frozen=True)
class NewAdmin:
    id: uuid.UUID
    email: str
    canonical_email: str
    password_hash: str
    role: AdminRole
    sealed_totp_secret: bytes
    create_request: str | None


def _record(row: Row[tuple[object, ...]]) -> AdminRecord:
    return AdminRecord(
        id=row.id,
        email=row.email,
        role=AdminRole(row.role),
        state=AdminState(row.state),
        password_hash=row.password_hash,
        sealed_totp_secret=row.sealed_totp_secret,
        totp_last_step=row.totp_last_step,
        create_time=row.create_time,
        last_sign_in_time=row.last_sign_in_time,
    )


class AccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, connection: AsyncConnection, new: NewAdmin) -> AdminRecord:
        """Adds `new` in the caller's transaction; the same `create_request` again answers the
        admin it made. `AlreadyExists` when the email has an admin."""
        statement = (
            upsert(admins)
            .values(
                id=new.id,
                email=new.email,
                canonical_email=new.canonical_email,
                password_hash=new.password_hash,
                role=int(new.role),
                state=int(AdminState.ACTIVE),
                sealed_totp_secret=new.sealed_totp_secret,
                create_request=new.create_request,
            )
            .on_conflict_do_nothing(index_elements=[admins.c.create_request])
            .returning(admins)
        )
        try:
            async with connection.begin_nested():
                row = (await connection.execute(statement)).first()
        except IntegrityError:
            raise AlreadyExists("ADMIN_EXISTS", "an admin with this email exists") from None
        if row is None:
            row = (await connection.execute(select(admins).where(admins.c.create_request == new.create_request))).one()
        return _record(row)

    async def by_email(self, canonical_email: str) -> AdminRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(admins).where(admins.c.canonical_email == canonical_email))).first()
        return _record(row) if row else None

    async def by_id(self, admin_id: uuid.UUID) -> AdminRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(admins).where(admins.c.id == admin_id))).first()
        return _record(row) if row else None

    async def page(self, limit: int, after: Keyset | None) -> list[AdminRecord]:
        """Admins oldest first, keyset-paginated on (create_time, id)."""
        query = select(admins).order_by(admins.c.create_time, admins.c.id).limit(limit)
        if after is not None:
            query = query.where(tuple_(admins.c.create_time, admins.c.id) > tuple_(*after))
        async with self._engine.connect() as connection:
            return [_record(row) for row in (await connection.execute(query)).all()]

    async def set_password_hash(self, admin_id: uuid.UUID, password_hash: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(update(admins).where(admins.c.id == admin_id).values(password_hash=password_hash))

    async def sign_in(
        self,
        connection: AsyncConnection,
        admin_id: uuid.UUID,
        step: int | None,
        session_id: uuid.UUID,
        expire: datetime.datetime,
    ) -> AdminRecord | None:
        """Takes TOTP `step` for the admin (None: a passkey was the second factor), if it is later
        than every step used before and the admin is active, and starts the session; None
        otherwise (a code used twice, a disabled admin)."""
        taken = {} if step is None else {"totp_last_step": step}
        row = (
            await connection.execute(
                update(admins)
                .where(
                    admins.c.id == admin_id,
                    admins.c.totp_last_step < step if step is not None else true(),
                    admins.c.state == int(AdminState.ACTIVE),
                )
                .values(**taken, last_sign_in_time=datetime.datetime.now(datetime.UTC))
                .returning(admins)
            )
        ).first()
        if row is None:
            return None
        await connection.execute(insert(sessions).values(id=session_id, admin_id=admin_id, expire_time=expire))
        return _record(row)

    async def change(
        self, connection: AsyncConnection, admin_id: uuid.UUID, role: AdminRole | None, state: AdminState | None
    ) -> tuple[AdminRecord | None, list[uuid.UUID]]:
        """Sets what is given, in the caller's transaction; ends the admin's live sessions if
        anything changed. Answers the admin (None if unknown) and the sessions ended."""
        before = (await connection.execute(select(admins).where(admins.c.id == admin_id).with_for_update())).first()
        if before is None:
            return None, []
        values = {
            **({"role": int(role)} if role is not None and int(role) != before.role else {}),
            **({"state": int(state)} if state is not None and int(state) != before.state else {}),
        }
        if not values:
            return _record(before), []
        row = (
            await connection.execute(update(admins).where(admins.c.id == admin_id).values(values).returning(admins))
        ).one()
        return _record(row), await self.end_sessions(connection, admin_id)

    async def end_sessions(self, connection: AsyncConnection, admin_id: uuid.UUID) -> list[uuid.UUID]:
        ended = await connection.execute(
            update(sessions)
            .where(sessions.c.admin_id == admin_id, sessions.c.revoke_time.is_(None))
            .values(revoke_time=datetime.datetime.now(datetime.UTC))
            .returning(sessions.c.id)
        )
        return [row.id for row in ended]

    async def end_session(self, connection: AsyncConnection, session_id: uuid.UUID) -> bool:
        ended = await connection.execute(
            update(sessions)
            .where(sessions.c.id == session_id, sessions.c.revoke_time.is_(None))
            .values(revoke_time=datetime.datetime.now(datetime.UTC))
            .returning(sessions.c.id)
        )
        return ended.first() is not None

    async def ended_since(self, moment: datetime.datetime) -> list[uuid.UUID]:
        """Sessions ended after `moment` whose tokens may still live: told to the verifiers again."""
        now = datetime.datetime.now(datetime.UTC)
        query = select(sessions.c.id).where(sessions.c.revoke_time > moment, sessions.c.expire_time > now)
        async with self._engine.connect() as connection:
            return [row.id for row in (await connection.execute(query)).all()]
