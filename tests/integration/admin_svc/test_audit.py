"""The audit log: an entry for every change and every sign-in step, secrets left out; a hash chain
and signatures that show any row edited, deleted or reordered in PostgreSQL; and a change whose
process died between its entry and its call settled later by the same idempotent call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb

from mesh.audit_chain import ChainBreak, first_break
from mesh.keys import TrustFile
from tests.conftest import eventually
from tests.integration.admin_svc.conftest import new_admin, signed_in
from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal


@pytest.fixture
async def database(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(stack.database_url)
    # The chain is the database's, and tests before this one signed with keys of their own.
    await connection.execute("TRUNCATE admin.audit_log")
    yield connection
    await connection.close()


async def _entries(stack: Stack) -> list[pb.AuditLogEntry]:
    """The whole log, newest first, as meshctl reads it."""
    entries: list[pb.AuditLogEntry] = []
    token = ""
    while True:
        page = await stack.admin_as("meshctl").ListAuditLogEntries(
            pb.ListAuditLogEntriesRequest(page_size=2, page_token=token)
        )
        entries += page.entries
        if not (token := page.next_page_token):
            return entries


async def _first_break(stack: Stack) -> ChainBreak | None:
    keys = TrustFile.read(stack.trust.keystore.trust_path).signature_keys("admin_svc")
    return first_break(reversed(await _entries(stack)), keys)


async def _some_history(stack: Stack) -> None:
    owner = await new_admin(stack)
    token = await signed_in(stack, owner)
    await refusal(stack.admin().CreateSession(pb.CreateSessionRequest(email=owner.email, password="wrong password!")))
    batch = await stack.admin(token).CreateInviteBatch(pb.CreateInviteBatchRequest(count=2, max_uses=1))
    await stack.admin(token).DisableInvite(pb.DisableInviteRequest(code=batch.codes[0].code))


async def test_every_change_and_sign_in_step_is_an_entry_without_secrets(
    stack: Stack, database: asyncpg.Connection
) -> None:
    await _some_history(stack)

    entries = await _entries(stack)

    assert [entry.action for entry in reversed(entries)] == [
        "CreateAdmin",
        "VerifySessionMfa",
        "CreateSession",
        "CreateInviteBatch",
        "DisableInvite",
    ]
    outcomes = {entry.action: pb.AuditOutcome.Name(entry.outcome) for entry in entries}
    assert (
        outcomes["CreateSession"] == "AUDIT_OUTCOME_FAILED" and outcomes["DisableInvite"] == "AUDIT_OUTCOME_SUCCEEDED"
    )
    failed = next(entry for entry in entries if entry.action == "CreateSession")
    assert failed.outcome_reason == "INVALID_CREDENTIALS" and failed.actor.endswith("@example.com")
    admin_id = next(entry for entry in entries if entry.action == "VerifySessionMfa").actor
    assert {entry.actor for entry in entries if entry.action in ("CreateInviteBatch", "DisableInvite")} == {admin_id}
    for entry in entries:
        request = json.loads(entry.request_json)
        assert "password" not in request and "totpCode" not in request and "mfaToken" not in request
        assert PASSWORD not in entry.request_json
    assert await _first_break(stack) is None


@pytest.mark.parametrize(
    ("tampering", "broken_at"),
    [
        ("UPDATE admin.audit_log SET target = 'someone else' WHERE sequence = 4", 4),
        ("UPDATE admin.audit_log SET outcome = 2, outcome_reason = '' WHERE sequence = 3", 3),
        # Named at the entry found where the deleted one should be.
        ("DELETE FROM admin.audit_log WHERE sequence = 2", 3),
        (
            "UPDATE admin.audit_log SET sequence = -2 WHERE sequence = 2;"
            "UPDATE admin.audit_log SET sequence = 2 WHERE sequence = 3;"
            "UPDATE admin.audit_log SET sequence = 3 WHERE sequence = -2",
            2,
        ),
    ],
    ids=["edited", "outcome edited", "deleted", "reordered"],
)
async def test_a_row_edited_deleted_or_reordered_in_postgresql_is_found(
    stack: Stack, database: asyncpg.Connection, tampering: str, broken_at: int
) -> None:
    await _some_history(stack)
    assert await _first_break(stack) is None

    # admin_svc's own walk, which the console shows, finds what meshctl's finds (the viewer's
    # sign-in adds two entries to the five).
    viewer = await signed_in(stack, await new_admin(stack))
    intact = await stack.admin(viewer).VerifyAuditLog(pb.VerifyAuditLogRequest())
    await database.execute(tampering)
    found = await _first_break(stack)
    verified = await stack.admin(viewer).VerifyAuditLog(pb.VerifyAuditLogRequest())

    assert found is not None and found.sequence == broken_at, found
    assert (intact.verified_entries, intact.HasField("first_break")) == (7, False)
    assert verified.HasField("first_break")
    assert (verified.first_break.sequence, verified.first_break.reason) == (found.sequence, found.why)
    assert verified.verified_entries < broken_at


async def test_a_change_whose_process_died_before_its_call_is_settled_by_repeating_the_call(
    stack: Stack, database: asyncpg.Connection
) -> None:
    token = await signed_in(stack, await new_admin(stack))
    (code,) = await stack.mint()
    await stack.stop("invite_svc")

    refused = stack.admin(token).DisableInvite(pb.DisableInviteRequest(code=code))
    assert (await refusal(refused))[0] == grpc.StatusCode.UNAVAILABLE
    # The entry was committed before the call; the process dies before anything settles it.
    await stack.stop("admin_svc")
    pending = await database.fetchval("SELECT outcome FROM admin.audit_log WHERE action = 'DisableInvite'")
    assert pending == pb.AUDIT_OUTCOME_PENDING
    await stack.start("invite_svc")
    await stack.start("admin_svc")

    async def settled() -> bool:
        outcome = await database.fetchval("SELECT outcome FROM admin.audit_log WHERE action = 'DisableInvite'")
        return bool(outcome == pb.AUDIT_OUTCOME_SUCCEEDED)

    await eventually(settled, within=15, what="the sweep settling the entry")
    checked = await stack.invites.GetCode(invite_pb.GetCodeRequest(code=code))
    assert checked.code.state == invite_pb.CODE_STATE_DISABLED
    assert await _first_break(stack) is None
