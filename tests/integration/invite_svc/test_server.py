"""invite_svc over real gRPC with signed calls: mint as admin_svc, hold and confirm as auth_svc,
check as anyone; bad input answers INVALID_ARGUMENT with field violations."""

from __future__ import annotations

import asyncio
import base64
import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from invite_svc.server import add_servicers
from mesh.channels import open_channel
from mesh.errors import error_info, field_violations
from mesh.invite_codes import generate
from mesh.services import INVITE
from tests.integration.conftest import from_the_edge
from tests.integration.mesh.trust_fixtures import make_trust

ADMIN_ID = str(uuid.uuid4())


@dataclass
class Callers:
    admin: invite_service_pb2_grpc.InviteServiceAsyncStub
    auth: invite_service_pb2_grpc.InviteServiceAsyncStub
    anyone: invite_service_pb2_grpc.InviteServiceAsyncStub


@pytest.fixture
async def callers(tmp_path: Path, migrated_database_url: str, redis_url: str) -> AsyncIterator[Callers]:
    trust = make_trust(tmp_path, migrated_database_url, redis_url)
    server = trust.server(INVITE, add_servicers)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    async with (
        open_channel(target, trust.settings, "admin_svc", trust.signer("admin_svc")) as admin,
        open_channel(target, trust.settings, "auth_svc", trust.signer("auth_svc")) as auth,
        open_channel(target, trust.settings) as anyone,
    ):
        yield Callers(*(invite_service_pb2_grpc.InviteServiceStub(channel) for channel in (admin, auth, anyone)))
    await server.stop(0)


async def _mint(callers: Callers, max_uses: int, count: int = 1) -> list[pb.InviteCode]:
    minted = await callers.admin.MintCodes(
        pb.MintCodesRequest(count=count, max_uses=max_uses, owner=pb.Owner(admin_id=ADMIN_ID))
    )
    return list(minted.codes)


def _someone(name: str, domain: str = "example.com") -> str:
    """A new person each run: the database outlives test runs against an external PostgreSQL."""
    return f"{name}.{uuid.uuid4().hex[:8]}@{domain}"


def _hold(code: str, email: str) -> pb.HoldCodeRequest:
    return pb.HoldCodeRequest(code=code, email=email, request_id=uuid.uuid4().hex)


async def test_a_code_is_minted_held_confirmed_and_then_used_up(callers: Callers) -> None:
    (code,) = await _mint(callers, max_uses=1)
    assert (await callers.anyone.CheckCode(pb.CheckCodeRequest(code=code.code.lower()))).valid is True

    held = (await callers.auth.HoldCode(_hold(code.code, _someone("Ada.Love", "gmail.com")))).hold
    confirmed = (await callers.auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.id))).hold

    assert held.state == pb.HOLD_STATE_HELD
    assert held.referrer.admin_id == ADMIN_ID
    assert confirmed.state == pb.HOLD_STATE_CONFIRMED
    answer = await callers.anyone.CheckCode(pb.CheckCodeRequest(code=code.code))
    assert (answer.valid, answer.reason) == (False, "INVITE_CODE_EXHAUSTED")
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await callers.auth.HoldCode(_hold(code.code, _someone("bob")))
    # It will never work: not a 429 that says "try again later".
    assert exhausted.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(exhausted.value).reason == "INVITE_CODE_EXHAUSTED"  # type: ignore[union-attr]


async def test_concurrent_signed_holds_take_exactly_the_uses(callers: Callers) -> None:
    (code,) = await _mint(callers, max_uses=37)

    async def hold(index: int) -> str:
        try:
            await callers.auth.HoldCode(_hold(code.code, _someone(f"person{index}")))
        except grpc.aio.AioRpcError as refused:
            info = error_info(refused)
            return info.reason if info else refused.code().name
        return "HELD"

    outcomes = await asyncio.gather(*(hold(index) for index in range(200)))

    assert outcomes.count("HELD") == 37
    assert set(outcomes) == {"HELD", "INVITE_CODE_EXHAUSTED"}


async def test_bad_input_gets_field_violations_and_changes_nothing(callers: Callers) -> None:
    (code,) = await _mint(callers, max_uses=1)
    typo = code.code[:-1] + ("2" if code.code[-1] != "2" else "3")

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await callers.auth.HoldCode(pb.HoldCodeRequest(code=typo, email="not-an-email"))

    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "INVITE_CODE_TYPO"  # type: ignore[union-attr]
    assert {v.field for v in field_violations(refused.value)} == {"code", "email", "request_id"}
    assert (await callers.anyone.CheckCode(pb.CheckCodeRequest(code=code.code))).valid is True


async def test_mint_validates_its_request(callers: Callers) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await callers.admin.MintCodes(pb.MintCodesRequest(count=0, max_uses=-1))

    assert {v.field for v in field_violations(refused.value)} == {"count", "max_uses", "owner"}


async def test_only_the_declared_callers_may_mint_or_hold(callers: Callers) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as unsigned:
        await callers.anyone.MintCodes(pb.MintCodesRequest(count=1, owner=pb.Owner(admin_id=ADMIN_ID)))
    with pytest.raises(grpc.aio.AioRpcError) as wrong_caller:
        await callers.admin.HoldCode(_hold("ABCD-EFGH-J", _someone("ada")))

    assert unsigned.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert wrong_caller.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_released_hold_returns_its_use_and_release_is_idempotent(callers: Callers) -> None:
    (code,) = await _mint(callers, max_uses=1)
    held = (await callers.auth.HoldCode(_hold(code.code, _someone("ada")))).hold

    for _ in range(3):
        released = (await callers.auth.ReleaseHold(pb.ReleaseHoldRequest(hold_id=held.id))).hold
        assert released.state == pb.HOLD_STATE_RELEASED
    assert (await callers.auth.HoldCode(_hold(code.code, _someone("bob")))).hold.state == pb.HOLD_STATE_HELD
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await callers.auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.id))
    assert error_info(late.value).reason == "INVITE_HOLD_RELEASED"  # type: ignore[union-attr]


async def test_referral_tree_follows_confirmed_uses_down_to_the_depth(callers: Callers) -> None:
    async def invite(owner: pb.Owner) -> str:
        (code,) = [
            c for c in (await callers.admin.MintCodes(pb.MintCodesRequest(count=1, max_uses=5, owner=owner))).codes
        ]
        invited = str(uuid.uuid4())
        held = (await callers.auth.HoldCode(_hold(code.code, _someone("invitee")))).hold
        await callers.auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.id, user_id=invited))
        return invited

    root = pb.Owner(admin_id=str(uuid.uuid4()))
    first = await invite(root)
    second = await invite(pb.Owner(user_id=first))
    await invite(pb.Owner(user_id=second))

    shallow = await callers.admin.GetReferralTree(pb.GetReferralTreeRequest(root=root, depth=2))
    deep = await callers.admin.GetReferralTree(pb.GetReferralTreeRequest(root=root, depth=3))

    assert [node.user_id for node in shallow.children] == [first]
    assert [node.user_id for node in shallow.children[0].children] == [second]
    assert list(shallow.children[0].children[0].children) == []
    assert len(deep.children[0].children[0].children) == 1


async def test_campaigns_are_created_once_per_request_and_listed(callers: Callers) -> None:
    name = f"launch {uuid.uuid4().hex[:6]}"
    wanted = pb.Campaign(display_name=name, capacity=2, allowed_email_domains=["Corp.Example"], invite_quota=3)
    request_id = uuid.uuid4().hex

    first = (
        await callers.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=wanted, request_id=request_id))
    ).campaign
    again = (
        await callers.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=wanted, request_id=request_id))
    ).campaign
    with pytest.raises(grpc.aio.AioRpcError) as taken:
        await callers.admin.CreateCampaign(pb.CreateCampaignRequest(campaign=wanted, request_id=uuid.uuid4().hex))

    assert first == again
    assert list(first.allowed_email_domains) == ["corp.example"]
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    (code,) = await _mint_in(callers, first.id)
    with pytest.raises(grpc.aio.AioRpcError) as wrong_domain:
        await callers.auth.HoldCode(_hold(code.code, _someone("ada")))
    assert error_info(wrong_domain.value).reason == "INVITE_EMAIL_DOMAIN_NOT_ALLOWED"  # type: ignore[union-attr]
    held = (await callers.auth.HoldCode(_hold(code.code, _someone("ada", "corp.example")))).hold
    assert held.invite_quota == 3
    listed: list[pb.Campaign] = []
    page = pb.ListCampaignsResponse(next_page_token="")
    while True:
        page = await callers.admin.ListCampaigns(pb.ListCampaignsRequest(page_size=50, page_token=page.next_page_token))
        listed.extend(page.campaigns)
        if not page.next_page_token:
            break
    assert [c.taken for c in listed if c.id == first.id] == [1]


async def _mint_in(callers: Callers, campaign_id: str) -> list[pb.InviteCode]:
    minted = await callers.admin.MintCodes(
        pb.MintCodesRequest(count=1, max_uses=5, owner=pb.Owner(admin_id=ADMIN_ID), campaign_id=campaign_id)
    )
    return list(minted.codes)


async def test_checks_spend_a_per_client_budget_that_typos_do_not_touch(
    tmp_path: Path, migrated_database_url: str, redis_url: str
) -> None:
    trust = make_trust(tmp_path, migrated_database_url, redis_url, invite_checks_per_minute=3)
    server = trust.server(INVITE, add_servicers)
    await server.start()
    try:
        async with open_channel(f"127.0.0.1:{server.port}", trust.settings) as channel:
            stub = invite_service_pb2_grpc.InviteServiceStub(channel)
            me = from_the_edge(trust.settings, f"198.51.100.{uuid.uuid4().int % 250}")
            for _ in range(5):
                with pytest.raises(grpc.aio.AioRpcError) as typo:
                    await stub.CheckCode(pb.CheckCodeRequest(code="ABCD-EFGH-0"), metadata=me)
                assert typo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            unknown = pb.CheckCodeRequest(code=generate())
            for _ in range(3):
                await stub.CheckCode(unknown, metadata=me)
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await stub.CheckCode(unknown, metadata=me)
            other = from_the_edge(trust.settings, f"203.0.113.{uuid.uuid4().int % 250}")
            other_answer = await stub.CheckCode(unknown, metadata=other)
    finally:
        await server.stop(0)

    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert error_info(limited.value).reason == "RATE_LIMITED"  # type: ignore[union-attr]
    assert other_answer.valid is False


async def test_admins_look_codes_up_list_them_and_disable_them(callers: Callers) -> None:
    campaign = (
        await callers.admin.CreateCampaign(
            pb.CreateCampaignRequest(campaign=pb.Campaign(display_name=f"lookup {uuid.uuid4().hex[:6]}"))
        )
    ).campaign
    owner = pb.Owner(admin_id=str(uuid.uuid4()))
    minted = (
        await callers.admin.MintCodes(pb.MintCodesRequest(count=3, max_uses=2, owner=owner, campaign_id=campaign.id))
    ).codes
    held = (await callers.auth.HoldCode(_hold(minted[0].code, _someone("ada")))).hold
    redeemer = str(uuid.uuid4())
    await callers.auth.ConfirmHold(pb.ConfirmHoldRequest(hold_id=held.id, user_id=redeemer))

    found = await callers.admin.GetCode(pb.GetCodeRequest(code=minted[0].code.replace("-", " ").lower()))
    listed = await callers.admin.ListCodes(pb.ListCodesRequest(campaign_id=campaign.id, page_size=2))
    rest = await callers.admin.ListCodes(
        pb.ListCodesRequest(campaign_id=campaign.id, page_size=2, page_token=listed.next_page_token)
    )
    await callers.auth.HoldCode(_hold(minted[1].code, _someone("before")))  # its terms are now cached
    disabled = (await callers.admin.DisableCode(pb.DisableCodeRequest(code=minted[1].code))).code
    with pytest.raises(grpc.aio.AioRpcError) as after:
        await callers.auth.HoldCode(_hold(minted[1].code, _someone("after")))
    assert error_info(after.value).reason == "INVITE_CODE_DISABLED"  # type: ignore[union-attr]
    by_owner = await callers.admin.ListCodes(pb.ListCodesRequest(owner=owner, state=pb.CODE_STATE_DISABLED))

    assert (found.code.confirmed_uses, found.code.held_uses) == (1, 0)
    assert [(r.user_id, r.hold.state) for r in found.redemptions] == [(redeemer, pb.HOLD_STATE_CONFIRMED)]
    assert sorted(c.code for c in [*listed.codes, *rest.codes]) == sorted(c.code for c in minted)
    assert rest.next_page_token == ""
    assert disabled.state == pb.CODE_STATE_DISABLED
    assert [c.code for c in by_owner.codes] == [minted[1].code]
    answer = await callers.anyone.CheckCode(pb.CheckCodeRequest(code=minted[1].code))
    assert (answer.valid, answer.reason) == (False, "INVITE_CODE_DISABLED")
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await callers.admin.GetCode(pb.GetCodeRequest(code=generate()))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_page_token_serves_only_the_listing_that_gave_it_and_cannot_be_made_by_hand(
    callers: Callers,
) -> None:
    """An unsigned token could be edited to start anywhere, or replayed under other filters."""
    owner = pb.Owner(admin_id=str(uuid.uuid4()))
    await callers.admin.MintCodes(pb.MintCodesRequest(count=3, max_uses=1, owner=owner))
    first = await callers.admin.ListCodes(pb.ListCodesRequest(owner=owner, page_size=2))
    campaigns = await callers.admin.ListCampaigns(pb.ListCampaignsRequest(page_size=1))
    moment = datetime.datetime.now(datetime.UTC).isoformat()
    made_by_hand = base64.urlsafe_b64encode(f"{moment}|{uuid.uuid4()}".encode()).decode()

    refusals = []
    for request in (
        pb.ListCodesRequest(owner=pb.Owner(admin_id=str(uuid.uuid4())), page_size=2, page_token=first.next_page_token),
        pb.ListCodesRequest(owner=owner, page_size=2, page_token=campaigns.next_page_token),
        pb.ListCodesRequest(owner=owner, page_size=2, page_token=made_by_hand),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await callers.admin.ListCodes(request)
        refusals.append((refused.value.code(), [v.field for v in field_violations(refused.value)]))
    rest = await callers.admin.ListCodes(
        pb.ListCodesRequest(owner=owner, page_size=2, page_token=first.next_page_token)
    )

    assert first.next_page_token and campaigns.next_page_token
    assert refusals == [(grpc.StatusCode.INVALID_ARGUMENT, ["page_token"])] * 3
    assert len(rest.codes) == 1 and rest.next_page_token == ""
