"""Tokens: ES256 access tokens signed by the key ring, and opaque refresh, reset and registration tokens.

The key ring lives in the auth schema, so every replica signs with the same key and publishes
the same set. One key signs; after a rotation the retired one stays published for as long as a
token it signed can live, so no valid token stops verifying.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import uuid
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from invitemesh.auth.v1 import auth_service_pb2 as pb

from mesh.keys import decrypt_private_key, encrypt_private_key, key_id
from mesh.tokens import ALGORITHM, AUDIENCE, USER_ISSUER

_SEAL_CONTEXT = "auth_svc access-token key"
_LEEWAY = datetime.timedelta(minutes=1)
"""How much longer a retired key stays published than its last token lives: room for the
verifiers' clock skew and their cached key sets."""


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


def new_stored_key(kek: bytes) -> StoredKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    kid = key_id(private_key.public_key())
    now = datetime.datetime.now(datetime.UTC)
    return StoredKey(kid, encrypt_private_key(private_key, kek, _SEAL_CONTEXT, kid), now, None)


def opened(stored: StoredKey, kek: bytes) -> SigningKey:
    key = decrypt_private_key(stored.sealed_private_key, kek, _SEAL_CONTEXT, stored.kid)
    return SigningKey(stored.kid, key, stored.create_time, stored.retire_time)


@dataclass(frozen=True)
class AccessToken:
    token: str
    expire_time: datetime.datetime


class KeyRing:
    def __init__(self, access_ttl: datetime.timedelta) -> None:
        self._access_ttl = access_ttl
        self._keys: list[SigningKey] = []

    def replace(self, keys: list[SigningKey]) -> None:
        self._keys = sorted(keys, key=lambda key: key.create_time)

    @property
    def loaded(self) -> bool:
        return any(key.retire_time is None for key in self._keys)

    def access_token(
        self, user_id: uuid.UUID, session_id: uuid.UUID, now: datetime.datetime | None = None
    ) -> AccessToken:
        signing = next(key for key in reversed(self._keys) if key.retire_time is None)
        issued = now or datetime.datetime.now(datetime.UTC)
        expire = issued + self._access_ttl
        claims = {
            "iss": USER_ISSUER,
            "aud": AUDIENCE,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": int(issued.timestamp()),
            "exp": int(expire.timestamp()),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, signing.private_key, algorithm=ALGORITHM, headers={"kid": signing.kid})
        return AccessToken(token, expire.replace(microsecond=0))

    def published(self, now: datetime.datetime | None = None) -> list[pb.JsonWebKey]:
        """The active key and every retired one a live token may still carry."""
        moment = now or datetime.datetime.now(datetime.UTC)
        return [
            _jwk(key)
            for key in self._keys
            if key.retire_time is None or key.retire_time + self._access_ttl + _LEEWAY > moment
        ]


def _jwk(key: SigningKey) -> pb.JsonWebKey:
    numbers = key.private_key.public_key().public_numbers()
    return pb.JsonWebKey(
        kty="EC", crv="P-256", x=_b64(numbers.x), y=_b64(numbers.y), kid=key.kid, alg=ALGORITHM, use="sig"
    )


def _b64(coordinate: int) -> str:
    return base64.urlsafe_b64encode(coordinate.to_bytes(32, "big")).rstrip(b"=").decode()


def new_opaque_token() -> str:
    """256 random bits, URL-safe: refresh tokens and reset tokens."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """What the database keeps of an opaque token. A plain SHA-256 is enough: the token has 256
    bits of entropy, so nobody can search for it from its digest."""
    return hashlib.sha256(token.encode()).digest()
