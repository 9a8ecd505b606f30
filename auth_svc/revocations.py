"""Sessions auth_svc revokes, told to every verifier (mesh.revocations) as soon as the revocation
commits. The outbox holds the same promise, written in the revocation's own transaction, so that a
Redis that missed the first write gets it from the relay later."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import structlog
from redis.exceptions import RedisError

from mesh.outbox import Message
from mesh.revocations import RevokedSessions
from mesh.tokens import LEEWAY

log = structlog.get_logger("auth_svc.revocations")
_MARGIN = 60


class SessionRevocations:
    def __init__(self, revoked: RevokedSessions, access_ttl: float) -> None:
        self._revoked = revoked
        # As long as the last access token of a revoked session could still verify.
        self._remembered = math.ceil(access_ttl + LEEWAY) + _MARGIN

    async def now(self, sessions: Sequence[uuid.UUID]) -> None:
        try:
            await self._revoked.revoke(sessions, self._remembered)
        except RedisError:
            log.warning("revoked sessions not yet told to the verifiers; the outbox will", sessions=len(sessions))

    async def deliver(self, message: Message) -> None:
        """The outbox's receiver of the same promise."""
        await self._revoked.revoke(message.payload["sessions"], self._remembered)
