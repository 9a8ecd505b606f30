"""The waitlist over real gRPC, on a database and a Redis of each test's own (a release takes the
first people of the whole list): joins that tell nothing, confirmations through the private link,
places that referrals move, the rules that keep fake referrals from counting, releases exact
under two admins at once, places that stay right under hundreds of concurrent joins, and
campaigns that keep invitations out by themselves."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from invite_svc.sealing import WaitlistLinks
from invite_svc.server import add_servicers
from invite_svc.settings import InviteSettings
from invite_svc.store.places import Place, Places
from mesh.channels import open_channel
from mesh.errors import error_info, field_violations
from mesh.jobs import PeriodicJob
from mesh.keys import load_kek
from mesh.mailing import SEND_EMAIL
from mesh.migrate import upgrade
from mesh.redis import KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.sealing import Sealer, derive_key
from mesh.server import ServiceRuntime
from mesh.services import INVITE
from meshctl.embedded import EmbeddedRedis
from tests.conftest import eventually
from tests.integration.conftest import from_the_edge
from tests.integration.mesh.trust_fixtures import Trust, make_trust

PLACES_PER_REFERRAL = 2
REFERRAL_CAP = 3


@pytest.fixture
async def own_database_url(database_url: str) -> AsyncIterator[str]:
    """A database of this test's own on the session's server, with the invite schema."""
    name = f"waitlist_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url.rsplit("/", 1)[0] + f"/{name}"
    await asyncio.to_thread(upgrade, INVITE, url)
    yield url
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@dataclass
class Waitlist:
    trust: Trust
    database: asyncpg.Pool
    admin: invite_service_pb2_grpc.InviteServiceAsyncStub
    anyone: invite_service_pb2_grpc.InviteServiceAsyncStub
    auth: invite_service_pb2_grpc.InviteServiceAsyncStub
    links: WaitlistLinks
    places: Places
    top_up: Callable[[], Awaitable[object]]
    """One run of the server's top-up job, whose own runs are an hour apart here."""

    async def join(self, email: str, referral_code: str = "", client: str = "198.51.100.1") -> None:
        request = pb.JoinWaitlistRequest(email=email, referral_code=referral_code)
        await self.anyone.JoinWaitlist(request, metadata=from_the_edge(self.trust.settings, client))

    async def token(self, email: str) -> str:
        entry_id = await self.database.fetchval("SELECT id FROM invite.waitlist WHERE canonical_email = $1", email)
        assert entry_id is not None, f"{email} is not on the list"
        return self.links.token(entry_id)

    async def confirm(self, email: str) -> pb.MyWaitlistEntry:
        request = pb.ConfirmWaitlistEntryRequest(token=await self.token(email))
        return (await self.anyone.ConfirmWaitlistEntry(request, metadata=self._edge())).entry

    async def mine(self, email: str) -> pb.MyWaitlistEntry:
        request = pb.GetMyWaitlistEntryRequest(token=await self.token(email))
        return (await self.anyone.GetMyWaitlistEntry(request, metadata=self._edge())).entry

    async def joined_and_confirmed(self, email: str, referral_code: str = "", client: str = "198.51.100.1") -> str:
        await self.join(email, referral_code, client)
        return (await self.confirm(email)).referral_code

    async def fetch(self, query: str, *args: object) -> list[asyncpg.Record]:
        return list(await self.database.fetch(query, *args))

    def _edge(self) -> tuple[tuple[str, str], ...]:
        return from_the_edge(self.trust.settings, "198.51.100.9")


@pytest.fixture
async def waitlist(tmp_path: Path, own_database_url: str, own_redis: EmbeddedRedis) -> AsyncIterator[Waitlist]:
    trust = make_trust(tmp_path, own_database_url, own_redis.url).with_settings(
        invite_waitlist_places_per_referral=PLACES_PER_REFERRAL,
        invite_waitlist_referral_cap=REFERRAL_CAP,
        invite_waitlist_joins_per_hour=100_000,
        invite_waitlist_disposable_domains=["throwaway.example"],
        # The relay finds no mail_svc here; the mails it promised are counted in its table.
        outbox_backoff_base=60.0,
        invite_waitlist_catch_up_interval=0.2,
        invite_waitlist_top_up_interval=3600.0,
    )
    jobs: dict[str, PeriodicJob] = {}

    def add_keeping_jobs(server: grpc.aio.Server, runtime: ServiceRuntime, own: InviteSettings) -> None:
        add_servicers(server, runtime, own)
        jobs.update((job.name, job) for job in runtime.jobs)

    server = trust.server(INVITE, add_keeping_jobs)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    redis = create_redis(trust.settings)
    pipe = RedisPipe(redis)
    async with (
        asyncpg.create_pool(own_database_url, min_size=1, max_size=4) as database,
        open_channel(target, trust.settings, "admin_svc", trust.signer("admin_svc")) as admin,
        open_channel(target, trust.settings) as anyone,
        open_channel(target, trust.settings, "auth_svc", trust.signer("auth_svc")) as auth,
    ):
        yield Waitlist(
            trust,
            database,
            invite_service_pb2_grpc.InviteServiceStub(admin),
            invite_service_pb2_grpc.InviteServiceStub(anyone),
            invite_service_pb2_grpc.InviteServiceStub(auth),
            WaitlistLinks(load_kek(trust.settings)),
            Places(redis, pipe, KeySpace(INVITE.redis_prefix)),
            jobs["waitlist-top-up"].work,
        )
    await server.stop(0)
    await pipe.close()
    await redis.aclose()


def _someone(name: str, domain: str = "example.com") -> str:
    return f"{name}.{uuid.uuid4().hex[:6]}@{domain}"


async def _mails_to(waitlist: Waitlist, email: str) -> int:
    rows = await waitlist.fetch(
        "SELECT count(*) AS n FROM invite.outbox o JOIN invite.waitlist w ON o.aggregate = 'waitlist:' || w.id"
        " WHERE w.canonical_email = $1",
        email,
    )
    return int(rows[0]["n"])


async def test_joining_answers_the_same_for_a_new_and_a_known_email_and_mails_the_owner_each_time(
    waitlist: Waitlist,
) -> None:
    email = _someone("ada")
    request = pb.JoinWaitlistRequest(email=email)
    edge = from_the_edge(waitlist.trust.settings, "198.51.100.1")

    first = await waitlist.anyone.JoinWaitlist(request, metadata=edge)
    again = await waitlist.anyone.JoinWaitlist(request, metadata=edge)
    tagged = await waitlist.anyone.JoinWaitlist(pb.JoinWaitlistRequest(email=email.replace("@", "+x@")), metadata=edge)

    assert first == again == tagged == pb.JoinWaitlistResponse()
    assert len(await waitlist.fetch("SELECT 1 FROM invite.waitlist WHERE canonical_email = $1", email)) == 1
    # Three mails an hour per email (the default budget): the same answer, and no fourth mail.
    await waitlist.anyone.JoinWaitlist(request, metadata=edge)
    assert await _mails_to(waitlist, email) == 3
    unconfirmed = await waitlist.mine(email)
    assert (unconfirmed.state, unconfirmed.position) == (pb.WAITLIST_ENTRY_STATE_UNCONFIRMED, 0)


async def test_bad_input_is_refused_field_by_field_and_writes_nothing(waitlist: Waitlist) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await waitlist.join("not an email", referral_code="no spaces allowed")
    forged = pb.GetMyWaitlistEntryRequest(token=waitlist.links.token(uuid.uuid4())[:-2] + "AA")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await waitlist.anyone.GetMyWaitlistEntry(forged)
    with pytest.raises(grpc.aio.AioRpcError) as nobody:
        await waitlist.anyone.ConfirmWaitlistEntry(
            pb.ConfirmWaitlistEntryRequest(token=waitlist.links.token(uuid.uuid4()))
        )

    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(refused.value)} == {"email", "referral_code"}
    assert await waitlist.fetch("SELECT 1 FROM invite.waitlist") == []
    for refusal in (unknown.value, nobody.value):
        info = error_info(refusal)
        assert refusal.code() is grpc.StatusCode.UNAUTHENTICATED
        assert info is not None and info.reason == "WAITLIST_LINK_INVALID"


async def test_places_follow_join_order_and_a_counted_referral_moves_its_referrer_up(waitlist: Waitlist) -> None:
    people = [_someone(f"p{index}") for index in range(6)]
    codes = [
        await waitlist.joined_and_confirmed(email, client=f"198.51.100.{index + 10}")
        for index, email in enumerate(people)
    ]
    before = [await waitlist.mine(email) for email in people]

    friend = _someone("friend")
    await waitlist.joined_and_confirmed(friend, referral_code=codes[5], client="203.0.113.7")
    again = await waitlist.confirm(friend)
    after = await waitlist.mine(people[5])

    assert [entry.position for entry in before] == [1, 2, 3, 4, 5, 6]
    assert {entry.waiting for entry in before} == {6}
    assert before[0].people_ahead == 0 and before[5].people_ahead == 5
    assert before[5].referral_url.endswith(f"/waitlist?ref={codes[5]}")
    # Two places up, once, however often the friend confirms.
    assert (after.position, after.referrals, after.waiting) == (6 - PLACES_PER_REFERRAL, 1, 7)
    assert again.position == 7
    assert [(await waitlist.mine(email)).position for email in people[3:5]] == [5, 6]


async def test_referrals_that_look_like_one_persons_fake_addresses_do_not_count(waitlist: Waitlist) -> None:
    referrer = _someone("referrer")
    code = await waitlist.joined_and_confirmed(referrer, client="198.51.100.50")

    await waitlist.joined_and_confirmed(_someone("same-client"), code, client="198.51.100.50")
    await waitlist.joined_and_confirmed(_someone("burner", "mailinator.com"), code, client="203.0.113.1")
    await waitlist.joined_and_confirmed(_someone("sub", "x.throwaway.example"), code, client="203.0.113.2")
    await waitlist.join(_someone("never-confirmed"), code, client="203.0.113.3")
    counted_once = [_someone(f"friend{i}") for i in range(2)]
    for email in counted_once:  # two friends on one address: only the first counts today
        await waitlist.joined_and_confirmed(email, code, client="203.0.113.4")
    for index in range(4):  # over the cap, nobody counts
        await waitlist.joined_and_confirmed(_someone(f"more{index}"), code, client=f"203.0.113.{20 + index}")

    counted = await waitlist.mine(referrer)
    assert counted.referrals == REFERRAL_CAP
    flags = await waitlist.fetch("SELECT canonical_email FROM invite.waitlist w WHERE referral_counted ORDER BY seq")
    assert next(row["canonical_email"] for row in flags) == counted_once[0]
    assert counted_once[1] not in {row["canonical_email"] for row in flags}


async def test_hundreds_of_concurrent_joins_and_referrals_leave_every_place_distinct_and_each_referral_counted_once(
    waitlist: Waitlist,
) -> None:
    referrers = [_someone(f"r{index}") for index in range(10)]
    codes = [
        await waitlist.joined_and_confirmed(email, client=f"198.51.100.{index}")
        for index, email in enumerate(referrers)
    ]
    friends = [
        (_someone(f"f{index}"), codes[index % len(codes)], f"10.0.{index // 200}.{index % 200}") for index in range(300)
    ]

    async def arrive(email: str, code: str, client: str) -> None:
        await waitlist.join(email, code, client)
        # Two tabs confirm at once; and the join is sent twice.
        await asyncio.gather(waitlist.confirm(email), waitlist.confirm(email), waitlist.join(email, code, client))

    await asyncio.gather(*(arrive(*friend) for friend in friends))
    everyone = [*referrers, *(email for email, _, _ in friends)]
    mine = await asyncio.gather(*(waitlist.mine(email) for email in everyone))
    rows = await waitlist.fetch(
        "SELECT canonical_email, referrals, (SELECT count(*) FROM invite.waitlist r WHERE r.referrer_id = w.id"
        " AND r.referral_counted) AS counted FROM invite.waitlist w ORDER BY rank_key, seq"
    )

    assert sorted(entry.position for entry in mine) == list(range(1, len(everyone) + 1))
    by_email = dict(zip(everyone, mine, strict=True))
    assert [by_email[row["canonical_email"]].position for row in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert row["referrals"] == row["counted"] <= REFERRAL_CAP
    assert sum(by_email[email].referrals for email in referrers) == len(referrers) * REFERRAL_CAP


async def test_two_admins_releasing_at_once_invite_different_people_and_a_retried_release_mails_nobody_again(
    waitlist: Waitlist,
) -> None:
    people = [_someone(f"w{index}") for index in range(12)]
    for email in people:
        await waitlist.joined_and_confirmed(email)
    first, second = (
        pb.ReleaseWaitlistPlacesRequest(count=5, request_id=uuid.uuid4().hex, admin_id=str(uuid.uuid4()))
        for _ in range(2)
    )

    answers = await asyncio.gather(
        waitlist.admin.ReleaseWaitlistPlaces(first), waitlist.admin.ReleaseWaitlistPlaces(second)
    )
    retried = await waitlist.admin.ReleaseWaitlistPlaces(first)
    invited = [entry.email for answer in answers for entry in answer.entries]
    remaining = [await waitlist.mine(email) for email in people[10:]]

    assert sorted(invited, key=people.index) == people[:10]
    assert [entry.email for entry in retried.entries] == [entry.email for entry in answers[0].entries]
    assert {entry.state for answer in answers for entry in answer.entries} == {pb.WAITLIST_ENTRY_STATE_INVITED}
    for email in people[:10]:
        assert await _mails_to(waitlist, email) == 2  # the link at joining, the invitation once
    assert [(entry.position, entry.waiting) for entry in remaining] == [(1, 2), (2, 2)]
    codes = await waitlist.fetch(
        "SELECT c.max_uses, c.owner_admin_id FROM invite.waitlist w JOIN invite.codes c ON c.id = w.code_id"
    )
    assert len(codes) == 10 and {row["max_uses"] for row in codes} == {1}


async def test_places_are_answered_from_the_database_while_the_index_is_lost_and_then_it_is_rebuilt(
    waitlist: Waitlist,
) -> None:
    people = [_someone(f"x{index}") for index in range(5)]
    for email in people:
        await waitlist.joined_and_confirmed(email)
    moved = await waitlist.admin.MoveWaitlistEntry(
        pb.MoveWaitlistEntryRequest(id=await _id(waitlist, people[4]), places=3)
    )
    redis = create_redis(waitlist.trust.settings)
    try:
        await redis.flushall()  # the index and the mark of its last catch-up, as a Redis that lost its data
        from_the_table = [(await waitlist.mine(email)).position for email in people]

        async def rebuilt() -> bool:
            return await waitlist.places.size() == len(people)

        await eventually(rebuilt, what="the places index rebuilt")
        from_the_index = [await waitlist.places.place(seq) for seq in await _seqs(waitlist, people)]
    finally:
        await redis.aclose()

    assert moved.entry.position == 2
    assert from_the_table == [1, 3, 4, 5, 2]
    assert [found[0] + 1 for found in from_the_index if found] == from_the_table


async def test_a_rebuild_keeps_the_places_confirmed_while_it_read_and_until_it_is_done_places_are_counted_elsewhere(
    waitlist: Waitlist,
) -> None:
    """The index's own rules, on keys of this test's own (the server's catch-up job leaves them
    alone): a rebuild swaps in what it read, which drops the writes of confirmations that came
    meanwhile, so it writes those again before the index answers any place."""
    redis = create_redis(waitlist.trust.settings)
    pipe = RedisPipe(redis)
    places = Places(redis, pipe, KeySpace(f"rebuild-{uuid.uuid4().hex[:8]}"))
    moment = datetime.datetime.now(datetime.UTC)
    while_rebuilding: list[tuple[int, int] | None] = []

    async def everyone_as_read() -> AsyncIterator[list[Place]]:
        yield [(1, 2), (2, 4)]
        # The third person confirms after the read: their write lands in the set the swap replaces.
        await places.joined((3, 6))
        while_rebuilding.append(await places.place(3))

    async def changed_since(since: datetime.datetime) -> AsyncIterator[tuple[list[Place], list[int]]]:
        assert since == moment
        yield [(3, 6)], []

    try:
        rebuilt = await places.rebuild(everyone_as_read(), changed_since, moment)
        after = [await places.place(seq) for seq in (1, 2, 3)]
        again = await places.rebuild(everyone_as_read(), changed_since, moment)
    finally:
        await pipe.close()
        await redis.aclose()

    assert while_rebuilding == [None]  # not caught up: the place is counted in PostgreSQL
    assert rebuilt and after == [(0, 3), (1, 3), (2, 3)]
    assert not again  # caught up already: a second replica's rebuild leaves it


async def _id(waitlist: Waitlist, email: str) -> str:
    rows = await waitlist.fetch("SELECT id FROM invite.waitlist WHERE canonical_email = $1", email)
    return str(rows[0]["id"])


async def _seqs(waitlist: Waitlist, emails: list[str]) -> list[int]:
    rows = await waitlist.fetch(
        "SELECT canonical_email, seq FROM invite.waitlist WHERE canonical_email = ANY($1)", emails
    )
    seq_of = {row["canonical_email"]: row["seq"] for row in rows}
    return [seq_of[email] for email in emails]


async def test_a_campaigns_top_up_keeps_that_many_invitations_out_within_its_room_and_top_ups_at_once_never_overshoot(
    waitlist: Waitlist,
) -> None:
    people = [_someone(f"t{index}") for index in range(8)]
    for email in people:
        await waitlist.joined_and_confirmed(email)
    await waitlist.join(_someone("unconfirmed"))
    made = pb.Campaign(display_name=f"topped {uuid.uuid4().hex[:6]}", capacity=4, waitlist_top_up=2)
    campaign = (await waitlist.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=made))).campaign

    await asyncio.gather(*(waitlist.top_up() for _ in range(8)))  # as replicas' jobs at once
    first = await _invited(waitlist)
    await waitlist.top_up()
    unchanged = await _invited(waitlist)
    await _redeem(waitlist, people[0])  # one invitation no longer out: the next person is invited
    await waitlist.top_up()
    after_one = await _invited(waitlist)
    await _redeem(waitlist, people[1])
    await waitlist.top_up()
    after_two = await _invited(waitlist)
    # Three spots taken and one invitation out of four: no room for another.
    await _redeem(waitlist, people[2])
    await waitlist.top_up()
    at_capacity = await _invited(waitlist)

    assert campaign.waitlist_top_up == 2
    assert first == unchanged == people[:2]
    assert after_one == people[:3]
    assert after_two == people[:4]
    assert at_capacity == people[:4]
    for email in people[:4]:
        assert await _mails_to(waitlist, email) == 2  # the link at joining, the invitation once
    codes = await waitlist.fetch(
        "SELECT c.campaign_id, c.max_uses FROM invite.waitlist w JOIN invite.codes c ON c.id = w.code_id"
    )
    assert {(str(row["campaign_id"]), row["max_uses"]) for row in codes} == {(campaign.id, 1)}


async def test_a_campaigns_top_up_is_changed_by_its_own_field_only_and_a_top_up_of_zero_invites_nobody(
    waitlist: Waitlist,
) -> None:
    people = [_someone(f"u{index}") for index in range(3)]
    for email in people:
        await waitlist.joined_and_confirmed(email)
    made = pb.Campaign(display_name=f"later {uuid.uuid4().hex[:6]}")
    campaign = (await waitlist.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=made))).campaign
    refusals = []
    for bad in (
        pb.UpdateCampaignRequest(campaign=pb.Campaign(id=campaign.id, waitlist_top_up=-1)),
        pb.UpdateCampaignRequest(
            campaign=pb.Campaign(id=campaign.id, capacity=1), update_mask=FieldMask(paths=["capacity"])
        ),
        pb.UpdateCampaignRequest(campaign=pb.Campaign(waitlist_top_up=1)),
        pb.UpdateCampaignRequest(campaign=pb.Campaign(id=str(uuid.uuid4()), waitlist_top_up=1)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await waitlist.admin.UpdateCampaign(bad)
        refusals.append(refused.value)
    await waitlist.top_up()
    before = await _invited(waitlist)

    set_to_one = pb.UpdateCampaignRequest(
        campaign=pb.Campaign(id=campaign.id, waitlist_top_up=1), update_mask=FieldMask(paths=["waitlist_top_up"])
    )
    updated = (await waitlist.admin.UpdateCampaign(set_to_one)).campaign
    await waitlist.top_up()
    after = await _invited(waitlist)
    # No mask: the one field that changes.
    off = pb.UpdateCampaignRequest(campaign=pb.Campaign(id=campaign.id, waitlist_top_up=0))
    turned_off = (await waitlist.admin.UpdateCampaign(off)).campaign
    await waitlist.admin.DisableCode(pb.DisableCodeRequest(code=await _invitation_code(waitlist, people[0])))
    await waitlist.top_up()
    listed = (await waitlist.admin.ListCampaigns(pb.ListCampaignsRequest())).campaigns

    assert [(error.code(), {v.field for v in field_violations(error)}) for error in refusals[:3]] == [
        (grpc.StatusCode.INVALID_ARGUMENT, {"campaign.waitlist_top_up"}),
        (grpc.StatusCode.INVALID_ARGUMENT, {"update_mask"}),
        (grpc.StatusCode.INVALID_ARGUMENT, {"campaign.id"}),
    ]
    assert refusals[3].code() == grpc.StatusCode.NOT_FOUND
    assert (info := error_info(refusals[3])) is not None and info.reason == "INVITE_CAMPAIGN_NOT_FOUND"
    assert before == []
    assert (updated.id, updated.display_name, updated.waitlist_top_up) == (campaign.id, made.display_name, 1)
    assert after == people[:1]
    # Off: a disabled invitation is no longer out, and still nobody more is invited.
    assert turned_off.waitlist_top_up == 0 and await _invited(waitlist) == people[:1]
    assert [c.waitlist_top_up for c in listed if c.id == campaign.id] == [0]


async def _invited(waitlist: Waitlist) -> list[str]:
    rows = await waitlist.fetch("SELECT canonical_email FROM invite.waitlist WHERE state = 3 ORDER BY rank_key, seq")
    return [row["canonical_email"] for row in rows]


async def _invitation_code(waitlist: Waitlist, email: str) -> str:
    """The code the invitation mail to `email` carries, read from the outbox as its relay would."""
    rows = await waitlist.fetch(
        "SELECT o.id, o.payload FROM invite.outbox o JOIN invite.waitlist w ON o.aggregate = 'waitlist:' || w.id"
        " WHERE w.canonical_email = $1 AND o.kind = $2",
        email,
        SEND_EMAIL,
    )
    sealer = Sealer(derive_key(load_kek(waitlist.trust.settings), "invite outbox seal v1"))
    payloads = [json.loads(sealer.unseal(row["id"].bytes, row["payload"])) for row in rows]
    (code,) = [payload["variables"]["code"] for payload in payloads if "code" in payload["variables"]]
    return str(code)


async def _redeem(waitlist: Waitlist, email: str) -> None:
    held = await waitlist.auth.HoldCode(
        pb.HoldCodeRequest(code=await _invitation_code(waitlist, email), email=email, request_id=uuid.uuid4().hex)
    )
    await waitlist.auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.hold.id, user_id=str(uuid.uuid4())))
