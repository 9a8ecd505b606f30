"""Sessions revoked before their access tokens expire: sign-out, a password reset, a suspension, a
refresh token used twice. Every access token names its session (`sid`); the issuer of the tokens
writes each revoked session to Redis for as long as a token of it could still verify, and every
verifier looks there, so "signed out" means signed out everywhere at once rather than up to an
access token's lifetime later.

The keys live in the issuer's key space (`auth:{sid}:revoked` for user sessions). Without Redis
no verifier can tell a revoked session from a live one, so the check fails closed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from redis.exceptions import RedisError

from mesh.errors import Unavailable
from mesh.redis import Commands, KeySpace

SESSIONS_UNAVAILABLE = "SESSION_CHECK_UNAVAILABLE"


class RevokedSessions:
    def __init__(self, pipe: Commands, issuer_keys: KeySpace) -> None:
        self._pipe = pipe
        self._keys = issuer_keys

    async def revoke(self, sessions: Iterable[uuid.UUID | str], for_seconds: int) -> None:
        """Marks `sessions` revoked for `for_seconds` (no token of theirs lives longer); raises
        `RedisError` for the caller to retry."""
        commands = [("SET", self._key(str(session)), 1, "EX", for_seconds) for session in sessions]
        if commands:
            await self._pipe.execute_all(commands)

    async def revoked(self, session: str) -> bool:
        try:
            return bool(await self._pipe.execute("EXISTS", self._key(session)))
        except RedisError:
            raise Unavailable(SESSIONS_UNAVAILABLE, "sessions cannot be checked right now; try again shortly") from None

    def _key(self, session: str) -> str:
        return self._keys.tagged(session, "revoked")
