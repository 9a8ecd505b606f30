"""Opaque tokens: refresh, reset and registration tokens, handed out once and kept as digests.
(Access tokens are signed by the key ring, mesh.token_keys.)"""

from __future__ import annotations

import hashlib
import secrets


def new_opaque_token() -> str:
    """256 random bits, URL-safe: refresh tokens and reset tokens."""
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> bytes:
    """What the database keeps of an opaque token. A plain SHA-256 is enough: the token has 256
    bits of entropy, so nobody can search for it from its digest."""
    return hashlib.sha256(token.encode()).digest()
