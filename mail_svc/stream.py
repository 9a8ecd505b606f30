"""The delivery path: a Redis stream of emails to send, read by a consumer group of senders.

The email log in PostgreSQL is the source of truth; the stream only carries work. An entry names
the email and carries what a sender needs (recipient, sealed message), so sending needs no read
of the log; losing entries (a failed XADD, a Redis that lost its data) loses no email, because the
sweeper (mail_svc.jobs) enqueues pending emails again. A sender acknowledges and deletes an entry
once the log says what became of the email; entries of a consumer that died are claimed by
another after `reclaim_idle` (XAUTOCLAIM). Emails given up on are copied to `<stream>.dead`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

GROUP = "senders"


@dataclass(frozen=True)
class Job:
    email_id: uuid.UUID
    recipient: str
    sealed_message: bytes


@dataclass(frozen=True)
class Entry:
    entry_id: bytes
    job: Job


class MailStream:
    def __init__(self, redis: aioredis.Redis, name: str) -> None:
        self._redis = redis
        self.name = name
        self.dead_name = f"{name}.dead"

    async def ensure_group(self) -> None:
        try:
            # From the stream's start: entries added before any sender existed are work too.
            await self._redis.xgroup_create(self.name, GROUP, id="0", mkstream=True)
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def enqueue(self, jobs: Sequence[Job]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.xadd(self.name, {"id": str(job.email_id), "to": job.recipient, "message": job.sealed_message})
            await pipe.execute()

    async def read(self, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer; recreates the group if Redis lost it."""
        try:
            answer = await self._redis.xreadgroup(GROUP, consumer, {self.name: ">"}, count=count, block=block_ms)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure_group()
            return []
        streams = cast(list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]], answer or [])
        return [_entry(entry_id, fields) for _, entries in streams for entry_id, fields in entries]

    async def reclaim(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Entries another consumer took and left alone for `min_idle_ms`: now this consumer's."""
        try:
            answer = await self._redis.xautoclaim(self.name, GROUP, consumer, min_idle_ms, "0-0", count=count)
        except ResponseError as error:
            if "NOGROUP" not in str(error):
                raise
            await self.ensure_group()
            return []
        # Entries deleted meanwhile come back without fields.
        claimed = cast(list[tuple[bytes, dict[bytes, bytes] | None]], answer[1])
        return [_entry(entry_id, fields) for entry_id, fields in claimed if fields]

    async def done(self, entry_ids: Sequence[bytes]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.name, GROUP, *entry_ids)
            pipe.xdel(self.name, *entry_ids)
            await pipe.execute()

    async def bury(self, job: Job, error: str) -> None:
        """A copy of a failed email's particulars (never its message) on the dead-letter stream."""
        await self._redis.xadd(self.dead_name, {"id": str(job.email_id), "to": job.recipient, "error": error})


def _entry(entry_id: bytes, fields: dict[bytes, bytes]) -> Entry:
    job = Job(uuid.UUID(fields[b"id"].decode()), fields[b"to"].decode(), fields[b"message"])
    return Entry(entry_id, job)
