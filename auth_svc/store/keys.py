"""The access-token key ring: every replica signs with the same key and publishes the same set."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncEngine

from auth_svc.models import signing_keys
from auth_svc.tokens import StoredKey


class SigningKeyStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def signing_keys(self) -> list[StoredKey]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(signing_keys))).all()
        return [StoredKey(row.kid, row.sealed_private_key, row.create_time, row.retire_time) for row in rows]

    async def add_signing_key(self, key: StoredKey, retire_current: bool) -> None:
        """Makes `key` the signing key: the first one (a replica that loses the race to create
        it keeps the winner's), or the next one, retiring the current."""
        async with self._engine.begin() as connection:
            if retire_current:
                await connection.execute(
                    update(signing_keys).where(signing_keys.c.retire_time.is_(None)).values(retire_time=func.now())
                )
            await connection.execute(
                upsert(signing_keys)
                .values(kid=key.kid, sealed_private_key=key.sealed_private_key)
                .on_conflict_do_nothing()
            )
