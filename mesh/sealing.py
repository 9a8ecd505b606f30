"""Secrets at rest: keys derived from the mesh KEK (HKDF-SHA256, one per purpose) and AES-256-GCM
sealing bound to the record a value belongs to, so a sealed value moved to another record does
not open."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def derive_key(kek: bytes, purpose: str) -> bytes:
    """A 256-bit key for one purpose, for example `invite-code lookup v1`."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"invitemesh {purpose}".encode()).derive(kek)


def keyed_hash(key: bytes, value: bytes) -> bytes:
    return hmac.new(key, value, hashlib.sha256).digest()


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, record: bytes, plain: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, record)

    def unseal(self, record: bytes, sealed: bytes) -> bytes:
        """Raises cryptography's InvalidTag for a value sealed elsewhere or tampered with."""
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], record)
