"""Admin sign-in in two steps: the MFA token (single use, short-lived, for its own function, state
and admin), TOTP codes good once, throttling that says nothing an attacker could use, and
sessions that end at once on sign-out, a role change or a disabled account."""

from __future__ import annotations

import time
import uuid

import grpc
import jwt
from google.protobuf.field_mask_pb2 import FieldMask
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.mesh.v1 import access_pb2

from tests.conftest import eventually
from tests.integration.admin_svc.conftest import Admin, new_admin, signed_in
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, refusal


async def _mfa_token(stack: Stack, admin: Admin) -> pb.CreateSessionResponse:
    return await stack.admin().CreateSession(pb.CreateSessionRequest(email=admin.email, password=PASSWORD))


async def _second_step(stack: Stack, token: str, code: str) -> pb.VerifySessionMfaResponse:
    return await stack.admin().VerifySessionMfa(pb.VerifySessionMfaRequest(mfa_token=token, totp_code=code))


async def test_the_password_gives_an_mfa_token_and_the_totp_code_a_session_with_the_role(stack: Stack) -> None:
    admin = await new_admin(stack, "operator")

    first = await _mfa_token(stack, admin)
    subject, function, secret, state = first.mfa_token.split(":")
    second = await _second_step(stack, first.mfa_token, admin.code())
    claims = jwt.decode(second.access_token, options={"verify_signature": False})

    assert (subject, function, state) == (admin.admin.id, "admin-sign-in", "password-ok") and len(secret) >= 43
    assert 0 < first.mfa_expire_time.seconds - time.time() <= 300
    assert claims["role"] == "operator" and claims["sub"] == admin.admin.id and claims["iss"] == "invitemesh-admin"
    assert second.admin.last_sign_in_time.seconds > 0
    listed = await stack.admin(second.access_token).ListCampaigns(pb.ListCampaignsRequest())
    assert listed is not None


async def test_an_mfa_token_works_once(stack: Stack) -> None:
    admin = await new_admin(stack)
    first = await _mfa_token(stack, admin)
    await _second_step(stack, first.mfa_token, admin.code())

    assert await refusal(_second_step(stack, first.mfa_token, admin.code(1))) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "MFA_TOKEN_INVALID",
    )


async def test_a_wrong_totp_code_spends_the_mfa_token(stack: Stack) -> None:
    admin = await new_admin(stack)
    first = await _mfa_token(stack, admin)
    wrong = f"{(int(admin.code()) + 1) % 1_000_000:06d}"

    assert (await refusal(_second_step(stack, first.mfa_token, wrong)))[1] == "TOTP_CODE_INVALID"
    assert (await refusal(_second_step(stack, first.mfa_token, admin.code())))[1] == "MFA_TOKEN_INVALID"


async def test_an_mfa_token_for_another_function_state_or_admin_is_refused(stack: Stack) -> None:
    admin, other = await new_admin(stack), await new_admin(stack)
    subject, function, secret, state = (await _mfa_token(stack, admin)).mfa_token.split(":")
    forged = [
        f"{subject}:step-up:{secret}:{state}",
        f"{subject}:{function}:{secret}:totp-ok",
        f"{other.admin.id}:{function}:{secret}:{state}",
        f"{uuid.uuid4()}:{function}:{secret}:{state}",
        f"{subject}:{function}:{secret}",
    ]

    for token in forged:
        assert await refusal(_second_step(stack, token, admin.code())) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "MFA_TOKEN_INVALID",
        ), token


async def test_an_mfa_token_lapses(admin_stack_with: StackFactory) -> None:
    async with admin_stack_with(admin_mfa_ttl=1.0) as stack:
        admin = await new_admin(stack)
        first = await _mfa_token(stack, admin)

        async def lapsed() -> bool:
            return time.time() > first.mfa_expire_time.seconds + 1

        await eventually(lapsed, within=5, what="the MFA token's expiry")
        assert (await refusal(_second_step(stack, first.mfa_token, admin.code())))[1] == "MFA_TOKEN_INVALID"


async def test_a_totp_code_signs_in_once(stack: Stack) -> None:
    admin = await new_admin(stack)
    code = admin.code()
    await _second_step(stack, (await _mfa_token(stack, admin)).mfa_token, code)

    replayed = _second_step(stack, (await _mfa_token(stack, admin)).mfa_token, code)

    assert await refusal(replayed) == (grpc.StatusCode.UNAUTHENTICATED, "TOTP_CODE_INVALID")
    # The next step's code still works: a code is spent, not the admin.
    await _second_step(stack, (await _mfa_token(stack, admin)).mfa_token, admin.code(1))


async def test_wrong_password_unknown_email_locked_and_disabled_admins_hear_the_same(
    admin_stack_with: StackFactory,
) -> None:
    async with admin_stack_with(admin_login_failures_per_account=2) as stack:
        owner = await new_admin(stack)
        token = await signed_in(stack, owner)
        locked, disabled = await new_admin(stack), await new_admin(stack)
        for _ in range(2):
            wrong = pb.CreateSessionRequest(email=locked.email, password="not the password at all")
            await refusal(stack.admin().CreateSession(wrong))
        change = pb.UpdateAdminRequest(
            admin=pb.Admin(id=disabled.admin.id, state=pb.ADMIN_STATE_DISABLED), update_mask=FieldMask(paths=["state"])
        )
        await stack.admin(token).UpdateAdmin(change)

        answers = [
            await refusal(stack.admin().CreateSession(pb.CreateSessionRequest(email=email, password=password)))
            for email, password in (
                (owner.email, "not the password at all"),
                ("nobody.at.all@example.com", PASSWORD),
                (locked.email, PASSWORD),
                (disabled.email, PASSWORD),
            )
        ]

        assert set(answers) == {(grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS")}


async def test_sign_out_a_role_change_and_disabling_end_sessions_at_once(stack: Stack) -> None:
    owner = await new_admin(stack)
    owner_token = await signed_in(stack, owner)
    leaving_admin, demoted_admin, disabled_admin = [await new_admin(stack, "operator") for _ in range(3)]
    tokens = {admin.admin.id: await signed_in(stack, admin) for admin in (leaving_admin, demoted_admin, disabled_admin)}
    campaigns = pb.ListCampaignsRequest()
    for token in tokens.values():
        await stack.admin(token).ListCampaigns(campaigns)

    await stack.admin(tokens[leaving_admin.admin.id]).RevokeSession(pb.RevokeSessionRequest())
    for changed, field, value in (
        (demoted_admin, "role", {"role": access_pb2.ADMIN_ROLE_VIEWER}),
        (disabled_admin, "state", {"state": pb.ADMIN_STATE_DISABLED}),
    ):
        request = pb.UpdateAdminRequest(
            admin=pb.Admin(id=changed.admin.id, **value), update_mask=FieldMask(paths=[field])
        )
        await stack.admin(owner_token).UpdateAdmin(request)

    for token in tokens.values():
        assert await refusal(stack.admin(token).ListCampaigns(campaigns)) == (
            grpc.StatusCode.UNAUTHENTICATED,
            "ACCESS_TOKEN_REVOKED",
        )
    fresh = await signed_in(stack, demoted_admin, steps_ahead=1)
    assert jwt.decode(fresh, options={"verify_signature": False})["role"] == "viewer"
    assert (await refusal(signed_in(stack, disabled_admin, steps_ahead=1)))[1] == "INVALID_CREDENTIALS"


async def test_an_owner_cannot_change_its_own_account(stack: Stack) -> None:
    owner = await new_admin(stack)
    token = await signed_in(stack, owner)
    request = pb.UpdateAdminRequest(
        admin=pb.Admin(id=owner.admin.id, role=access_pb2.ADMIN_ROLE_VIEWER), update_mask=FieldMask(paths=["role"])
    )

    assert await refusal(stack.admin(token).UpdateAdmin(request)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "ADMIN_CHANGES_ITSELF",
    )


async def test_after_a_key_rotation_tokens_of_the_retired_key_still_verify(admin_stack_with: StackFactory) -> None:
    async with admin_stack_with(admin_signing_key_max_age=1.0) as stack:
        admin = await new_admin(stack)
        old = await signed_in(stack, admin)
        old_kid = jwt.get_unverified_header(old)["kid"]
        published: list[str] = []

        async def rotated() -> bool:
            # The key set lists keys oldest first; the last one signs.
            keys = (await stack.admin_as("auth_svc").GetAdminJwks(pb.GetAdminJwksRequest())).keys
            published[:] = [key.kid for key in keys]
            return bool(published[-1] != old_kid)

        await eventually(rotated, within=15, what="the admin key ring's rotation")
        new = await signed_in(stack, admin, steps_ahead=1)
        await rotated()

        new_kid = jwt.get_unverified_header(new)["kid"]
        assert old_kid != new_kid and {old_kid, new_kid} <= set(published)
        for token in (old, new):
            await stack.admin(token).ListCampaigns(pb.ListCampaignsRequest())
