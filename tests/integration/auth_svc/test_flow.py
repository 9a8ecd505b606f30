"""The whole registration saga through gRPC, with invite_svc and mail_svc running for real:
register, read the mail, verify, sign in, refresh, and what reuse of a refresh token does."""

from __future__ import annotations

import grpc
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal, someone


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
