"""admin_svc's periodic work, safe in many replicas at once: audit entries left without an outcome
(a process died between an entry and its call) are settled by making the same idempotent call
again; ended sessions are told to the verifiers again while their tokens could live; the
access-token key ring is read again and rotated when due."""

from __future__ import annotations

import datetime
import uuid

import structlog
from google.protobuf import json_format, message_factory
from invitemesh.admin.v1 import admin_service_pb2 as pb

from admin_svc.audit import Auditor, idempotency_key
from admin_svc.operations import Change
from admin_svc.sessions import AdminSessions
from admin_svc.store.accounts import AccountStore
from mesh.errors import MeshError, Unavailable
from mesh.jobs import PeriodicJob
from mesh.signing import acting_for
from mesh.token_keys import StoredKeyRing

log = structlog.get_logger("admin_svc.jobs")
_METHODS = pb.DESCRIPTOR.services_by_name["AdminService"].methods_by_name


async def settle_unsettled(auditor: Auditor, changes: dict[str, Change], settle_after: float) -> int:
    """Settles every entry older than `settle_after` seconds that has no outcome; answers how many."""
    older_than = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=settle_after)
    settled = 0
    for entry in await auditor.unsettled(older_than):
        change = changes.get(entry.action)
        if change is None:
            log.error("an unsettled audit entry has no call to repeat", action=entry.action, entry=entry.id)
            continue
        request = message_factory.GetMessageClass(_METHODS[entry.action].input_type)()
        json_format.Parse(entry.request_json, request)
        failure: MeshError | None = None
        try:
            with acting_for(entry.actor):
                await change(request, idempotency_key(entry.actor, entry.request_id, uuid.UUID(entry.id)), entry.actor)
        except Unavailable:
            continue  # still unreachable: the next sweep tries again
        except MeshError as refused:
            failure = refused
        if await auditor.settle(uuid.UUID(entry.id), failure):
            settled += 1
            log.info("an unsettled audit entry was settled", action=entry.action, entry=entry.id, failed=bool(failure))
    return settled


def sweep_job(
    auditor: Auditor,
    changes: dict[str, Change],
    accounts: AccountStore,
    sessions: AdminSessions,
    keys: StoredKeyRing,
    settle_after: float,
    interval: float,
) -> PeriodicJob:
    async def sweep() -> None:
        await settle_unsettled(auditor, changes, settle_after)
        since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=sessions.remembered)
        if ended := await accounts.ended_since(since):
            await sessions.tell(ended)
        await keys.refresh()

    return PeriodicJob("admin-sweep", interval, sweep)
