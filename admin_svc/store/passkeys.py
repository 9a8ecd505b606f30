"""Admins' passkeys: registered, listed, found by credential id, and their signature counter
moved forward by the sign-in that uses one."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from admin_svc.models import passkeys
from mesh.errors import AlreadyExists


@dataclass(frozen=True)
class PasskeyRecord:
    id: uuid.UUID
    admin_id: uuid.UUID
    credential_id: bytes
    public_key: bytes
    sign_count: int
    display_name: str
    create_time: datetime.datetime
    last_use_time: datetime.datetime | None


def _record(row: Row[tuple[object, ...]]) -> PasskeyRecord:
    return PasskeyRecord(
        row.id, row.admin_id, row.credential_id, row.public_key, row.sign_count, row.display_name,
        row.create_time, row.last_use_time,
    )  # fmt: skip


class PasskeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def add(
        self,
        connection: AsyncConnection,
        admin_id: uuid.UUID,
        credential_id: bytes,
        public_key: bytes,
        sign_count: int,
        display_name: str,
    ) -> PasskeyRecord:
        """In the caller's transaction (the audited one)."""
        try:
            async with connection.begin_nested():
                row = (
                    await connection.execute(
                        insert(passkeys)
                        .values(
                            id=uuid.uuid4(), admin_id=admin_id, credential_id=credential_id, public_key=public_key,
                            sign_count=sign_count, display_name=display_name,
                        )
                        .returning(passkeys)
                    )
                ).one()  # fmt: skip
        except IntegrityError:
            raise AlreadyExists("PASSKEY_EXISTS", "this passkey is registered already") from None
        return _record(row)

    async def of_admin(self, admin_id: uuid.UUID) -> list[PasskeyRecord]:
        query = select(passkeys).where(passkeys.c.admin_id == admin_id).order_by(passkeys.c.create_time)
        async with self._engine.connect() as connection:
            return [_record(row) for row in await connection.execute(query)]

    async def use(self, connection: AsyncConnection, passkey_id: uuid.UUID, sign_count: int) -> bool:
        """Moves the passkey's counter to `sign_count`, in the sign-in's transaction; False when
        the counter did not move forward (a cloned authenticator), unless it never counts (0)."""
        moved = await connection.execute(
            update(passkeys)
            .where(
                passkeys.c.id == passkey_id,
                passkeys.c.sign_count < sign_count if sign_count else passkeys.c.sign_count == 0,
            )
            .values(sign_count=sign_count, last_use_time=datetime.datetime.now(datetime.UTC))
        )
        return moved.rowcount == 1
