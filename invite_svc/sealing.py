"""Codes at rest: a keyed hash to find a code (HMAC-SHA256, unique index) and the code itself
sealed with AES-256-GCM so its owner and admins can see it. A database dump alone yields no
usable code. Both keys derive from the mesh KEK, each for its own purpose."""

from __future__ import annotations

import base64
import binascii
import hmac
import uuid

from mesh.sealing import Sealer, derive_key, keyed_hash

_MAC_BYTES = 16


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


class WaitlistLinks:
    """The token of a waitlist entry's private link: the entry's id and a keyed hash of it, so
    the link can be mailed again without storing it, and a token nobody was mailed is refused
    before any lookup. The client address an entry joined from is kept only as a keyed hash,
    which is all the referral rules compare."""

    def __init__(self, kek: bytes) -> None:
        self._token_key = derive_key(kek, "waitlist link v1")
        self._client_key = derive_key(kek, "waitlist client v1")

    def token(self, entry_id: uuid.UUID) -> str:
        mac = keyed_hash(self._token_key, entry_id.bytes)[:_MAC_BYTES]
        return base64.urlsafe_b64encode(entry_id.bytes + mac).decode().rstrip("=")

    def entry_of(self, token: str) -> uuid.UUID | None:
        """The entry a token was made for; None for anything else. Only the exact token passes:
        base64 decoding forgives stray characters and the spare bits of the last one, so the
        token is compared whole, not its decoded bytes."""
        token = token.strip()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (ValueError, binascii.Error):
            return None
        if len(raw) != 16 + _MAC_BYTES:
            return None
        entry_id = uuid.UUID(bytes=raw[:16])
        return entry_id if hmac.compare_digest(self.token(entry_id), token) else None

    def client(self, address: str) -> bytes:
        return keyed_hash(self._client_key, address.encode())[:16]
