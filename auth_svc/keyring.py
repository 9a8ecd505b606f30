"""The access-token key ring as the database keeps it: made on first use, shared by every
replica, rotated when the signing key is older than `MESH_AUTH_SIGNING_KEY_MAX_AGE`."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime

import structlog

from auth_svc.store.keys import SigningKeyStore
from auth_svc.tokens import KeyRing, SigningKey, StoredKey, new_stored_key, opened
from mesh.keys import KeyringError

log = structlog.get_logger("auth_svc.keyring")


class StoredKeyRing:
    def __init__(self, store: SigningKeyStore, kek: bytes, ring: KeyRing, max_age: datetime.timedelta) -> None:
        self._store = store
        self._kek = kek
        self._ring = ring
        self._max_age = max_age
        self._lock = asyncio.Lock()
        self._private: dict[str, SigningKey | None] = {}
        """Keys opened once, by kid (None: does not open with this KEK), so a refresh decrypts
        only keys it has not seen."""

    async def ready(self) -> KeyRing:
        if not self._ring.loaded:
            async with self._lock:
                if not self._ring.loaded:
                    await self.refresh()
        return self._ring

    async def refresh(self) -> None:
        """Reads the keys again (another replica may have rotated), making or rotating as due."""
        keys = self._opened(await self._store.signing_keys())
        active = [key for key in keys if key.retire_time is None]
        now = datetime.datetime.now(datetime.UTC)
        if not active or active[0].create_time + self._max_age < now:
            # Replicas that race here agree: one active key is a unique index.
            await self._store.add_signing_key(new_stored_key(self._kek), retire_current=True)
            keys = self._opened(await self._store.signing_keys())
        self._ring.replace(keys)

    def _opened(self, stored: list[StoredKey]) -> list[SigningKey]:
        keys = []
        for key in stored:
            if key.kid not in self._private:
                try:
                    self._private[key.kid] = opened(key, self._kek)
                except KeyringError:
                    # Sealed under another KEK: it cannot sign here, and its tokens stop verifying.
                    log.error("an access-token key does not open with this KEK; it is left out", kid=key.kid)
                    self._private[key.kid] = None
            if (known := self._private[key.kid]) is not None:
                # A rotation by another replica changes only when the key was retired.
                keys.append(dataclasses.replace(known, retire_time=key.retire_time))
        return keys
