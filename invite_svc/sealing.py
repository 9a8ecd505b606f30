"""Codes at rest: a keyed hash to find a code (HMAC-SHA256, unique index) and the code itself
sealed with AES-256-GCM so its owner and admins can see it. A database dump alone yields no
usable code. Both keys derive from the mesh KEK with HKDF, each for its own purpose."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE_BYTES = 12


def _derive(kek: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"invitemesh invite-code " + purpose).derive(kek)


class CodeSealer:
    def __init__(self, kek: bytes) -> None:
        self._lookup_key = _derive(kek, b"lookup v1")
        self._seal = AESGCM(_derive(kek, b"seal v1"))

    def lookup(self, code: str) -> bytes:
        """The keyed hash a canonical code is found by."""
        return hmac.new(self._lookup_key, code.encode(), hashlib.sha256).digest()

    def seal(self, code_id: uuid.UUID, code: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._seal.encrypt(nonce, code.encode(), code_id.bytes)

    def unseal(self, code_id: uuid.UUID, sealed: bytes) -> str:
        return self._seal.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], code_id.bytes).decode()
