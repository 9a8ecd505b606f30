"""Codes at rest: a keyed hash to find a code (HMAC-SHA256, unique index) and the code itself
sealed with AES-256-GCM so its owner and admins can see it. A database dump alone yields no
usable code. Both keys derive from the mesh KEK, each for its own purpose."""

from __future__ import annotations

import uuid

from mesh.sealing import Sealer, derive_key, keyed_hash


class CodeSealer:
    def __init__(self, kek: bytes) -> None:
        self._lookup_key = derive_key(kek, "invite-code lookup v1")
        self._sealer = Sealer(derive_key(kek, "invite-code seal v1"))

    def lookup(self, code: str) -> bytes:
        """The keyed hash a canonical code is found by."""
        return keyed_hash(self._lookup_key, code.encode())

    def seal(self, code_id: uuid.UUID, code: str) -> bytes:
        return self._sealer.seal(code_id.bytes, code.encode())

    def unseal(self, code_id: uuid.UUID, sealed: bytes) -> str:
        return self._sealer.unseal(code_id.bytes, sealed).decode()
