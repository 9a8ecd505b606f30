"""The waitlist from a person's join to the invitation an admin's release mails them, over every
service for real: the private link mailed, the place confirmed, a release audited and mailed once
however often it is asked, the mailed code redeemed; a campaign's top-up inviting people by
itself; and an admin's moves and removals."""

from __future__ import annotations

import datetime
import re
import uuid

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb

from mesh.errors import error_info
from tests.conftest import eventually
from tests.integration.admin_svc.conftest import new_admin, signed_in
from tests.integration.auth_svc.conftest import Stack, someone
from tests.integration.conftest import fetchval, from_the_edge

_CODE = re.compile(r"\b([2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z])\b")


async def _confirmed(stack: Stack, email: str, client: str = "198.51.100.30") -> invite_pb.MyWaitlistEntry:
    metadata = from_the_edge(stack.settings, client)
    await stack.invites_in_public.JoinWaitlist(invite_pb.JoinWaitlistRequest(email=email), metadata=metadata)
    token = await stack.link_token(email)
    confirm = invite_pb.ConfirmWaitlistEntryRequest(token=token)
    return (await stack.invites_in_public.ConfirmWaitlistEntry(confirm, metadata=metadata)).entry


async def _audited(stack: Stack, action: str) -> list[pb.AuditLogEntry]:
    page = await stack.admin_as("meshctl").ListAuditLogEntries(pb.ListAuditLogEntriesRequest(page_size=100))
    return [entry for entry in page.entries if entry.action == action]


async def test_a_release_mails_each_person_a_code_once_however_often_it_is_asked_and_the_code_works(
    stack: Stack,
) -> None:
    operator = await new_admin(stack, "operator")
    admin = stack.admin(await signed_in(stack, operator))
    people = [someone() for _ in range(3)]
    places = [await _confirmed(stack, email) for email in people]
    # A database given by MESH_DATABASE_URL holds other runs' people, ahead of these: all go.
    waiting = (await admin.GetWaitlistStats(pb.GetWaitlistStatsRequest())).stats.waiting
    release = pb.ReleaseWaitlistPlacesRequest(count=int(waiting), request_id=uuid.uuid4().hex)

    released, again = await admin.ReleaseWaitlistPlaces(release), await admin.ReleaseWaitlistPlaces(release)
    invitations = [await stack.mail_to(email, count=2) for email in people]

    async def all_sent() -> bool:
        pending = await fetchval(
            stack.database_url, "SELECT count(*) FROM invite.outbox WHERE deliver_time IS NULL AND give_up_time IS NULL"
        )
        return pending == 0

    await eventually(all_sent, what="the invite outbox delivered")
    codes = [_CODE.findall(mails[-1].text) for mails in invitations]
    mailed = [len(stack.received_by(email)) for email in people]
    registered = await stack.register(people[0], codes[0][0])
    verified = await stack.verify(people[0], registered)
    after = await stack.invites_in_public.GetMyWaitlistEntry(
        invite_pb.GetMyWaitlistEntryRequest(token=await stack.link_token(people[1]))
    )
    audited = [
        entry for entry in await _audited(stack, "ReleaseWaitlistPlaces") if entry.request_id == release.request_id
    ]

    assert [place.position for place in places][-1] >= 3
    assert [entry.id for entry in again.entries] == [entry.id for entry in released.entries]
    assert [entry.email for entry in released.entries][-3:] == people
    assert {entry.state for entry in released.entries} == {invite_pb.WAITLIST_ENTRY_STATE_INVITED}
    assert mailed == [2, 2, 2]  # the link, the invitation
    assert all(len(found) == 1 for found in codes) and len({found[0] for found in codes}) == 3
    assert verified.user.email == people[0]
    assert after.entry.state == invite_pb.WAITLIST_ENTRY_STATE_INVITED and after.entry.position == 0
    assert audited and {entry.actor for entry in audited} == {f"admin:{operator.admin.id}"}


async def test_an_operators_top_up_is_audited_and_the_job_invites_the_next_people_as_far_as_the_campaign_has_room(
    stack: Stack,
) -> None:
    operator = await new_admin(stack, "operator")
    admin = stack.admin(await signed_in(stack, operator))
    # A database given by MESH_DATABASE_URL holds other runs' people: released first, so the
    # top-up takes these.
    if waiting := (await admin.GetWaitlistStats(pb.GetWaitlistStatsRequest())).stats.waiting:
        await admin.ReleaseWaitlistPlaces(pb.ReleaseWaitlistPlacesRequest(count=waiting, request_id=uuid.uuid4().hex))
    people = [someone() for _ in range(3)]
    for email in people:
        await _confirmed(stack, email)
    # Room for two, and closing by itself: a run cut short leaves nothing that invites for long.
    closes = Timestamp()
    closes.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10))
    made = invite_pb.Campaign(display_name=f"top-up {uuid.uuid4().hex[:8]}", capacity=2, end_time=closes)
    campaign = (await admin.CreateCampaign(pb.CreateCampaignRequest(campaign=made))).campaign
    top_up = pb.UpdateCampaignRequest(campaign=invite_pb.Campaign(id=campaign.id, waitlist_top_up=2))
    off = pb.UpdateCampaignRequest(campaign=invite_pb.Campaign(id=campaign.id, waitlist_top_up=0))
    try:
        updated = (await admin.UpdateCampaign(top_up)).campaign
        invitations = [await stack.mail_to(email, count=2) for email in people[:2]]
        third = await stack.invites_in_public.GetMyWaitlistEntry(
            invite_pb.GetMyWaitlistEntryRequest(token=await stack.link_token(people[2]))
        )
        mailed = [len(stack.received_by(email)) for email in people]
        codes = [_CODE.findall(mails[-1].text) for mails in invitations]
        verified = await stack.verify(people[0], await stack.register(people[0], codes[0][0]))
    finally:
        await admin.UpdateCampaign(off)
    listed = await admin.ListInvites(pb.ListInvitesRequest(campaign_id=campaign.id))
    audited = [entry for entry in await _audited(stack, "UpdateCampaign") if entry.target == campaign.id]

    assert updated.waitlist_top_up == 2
    assert all(len(found) == 1 for found in codes) and len({found[0] for found in codes}) == 2
    assert len(listed.codes) == 2  # the two invitations' codes, in the campaign
    assert verified.user.email == people[0]
    # Two invitations out of two places: the third waits, though the top-up asks for two out.
    assert third.entry.state == invite_pb.WAITLIST_ENTRY_STATE_WAITING and third.entry.position == 1
    assert mailed == [2, 2, 1]  # the links, the two invitations
    assert len(audited) == 2 and {entry.actor for entry in audited} == {f"admin:{operator.admin.id}"}


async def test_an_admin_moves_and_removes_people_and_every_change_is_audited(stack: Stack) -> None:
    operator = await new_admin(stack, "operator")
    admin = stack.admin(await signed_in(stack, operator))
    first, second, third = (someone() for _ in range(3))
    for email in (first, second, third):
        await _confirmed(stack, email)
    listed = await admin.ListWaitlistEntries(pb.ListWaitlistEntriesRequest(email_prefix=third))
    (entry,) = listed.entries

    moved = await admin.MoveWaitlistEntry(pb.MoveWaitlistEntryRequest(id=entry.id, places=1))
    moved_again = await admin.MoveWaitlistEntry(pb.MoveWaitlistEntryRequest(id=entry.id, places=1))
    second_listed = await admin.ListWaitlistEntries(pb.ListWaitlistEntriesRequest(email_prefix=second))
    removed = await admin.RemoveWaitlistEntry(pb.RemoveWaitlistEntryRequest(id=entry.id))
    with pytest.raises(grpc.aio.AioRpcError) as not_waiting:
        await admin.MoveWaitlistEntry(pb.MoveWaitlistEntryRequest(id=entry.id, places=2))
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await admin.RemoveWaitlistEntry(pb.RemoveWaitlistEntryRequest(id=str(uuid.uuid4())))

    assert listed.total_size == 1 and entry.email == third
    assert moved.entry.position == entry.position - 1 == moved_again.entry.position
    assert moved.entry.moved_places == 1
    assert second_listed.entries[0].position == entry.position
    assert removed.entry.state == invite_pb.WAITLIST_ENTRY_STATE_REMOVED
    assert not_waiting.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert (info := error_info(not_waiting.value)) is not None and info.reason == "WAITLIST_ENTRY_NOT_WAITING"
    assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
    assert {e.target for e in await _audited(stack, "MoveWaitlistEntry")} >= {entry.id}
    assert entry.id in {e.target for e in await _audited(stack, "RemoveWaitlistEntry")}
