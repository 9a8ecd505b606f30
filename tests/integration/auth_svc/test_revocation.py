"""Signed out means signed out everywhere at once (security issue 14.4): after a sign-out, a
password reset, a suspension or a refresh token used twice, the session's access tokens are
refused by every verifier at once, not up to 15 minutes later."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from redis.exceptions import RedisError

from mesh.revocations import RevokedSessions
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, refusal

REVOKED = (grpc.StatusCode.UNAUTHENTICATED, "ACCESS_TOKEN_REVOKED")


def _bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _me(stack: Stack, token: str) -> pb.GetMeResponse:
    return await stack.auth.GetMe(pb.GetMeRequest(), metadata=_bearer(token))


async def _my_codes(stack: Stack, token: str) -> invite_pb.ListMyCodesResponse:
    """A user call to another service than the issuer: its verifier must know too."""
    invites = invite_service_pb2_grpc.InviteServiceStub(stack._channel("invite_svc"))
    return await invites.ListMyCodes(invite_pb.ListMyCodesRequest(), metadata=_bearer(token))


async def _signed_out_everywhere(stack: Stack, token: str) -> None:
    assert await refusal(_me(stack, token)) == REVOKED
    assert await refusal(_my_codes(stack, token)) == REVOKED


async def _reset(stack: Stack, email: str) -> None:
    await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    token = await stack.link_token(email)
    await stack.auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="an entirely new passphrase"))


async def _suspend(stack: Stack, user_id: str) -> None:
    await stack.auth_as("admin_svc").SuspendUser(pb.SuspendUserRequest(user_id=user_id))


async def test_a_signed_out_session_is_refused_at_once_and_the_other_sessions_go_on(stack: Stack) -> None:
    email, verified = await stack.signed_up()
    other = await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    assert (await _me(stack, verified.session.access_token)).user.email == email

    await stack.auth.Logout(pb.LogoutRequest(refresh_token=verified.session.refresh_token))

    await _signed_out_everywhere(stack, verified.session.access_token)
    assert (await _me(stack, other.session.access_token)).user.email == email
    assert (await _my_codes(stack, other.session.access_token)) is not None


@pytest.mark.parametrize("ending", ["reset", "suspension", "reuse"])
async def test_every_way_a_session_ends_reaches_its_access_tokens_at_once(stack: Stack, ending: str) -> None:
    email, verified = await stack.signed_up()
    signed_in = await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))
    renewed = await stack.auth.Refresh(pb.RefreshRequest(refresh_token=signed_in.session.refresh_token))
    ends: dict[str, Callable[[], Awaitable[object]]] = {
        "reset": lambda: _reset(stack, email),
        "suspension": lambda: _suspend(stack, verified.user.id),
        "reuse": lambda: refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=signed_in.session.refresh_token))),
    }

    await ends[ending]()

    # The renewed token belongs to the family whose old refresh token came back.
    await _signed_out_everywhere(stack, renewed.session.access_token)
    if ending != "reuse":
        await _signed_out_everywhere(stack, verified.session.access_token)
    else:
        assert (await _me(stack, verified.session.access_token)).user.email == email


async def test_a_revocation_that_redis_missed_arrives_through_the_outbox(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, verified = await stack.signed_up()
    real = RevokedSessions.revoke
    failed: list[object] = []

    async def first_write_lost(self: RevokedSessions, sessions: object, for_seconds: int) -> None:
        if not failed:
            failed.append(sessions)
            raise RedisError("connection lost")
        await real(self, sessions, for_seconds)  # type: ignore[arg-type]

    monkeypatch.setattr(RevokedSessions, "revoke", first_write_lost)
    await stack.auth.Logout(pb.LogoutRequest(refresh_token=verified.session.refresh_token))
    assert failed, "the immediate write was tried"

    async def refused() -> bool:
        try:
            await _me(stack, verified.session.access_token)
        except grpc.aio.AioRpcError as error:
            return error.code() is grpc.StatusCode.UNAUTHENTICATED
        return False

    await eventually(refused, what="the outbox's revocation")
