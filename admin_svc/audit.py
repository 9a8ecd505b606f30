"""The audit log as admin_svc writes it: every change an admin makes and every sign-in, signed
into the hash chain of mesh.audit_chain with admin_svc's service key.

A change made here (an admin created or changed, a session ended) commits in the same
transaction as its entry. A change made by another service is recorded first: the entry commits
before the call, with the idempotency key the call uses, and its outcome is written after. A
process that dies in between leaves a PENDING entry, which the sweep settles by making the same
call again (admin_svc.operations), so no change is ever made without its entry, and no entry stays
open.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from admin_svc.domain import audited_request
from admin_svc.store.audit import AuditStore, Draft, Outcome, Seal
from mesh.access import Principal, current_principal
from mesh.audit_chain import ChainBreak, ChainWalk, entry_digest, outcome_digest
from mesh.errors import MeshError, Unavailable
from mesh.signing import CallSigner
from mesh.timestamps import optional_timestamp, timestamp

log = structlog.get_logger("admin_svc.audit")
T = TypeVar("T")


def actor_of(principal: Principal) -> str:
    """Who acts, as entries and signed calls name them: `admin:<id>`, or the operator tool."""
    return f"admin:{principal.id}" if principal.kind == "admin" else principal.id


def idempotency_key(actor: str, request_id: str, entry_id: uuid.UUID) -> str:
    """The key the downstream call of an entry uses: the admin's own request id (a repeat of the
    request is the same change), else the entry's id."""
    return f"{actor}:{request_id}" if request_id else f"audit:{entry_id}"


class Auditor:
    def __init__(self, engine: AsyncEngine, store: AuditStore, signer: CallSigner) -> None:
        self._engine = engine
        self._store = store
        self._signer = signer

    def transaction(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A transaction for a change made here and its entry, which commit together."""
        return self._engine.begin()

    async def record(
        self,
        connection: AsyncConnection,
        action: str,
        target: str,
        request: Message,
        failure: MeshError | None = None,
        actor: str | None = None,
    ) -> None:
        """A settled entry, in the caller's transaction (its change commits with it)."""
        draft = self._draft(action, target, request, actor)
        outcome = pb.AUDIT_OUTCOME_FAILED if failure else pb.AUDIT_OUTCOME_SUCCEEDED
        reason = failure.reason if failure else ""
        await self._store.append(
            connection, draft, self._seal, lambda seal: self._outcome(seal.digest, outcome, reason)
        )

    async def refused(
        self, action: str, target: str, request: Message, failure: MeshError, actor: str | None = None
    ) -> None:
        """An attempt that changed nothing: a failed sign-in, a refused request."""
        async with self._engine.begin() as connection:
            await self.record(connection, action, target, request, failure, actor)

    async def around(
        self, action: str, target: str, request: Message, request_id: str, call: Callable[[str], Awaitable[T]]
    ) -> T:
        """Commits a PENDING entry, makes `call` with its idempotency key, writes the outcome."""
        draft = self._draft(action, target, request, None, request_id)
        async with self._engine.begin() as connection:
            await self._store.append(connection, draft, self._seal, None)
        try:
            result = await call(idempotency_key(draft.actor, request_id, draft.id))
        except MeshError as error:
            # Unreachable: the call may or may not have landed, and the sweep will find out.
            if not isinstance(error, Unavailable):
                await self.settle(draft.id, error)
            raise
        await self.settle(draft.id, None)
        return result

    async def settle(self, entry_id: uuid.UUID, failure: MeshError | None) -> bool:
        outcome = pb.AUDIT_OUTCOME_FAILED if failure else pb.AUDIT_OUTCOME_SUCCEEDED
        reason = failure.reason if failure else ""
        return await self._store.settle(entry_id, lambda row: self._outcome(row.digest, outcome, reason))

    async def page(self, limit: int, before: int | None) -> list[pb.AuditLogEntry]:
        return [entry_of(row) for row in await self._store.page(limit, before)]

    async def verify(
        self, keys: Mapping[str, ec.EllipticCurvePublicKey], batch: int = 1000
    ) -> tuple[int, ChainBreak | None]:
        """Walks the whole chain: how many entries hold, and the first that does not."""
        walk, after = ChainWalk(keys), 0
        while rows := await self._store.oldest_first(batch, after):
            for row in rows:
                if (broken := walk.step(entry_of(row))) is not None:
                    return walk.verified, broken
            after = rows[-1].sequence
        return walk.verified, None

    async def unsettled(self, older_than: datetime.datetime) -> list[pb.AuditLogEntry]:
        return [entry_of(row) for row in await self._store.unsettled(older_than)]

    def _draft(self, action: str, target: str, request: Message, actor: str | None, request_id: str = "") -> Draft:
        return Draft(
            id=uuid.uuid4(),
            actor=actor if actor is not None else actor_of(current_principal.get()),
            action=action,
            target=target,
            request_json=audited_request(request),
            request_id=request_id,
            create_time=_now(),
        )

    def _seal(self, draft: Draft, sequence: int, previous: bytes) -> Seal:
        digest = entry_digest(
            pb.AuditLogEntry(
                sequence=sequence,
                id=str(draft.id),
                actor=draft.actor,
                action=draft.action,
                target=draft.target,
                request_json=draft.request_json,
                request_id=draft.request_id,
                create_time=timestamp(draft.create_time),
                previous_digest=previous,
            )
        )
        key_id, signature = self._signer.sign_digest(digest)
        return Seal(digest, key_id, signature)

    def _outcome(self, digest: bytes, outcome: pb.AuditOutcome.ValueType, reason: str) -> Outcome:
        moment = _now()
        settled = pb.AuditLogEntry(
            digest=digest, outcome=outcome, outcome_reason=reason, outcome_time=timestamp(moment)
        )
        key_id, signature = self._signer.sign_digest(outcome_digest(settled))
        return Outcome(outcome, reason, moment, key_id, signature)


def entry_of(row: Row[Any]) -> pb.AuditLogEntry:
    return pb.AuditLogEntry(
        id=str(row.id),
        actor=row.actor,
        action=row.action,
        target=row.target,
        create_time=timestamp(row.create_time),
        signature=row.signature,
        sequence=row.sequence,
        request_json=row.request_json,
        request_id=row.request_id,
        previous_digest=row.previous_digest,
        digest=row.digest,
        key_id=row.key_id,
        outcome=row.outcome,
        outcome_reason=row.outcome_reason,
        outcome_time=optional_timestamp(row.outcome_time),
        outcome_signature=row.outcome_signature,
        outcome_key_id=row.outcome_key_id,
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
