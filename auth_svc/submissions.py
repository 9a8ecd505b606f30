"""Double submits absorbed: a registration sent again (a double click, a client retry) while the
first is in flight, or just after it was answered, gets the first one's answer and does nothing
of its own: one hold, one email.

A short Redis `SET NX` on the canonical email marks the registration in flight with a
fingerprint of what was submitted, renewed while the registration runs, so that the mark of a
process killed mid-way lapses within seconds and a client's retry then runs on its own; the
first answer (a response or a refusal) replaces the mark for a few seconds. A different
submission for the same email waits for the one in flight and then runs on its own, so
registrations of one email run one at a time. Without Redis every submission runs: what must
never happen twice is enforced by the database, this only spares work and mail.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from typing import cast

import structlog
from google.rpc import status_pb2
from redis.exceptions import RedisError

from mesh.errors import MeshError, PassedOn
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

log = structlog.get_logger("auth_svc.submissions")
_IN_FLIGHT = b"in-flight"
_POLL = 0.02
_TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return false
"""


_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class FirstSubmission:
    def __init__(
        self,
        pipe: RedisPipe,
        keys: KeySpace,
        in_flight_ttl: float = 3.0,
        answer_ttl: float = 5.0,
        patience: float = 30.0,
    ) -> None:
        self._pipe = pipe
        self._keys = keys
        self._in_flight_ms = int(in_flight_ttl * 1000)
        self._answer_ms = int(answer_ttl * 1000)
        self._patience = patience

    async def answer(self, email: str, fingerprint: bytes, work: Callable[[], Awaitable[bytes]]) -> bytes:
        """Runs `work` (which answers a serialized response) unless the same submission is in
        flight or was just answered, in which case its answer is given again."""
        key = self._keys.tagged(email, "registration")
        mark = base64.b64encode(fingerprint) + b"|"
        deadline = time.monotonic() + self._patience
        try:
            while not await self._pipe.execute("SET", key, mark + _IN_FLIGHT, "PX", self._in_flight_ms, "NX"):
                seen = cast(bytes | None, await self._pipe.execute("GET", key))
                if seen is not None and not seen.endswith(b"|" + _IN_FLIGHT):
                    if seen.startswith(mark):
                        return _replayed(seen[len(mark) :])
                    # Another submission's answer: this one is new work, and takes the mark over.
                    # Rare (a changed submission just after an answer), so the script text goes each time.
                    if await self._pipe.execute(
                        "EVAL", _TAKE_OVER, 1, key, seen, mark + _IN_FLIGHT, self._in_flight_ms
                    ):
                        break
                if time.monotonic() > deadline:
                    log.warning("registration still in flight after waiting; running this one too")
                    return await work()
                await asyncio.sleep(_POLL)
        except RedisError:
            log.warning("double-submit guard unavailable; running the registration")
            return await work()
        renewing = asyncio.create_task(self._renew(key, mark + _IN_FLIGHT))
        try:
            answer = await work()
        except MeshError as refusal:
            renewing.cancel()
            await self._record(key, mark + b"E" + refusal.to_status().SerializeToString())
            raise
        except BaseException:
            renewing.cancel()
            await self._forget(key)
            raise
        renewing.cancel()
        await self._record(key, mark + b"R" + answer)
        return answer

    async def _renew(self, key: str, in_flight: bytes) -> None:
        while True:
            await asyncio.sleep(self._in_flight_ms / 3000)
            try:
                await self._pipe.execute("EVAL", _RENEW, 1, key, in_flight, self._in_flight_ms)
            except RedisError:
                log.warning("could not renew a registration mark; it may lapse while the registration runs")

    async def _record(self, key: str, value: bytes) -> None:
        try:
            await self._pipe.execute("SET", key, value, "PX", self._answer_ms)
        except RedisError:
            await self._forget(key)

    async def _forget(self, key: str) -> None:
        try:
            await self._pipe.execute("DEL", key)
        except RedisError:
            log.warning("could not clear a registration mark; it lapses on its own")


def _replayed(recorded: bytes) -> bytes:
    if recorded.startswith(b"E"):
        raise PassedOn(status_pb2.Status.FromString(recorded[1:]))
    return recorded[1:]
