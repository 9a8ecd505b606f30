"""The key ring of an issuer of access tokens (auth_svc for users, admin_svc for admins): ES256
keys kept in the issuer's own schema, private halves sealed under the KEK, so every replica signs
with the same key and publishes the same set.

One key signs; it is rotated when older than the issuer's maximum age, and a retired key stays
published for as long as a token it signed can live, so no valid token stops verifying.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import uuid
from dataclasses import dataclass

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from sqlalchemy import Column, DateTime, Index, MetaData, Table, Text, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncEngine

from mesh.keys import KeyringError, decrypt_private_key, encrypt_private_key, key_id
from mesh.tokens import ALGORITHM, AUDIENCE

log = structlog.get_logger("mesh.token_keys")

_LEEWAY = datetime.timedelta(minutes=1)
"""How much longer a retired key stays published than its last token lives: room for the
verifiers' clock skew and their cached key sets."""


def signing_keys_table(metadata: MetaData) -> Table:
    """The issuer's `signing_keys` table (each issuer's migrations create it in its schema)."""
    return Table(
        "signing_keys",
        metadata,
        Column("kid", Text, primary_key=True),
        Column("sealed_private_key", Text, nullable=False),
        Column("create_time", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("retire_time", DateTime(timezone=True)),
        # At most one key signs at a time; replicas racing to create the first one agree on it.
        Index(
            "signing_keys_one_active",
            text("(retire_time IS NULL)"),
            unique=True,
            postgresql_where=text("retire_time IS NULL"),
        ),
    )


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey
    create_time: datetime.datetime
    retire_time: datetime.datetime | None


@dataclass(frozen=True)
class StoredKey:
    kid: str
    sealed_private_key: str
    create_time: datetime.datetime
    retire_time: datetime.datetime | None


def new_stored_key(kek: bytes, seal_context: str) -> StoredKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    kid = key_id(private_key.public_key())
    now = datetime.datetime.now(datetime.UTC)
    return StoredKey(kid, encrypt_private_key(private_key, kek, seal_context, kid), now, None)


def opened(stored: StoredKey, kek: bytes, seal_context: str) -> SigningKey:
    key = decrypt_private_key(stored.sealed_private_key, kek, seal_context, stored.kid)
    return SigningKey(stored.kid, key, stored.create_time, stored.retire_time)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expire_time: datetime.datetime


class KeyRing:
    def __init__(self, issuer: str, access_ttl: datetime.timedelta) -> None:
        self._issuer = issuer
        self._access_ttl = access_ttl
        self._keys: list[SigningKey] = []

    def replace(self, keys: list[SigningKey]) -> None:
        self._keys = sorted(keys, key=lambda key: key.create_time)

    @property
    def loaded(self) -> bool:
        return any(key.retire_time is None for key in self._keys)

    def access_token(
        self,
        subject: uuid.UUID,
        session_id: uuid.UUID,
        now: datetime.datetime | None = None,
        **claims: str,
    ) -> AccessToken:
        """A token of `subject`'s session, carrying any further `claims` (an admin's `role`)."""
        signing = next(key for key in reversed(self._keys) if key.retire_time is None)
        issued = now or datetime.datetime.now(datetime.UTC)
        expire = issued + self._access_ttl
        payload = {
            **claims,
            "iss": self._issuer,
            "aud": AUDIENCE,
            "sub": str(subject),
            "sid": str(session_id),
            "iat": int(issued.timestamp()),
            "exp": int(expire.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(payload, signing.private_key, algorithm=ALGORITHM, headers={"kid": signing.kid})
        return AccessToken(token, expire.replace(microsecond=0))

    def published(self, now: datetime.datetime | None = None) -> list[auth_pb.JsonWebKey]:
        """The active key and every retired one a live token may still carry."""
        moment = now or datetime.datetime.now(datetime.UTC)
        return [
            _jwk(key)
            for key in self._keys
            if key.retire_time is None or key.retire_time + self._access_ttl + _LEEWAY > moment
        ]


def _jwk(key: SigningKey) -> auth_pb.JsonWebKey:
    numbers = key.private_key.public_key().public_numbers()
    return auth_pb.JsonWebKey(
        kty="EC", crv="P-256", x=_b64(numbers.x), y=_b64(numbers.y), kid=key.kid, alg=ALGORITHM, use="sig"
    )


def _b64(coordinate: int) -> str:
    return base64.urlsafe_b64encode(coordinate.to_bytes(32, "big")).rstrip(b"=").decode()


class SigningKeyStore:
    def __init__(self, engine: AsyncEngine, table: Table) -> None:
        self._engine = engine
        self._table = table

    async def signing_keys(self) -> list[StoredKey]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(self._table))).all()
        return [StoredKey(row.kid, row.sealed_private_key, row.create_time, row.retire_time) for row in rows]

    async def add_signing_key(self, key: StoredKey, retire_current: bool) -> None:
        """Makes `key` the signing key: the first one (a replica that loses the race to create
        it keeps the winner's), or the next one, retiring the current."""
        keys = self._table
        async with self._engine.begin() as connection:
            if retire_current:
                await connection.execute(
                    update(keys).where(keys.c.retire_time.is_(None)).values(retire_time=func.now())
                )
            await connection.execute(
                upsert(keys).values(kid=key.kid, sealed_private_key=key.sealed_private_key).on_conflict_do_nothing()
            )


class StoredKeyRing:
    """The ring as the database keeps it: made on first use, shared by every replica, rotated
    when the signing key is older than `max_age`."""

    def __init__(
        self, store: SigningKeyStore, kek: bytes, seal_context: str, ring: KeyRing, max_age: datetime.timedelta
    ) -> None:
        self._store = store
        self._kek = kek
        self._seal_context = seal_context
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
            await self._store.add_signing_key(new_stored_key(self._kek, self._seal_context), retire_current=True)
            keys = self._opened(await self._store.signing_keys())
        self._ring.replace(keys)

    def _opened(self, stored: list[StoredKey]) -> list[SigningKey]:
        keys = []
        for key in stored:
            if key.kid not in self._private:
                try:
                    self._private[key.kid] = opened(key, self._kek, self._seal_context)
                except KeyringError:
                    # Sealed under another KEK: it cannot sign here, and its tokens stop verifying.
                    log.error("an access-token key does not open with this KEK; it is left out", kid=key.kid)
                    self._private[key.kid] = None
            if (known := self._private[key.kid]) is not None:
                # A rotation by another replica changes only when the key was retired.
                keys.append(dataclasses.replace(known, retire_time=key.retire_time))
        return keys
