"""What auth_svc does over time: lapsed registrations go, stronger hashing parameters reach every
password at its next sign-in, and the access-token key rotates without breaking live tokens."""

from __future__ import annotations

import uuid

import asyncpg
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb

from mesh.emails import canonical_email
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, someone
from tests.integration.conftest import fetchval


async def test_a_registration_not_verified_in_time_is_removed_and_its_use_returns(stack_with: StackFactory) -> None:
    async with stack_with(invite_hold_ttl=1.0, invite_expiry_interval=0.2, auth_jobs_interval=0.2) as stack:
        (code,) = await stack.mint()
        email = someone()
        await stack.register(email, code)
        users = "SELECT count(*) FROM auth.users WHERE canonical_email = $1"
        assert await fetchval(stack.database_url, users, canonical_email(email)) == 1

        async def removed() -> bool:
            return await fetchval(stack.database_url, users, canonical_email(email)) == 0

        async def use_returned() -> bool:
            return bool((await stack.invites.CheckCode(invite_pb.CheckCodeRequest(code=code))).valid)

        await eventually(removed, what="the lapsed registration removed")
        # invite_svc lets the hold lapse on its own clock; then somebody else can use the code.
        await eventually(use_returned, what="the code's use returned")
        await stack.register(someone(), code)


async def test_a_password_is_rehashed_at_sign_in_when_the_parameters_rose(stack: Stack) -> None:
    email, _ = await stack.signed_up()
    stored = "SELECT password_hash FROM auth.users WHERE canonical_email = $1"
    assert ",t=2," in str(await fetchval(stack.database_url, stored, canonical_email(email)))
    await stack.stop("auth_svc")
    await stack.start("auth_svc", auth_argon2_time_cost=3)

    await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))

    assert ",t=3," in str(await fetchval(stack.database_url, stored, canonical_email(email)))
    await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))


async def test_a_rotated_key_keeps_verifying_the_tokens_it_signed(stack: Stack) -> None:
    _, verified = await stack.signed_up()
    before = {key.kid for key in (await stack.auth.GetJwks(pb.GetJwksRequest())).keys}
    await stack.stop("auth_svc")
    await stack.start("auth_svc", auth_signing_key_max_age=0.001)

    published = {key.kid for key in (await stack.auth.GetJwks(pb.GetJwksRequest())).keys}
    me = await stack.auth.GetMe(
        pb.GetMeRequest(), metadata=(("authorization", f"Bearer {verified.session.access_token}"),)
    )

    assert before < published
    assert me.user.id == verified.user.id


async def test_spent_and_long_expired_tokens_are_deleted(stack_with: StackFactory) -> None:
    async with stack_with(auth_jobs_interval=0.2) as stack:
        email, verified = await stack.signed_up()
        await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
        token = await stack.link_token(email)
        await stack.auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="a brand new passphrase"))
        user_id = uuid.UUID(verified.user.id)
        connection = await asyncpg.connect(stack.database_url)
        try:
            await connection.execute(
                "UPDATE auth.refresh_tokens SET expire_time = now() - interval '2 days' WHERE user_id = $1", user_id
            )
        finally:
            await connection.close()

        async def swept() -> bool:
            tokens = await fetchval(
                stack.database_url, "SELECT count(*) FROM auth.refresh_tokens WHERE user_id = $1", user_id
            )
            resets = await fetchval(
                stack.database_url, "SELECT count(*) FROM auth.password_resets WHERE user_id = $1", user_id
            )
            return tokens == resets == 0

        await eventually(swept, what="spent tokens deleted")
