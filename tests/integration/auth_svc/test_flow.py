"""The whole registration saga through gRPC, with invite_svc and mail_svc running for real:
register, read the mail, verify, sign in, refresh, and what reuse of a refresh token does."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb

from auth_svc.settings import AuthSettings
from mesh.errors import error_info
from mesh.invite_codes import display, generate
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, refusal, someone
from tests.integration.conftest import fetchval


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_register_verify_sign_in_refresh_and_reuse_revokes_the_family(stack: Stack) -> None:
    campaign = await stack.campaign(invite_quota=3)
    (code,) = await stack.mint(campaign_id=campaign)
    email = someone()

    verified = await stack.verify(email, await stack.register(email, code))

    assert verified.user.state == pb.USER_STATE_ACTIVE
    assert verified.session.access_token and verified.session.refresh_token
    me = await stack.auth.GetMe(pb.GetMeRequest(), metadata=_bearer(verified.session.access_token))
    assert (me.user.id, me.user.email) == (verified.user.id, email)

    invites = invite_service_pb2_grpc.InviteServiceStub(stack._channel("invite_svc"))

    async def own_codes() -> list[invite_pb.InviteCode]:
        listed = await invites.ListMyCodes(
            invite_pb.ListMyCodesRequest(), metadata=_bearer(verified.session.access_token)
        )
        return list(listed.codes)

    async def three_codes() -> bool:
        return len(await own_codes()) == 3

    await eventually(three_codes, what="the new user's own codes")
    assert all(listed.owner.user_id == verified.user.id for listed in await own_codes())
    (codes_mail,) = [mail for mail in await stack.mail_to(email, 2) if "invite codes" in mail.text.lower()]
    assert all(listed.code in codes_mail.text for listed in await own_codes())

    signed_in = await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    first = signed_in.session.refresh_token
    renewed = await stack.auth.Refresh(pb.RefreshRequest(refresh_token=first))
    assert renewed.session.refresh_token != first

    assert await refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=first))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_REUSED",
    )
    # The reuse revoked the whole family, so the newest token of it is dead too.
    assert await refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=renewed.session.refresh_token))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )

    other = await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    await stack.auth.Logout(pb.LogoutRequest(refresh_token=other.session.refresh_token))
    assert await refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=other.session.refresh_token))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


async def _own_codes_once_minted(stack: Stack, session: pb.Session, count: int) -> list[invite_pb.InviteCode]:
    invites = invite_service_pb2_grpc.InviteServiceStub(stack._channel("invite_svc"))

    async def listed() -> list[invite_pb.InviteCode]:
        answer = await invites.ListMyCodes(invite_pb.ListMyCodesRequest(), metadata=_bearer(session.access_token))
        return list(answer.codes)

    async def minted() -> bool:
        return len(await listed()) >= count

    await eventually(minted, what=f"{count} codes of the new user's own")
    return await listed()


async def test_without_a_campaign_a_new_user_gets_the_default_codes_of_their_own(stack_with: StackFactory) -> None:
    async with stack_with(invite_default_quota=2, invite_default_uses=4) as stack:
        email, verified = await stack.signed_up()
        own = await _own_codes_once_minted(stack, verified.session, 2)
        # A campaign without a quota of its own gives the default too.
        campaign = await stack.campaign(invite_quota=0)
        (code,) = await stack.mint(campaign_id=campaign)
        second = someone()
        in_campaign = await stack.verify(second, await stack.register(second, code))
        theirs = await _own_codes_once_minted(stack, in_campaign.session, 2)

    assert len(own) == len(theirs) == 2
    assert {(listed.owner.user_id, listed.max_uses) for listed in own} == {(verified.user.id, 4)}
    assert {listed.campaign_id for listed in theirs} == {campaign}
    (codes_mail,) = [mail for mail in await stack.mail_to(email, 2) if "invite codes" in mail.text.lower()]
    assert all(listed.code in codes_mail.text for listed in own)


async def test_a_default_quota_of_none_gives_no_codes(stack_with: StackFactory) -> None:
    async with stack_with(invite_default_quota=0) as stack:
        _, verified = await stack.signed_up()
        confirmed = "SELECT count(*) FROM invite.holds WHERE user_id = $1::uuid AND state = 2"

        async def hold_confirmed() -> bool:
            return await fetchval(stack.database_url, confirmed, verified.user.id) == 1

        await eventually(hold_confirmed, what="the activation's outbox delivered")
        owned = "SELECT count(*) FROM invite.codes WHERE owner_user_id = $1::uuid"
        assert await fetchval(stack.database_url, owned, verified.user.id) == 0


async def test_verification_and_reset_mails_expire_with_what_they_carry(stack: Stack) -> None:
    email, _ = await stack.signed_up()
    await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    await stack.link_token(email)
    logged = "SELECT template, expire_time - create_time FROM mail.emails WHERE recipient = $1"

    connection = await asyncpg.connect(stack.database_url)
    try:
        lifetimes = {row[0]: row[1] for row in await connection.fetch(logged, email)}
    finally:
        await connection.close()

    verification, reset = (
        lifetimes[mail_pb.EMAIL_TEMPLATE_VERIFICATION],
        lifetimes[mail_pb.EMAIL_TEMPLATE_PASSWORD_RESET],
    )
    assert abs(verification.total_seconds() - stack.trust.own(AuthSettings).verification_ttl) < 30
    assert abs(reset.total_seconds() - stack.trust.own(AuthSettings).reset_ttl) < 30
    assert lifetimes[mail_pb.EMAIL_TEMPLATE_INVITE_CODES] is None


async def test_a_user_sees_who_joined_through_their_codes_newest_first_and_masked(stack_with: StackFactory) -> None:
    async with stack_with(invite_default_quota=1, invite_default_uses=3) as stack:
        _, inviter = await stack.signed_up()
        (own,) = await _own_codes_once_minted(stack, inviter.session, 1)
        invites = invite_service_pb2_grpc.InviteServiceStub(stack._channel("invite_svc"))
        bearer = _bearer(inviter.session.access_token)
        friends = [f"{initial}.{someone()}" for initial in "xyz"]
        for friend in friends:
            await stack.verify(friend, await stack.register(friend, own.code))

            async def listed(count: int = friends.index(friend) + 1) -> bool:
                listed = await invites.ListMyReferrals(invite_pb.ListMyReferralsRequest(), metadata=bearer)
                return len(listed.referrals) == count

            # Each use is confirmed through the outbox after its verification answered.
            await eventually(listed, what=f"{friend} among the referrals")
        first = await invites.ListMyReferrals(invite_pb.ListMyReferralsRequest(page_size=2), metadata=bearer)
        rest = await invites.ListMyReferrals(
            invite_pb.ListMyReferralsRequest(page_size=2, page_token=first.next_page_token), metadata=bearer
        )
        full = await invites.ListMyCodes(
            invite_pb.ListMyCodesRequest(view=invite_pb.INVITE_CODE_VIEW_FULL), metadata=bearer
        )
        basic = await invites.ListMyCodes(invite_pb.ListMyCodesRequest(), metadata=bearer)
        with pytest.raises(grpc.aio.AioRpcError) as no_such_view:
            await invites.ListMyCodes(invite_pb.ListMyCodesRequest(view=7), metadata=bearer)  # type: ignore[arg-type]
        _, stranger = await stack.signed_up()
        theirs = await invites.ListMyReferrals(
            invite_pb.ListMyReferralsRequest(), metadata=_bearer(stranger.session.access_token)
        )

    joined = [*first.referrals, *rest.referrals]
    assert [person.masked_email for person in joined] == ["z•••@example.com", "y•••@example.com", "x•••@example.com"]
    assert {person.code for person in joined} == {own.code}
    assert rest.next_page_token == "" and len(rest.referrals) == 1
    assert list(theirs.referrals) == []
    # The full view of the codes tells the same, code by code; the basic one leaves it out.
    (with_referrals,) = full.codes
    assert list(with_referrals.referrals) == joined
    assert [list(code.referrals) for code in basic.codes] == [[]]
    assert no_such_view.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_code_whose_places_are_gone_points_the_registration_at_the_waitlist(stack: Stack) -> None:
    (code,) = await stack.mint(max_uses=1)
    await stack.register(someone(), code)
    with pytest.raises(grpc.aio.AioRpcError) as used_up:
        await stack.register(someone(), code)
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stack.register(someone(), display(generate()))

    gone, other = error_info(used_up.value), error_info(unknown.value)
    assert gone is not None and gone.reason == "INVITE_CODE_EXHAUSTED"
    assert gone.metadata["waitlist_url"] == "http://localhost:8080/waitlist"
    assert other is not None and other.reason == "INVITE_CODE_NOT_FOUND" and "waitlist_url" not in other.metadata
