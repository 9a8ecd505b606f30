"""The audit log's rows: appended one at a time at the end of the chain, settled once, listed
newest first, and found unsettled by the sweep.

Appends take a transaction-scoped advisory lock, so entries get gapless sequence numbers in the
order they link, whatever the number of replicas; the lock is held only while one row is written.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from invitemesh.admin.v1 import admin_service_pb2 as pb
from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from admin_svc.models import audit_log
from mesh.audit_chain import GENESIS

_CHAIN_LOCK = 0x61756469  # "audi": one lock for the one chain
PENDING = pb.AUDIT_OUTCOME_PENDING


@dataclass(frozen=True)
class Draft:
    """An entry before it has its place in the chain."""

    id: uuid.UUID
    actor: str
    action: str
    target: str
    request_json: str
    request_id: str
    create_time: datetime.datetime


@dataclass(frozen=True)
class Seal:
    """What the chain adds to a draft at its place: its digest and admin_svc's signature."""

    digest: bytes
    key_id: str
    signature: bytes


@dataclass(frozen=True)
class Outcome:
    outcome: int
    reason: str
    time: datetime.datetime
    key_id: str
    signature: bytes


Sealing = Callable[[Draft, int, bytes], Seal]
"""Seals a draft at (sequence, previous digest)."""


class AuditStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(
        self,
        connection: AsyncConnection,
        draft: Draft,
        sealing: Sealing,
        outcome: Callable[[Seal], Outcome] | None,
    ) -> None:
        """Writes `draft` at the end of the chain in the caller's transaction, settled at once
        when `outcome` is given (a function of the seal, for an outcome signed over it)."""
        await connection.execute(select(func.pg_advisory_xact_lock(_CHAIN_LOCK)))
        last = (
            await connection.execute(
                select(audit_log.c.sequence, audit_log.c.digest).order_by(audit_log.c.sequence.desc()).limit(1)
            )
        ).first()
        sequence, previous = (last.sequence + 1, last.digest) if last else (1, GENESIS)
        seal = sealing(draft, sequence, previous)
        settled = outcome(seal) if outcome else None
        values = {
            "sequence": sequence,
            "id": draft.id,
            "actor": draft.actor,
            "action": draft.action,
            "target": draft.target,
            "request_json": draft.request_json,
            "request_id": draft.request_id,
            "create_time": draft.create_time,
            "previous_digest": previous,
            "digest": seal.digest,
            "key_id": seal.key_id,
            "signature": seal.signature,
            **(_outcome_values(settled) if settled else {"outcome": PENDING}),
        }
        await connection.execute(insert(audit_log).values(values))

    async def settle(self, entry_id: uuid.UUID, outcome: Callable[[Row[Any]], Outcome]) -> bool:
        """Writes the outcome of a pending entry (computed from its row); False if it was settled
        already (by the sweep or another replica)."""
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    select(audit_log)
                    .where(audit_log.c.id == entry_id, audit_log.c.outcome == PENDING)
                    .with_for_update()
                )
            ).first()
            if row is None:
                return False
            await connection.execute(
                update(audit_log).where(audit_log.c.id == entry_id).values(_outcome_values(outcome(row)))
            )
        return True

    async def page(self, limit: int, before: int | None) -> list[Row[Any]]:
        """Entries newest first, from below sequence `before`."""
        query = select(audit_log).order_by(audit_log.c.sequence.desc()).limit(limit)
        if before is not None:
            query = query.where(audit_log.c.sequence < before)
        async with self._engine.connect() as connection:
            return list((await connection.execute(query)).all())

    async def oldest_first(self, limit: int, after: int) -> list[Row[Any]]:
        """Entries in chain order, from above sequence `after`."""
        query = select(audit_log).where(audit_log.c.sequence > after).order_by(audit_log.c.sequence).limit(limit)
        async with self._engine.connect() as connection:
            return list((await connection.execute(query)).all())

    async def unsettled(self, older_than: datetime.datetime, limit: int = 100) -> list[Row[Any]]:
        query = (
            select(audit_log)
            .where(audit_log.c.outcome == PENDING, audit_log.c.create_time < older_than)
            .order_by(audit_log.c.create_time)
            .limit(limit)
        )
        async with self._engine.connect() as connection:
            return list((await connection.execute(query)).all())


def _outcome_values(outcome: Outcome) -> dict[str, object]:
    return {
        "outcome": outcome.outcome,
        "outcome_reason": outcome.reason,
        "outcome_time": outcome.time,
        "outcome_key_id": outcome.key_id,
        "outcome_signature": outcome.signature,
    }
