"""Delivery events already applied, remembered in Redis for as long as their signature is accepted,
so that a replayed (or retried) event changes nothing the second time."""

from __future__ import annotations

import math

import structlog
from redis.exceptions import RedisError

from mail_svc.domain import EVENTS_UNAVAILABLE
from mail_svc.events import TOLERANCE
from mesh.errors import Unavailable
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

log = structlog.get_logger("mail_svc.replays")
# Both sides of the timestamp's window, and a little more for clocks.
_REMEMBERED = math.ceil(2 * TOLERANCE) + 60


class AppliedEvents:
    def __init__(self, pipe: RedisPipe, keys: KeySpace) -> None:
        self._pipe = pipe
        self._keys = keys

    async def first_sighting(self, event_id: str) -> bool:
        """True the first time an event is seen in its window. Without Redis no event can be told
        from a replay, so none is taken (the provider sends it again later)."""
        try:
            return await self._pipe.execute("SET", self._key(event_id), 1, "EX", _REMEMBERED, "NX") is not None
        except RedisError:
            raise Unavailable(EVENTS_UNAVAILABLE, "delivery events cannot be taken right now; send it again") from None

    async def forget(self, event_id: str) -> None:
        """For an event that was not applied after all."""
        try:
            await self._pipe.execute("DEL", self._key(event_id))
        except RedisError:
            log.warning("could not forget a delivery event that failed; a retry is taken for a replay until it lapses")

    def _key(self, event_id: str) -> str:
        return self._keys.tagged(event_id, "delivery-event")
