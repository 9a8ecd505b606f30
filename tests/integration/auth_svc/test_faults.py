"""A peer down or auth_svc killed in the middle of the saga: what was promised still happens,
and nothing is left half done."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid

import asyncpg
import grpc
import pytest
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb

from mesh.channels import open_channel
from mesh.emails import canonical_email
from meshctl.embedded import wait_for_port
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, someone
from tests.integration.conftest import fetchval


async def test_invite_svc_down_during_verify_confirms_the_hold_once_it_is_back(stack: Stack) -> None:
    campaign = await stack.campaign(invite_quota=2)
    (code,) = await stack.mint(campaign_id=campaign)
    email = someone()
    registered = await stack.register(email, code)
    mailed = await stack.verification_code(email)
    await stack.stop("invite_svc")

    verified = await stack.auth.VerifyEmail(
        pb.VerifyEmailRequest(email=email, code=mailed, registration=registered.registration)
    )

    assert verified.user.state == pb.USER_STATE_ACTIVE
    hold_state = "SELECT state FROM invite.holds WHERE canonical_email = $1 AND state IN (1, 2)"
    assert await fetchval(stack.database_url, hold_state, canonical_email(email)) == 1  # still only held
    await stack.start("invite_svc")

    async def confirmed() -> bool:
        return await fetchval(stack.database_url, hold_state, canonical_email(email)) == 2

    async def own_codes_minted() -> bool:
        owned = "SELECT count(*) FROM invite.codes WHERE owner_user_id = $1"
        return await fetchval(stack.database_url, owned, uuid.UUID(verified.user.id)) == 2

    await eventually(confirmed, within=30, what="the hold confirmed")
    await eventually(own_codes_minted, within=30, what="the user's own codes")


async def test_mail_svc_down_during_register_the_mail_arrives_once_it_is_back(stack: Stack) -> None:
    (code,) = await stack.mint()
    email = someone()
    await stack.stop("mail_svc")

    await stack.register(email, code)

    assert stack.received_by(email) == []
    await stack.start("mail_svc")
    assert len(await stack.verification_code(email)) == 6
    assert len(stack.received_by(email)) == 1


async def test_auth_svc_killed_between_hold_and_commit_leaves_a_hold_that_lapses(stack_with: StackFactory) -> None:
    async with stack_with(invite_hold_ttl=2.0, invite_expiry_interval=0.2) as stack:
        (code,) = await stack.mint()
        email = someone()
        await stack.stop("auth_svc")
        port = stack.address("auth_svc").rpartition(":")[2]
        environment = {**os.environ, **stack.trust.environment(), "MESH_GRPC_PORT": port, "MESH_LOG_LEVEL": "ERROR"}
        process = await asyncio.create_subprocess_exec(sys.executable, "-m", "auth_svc", env=environment)
        blocker = await asyncpg.connect(stack.database_url)
        try:
            await asyncio.to_thread(wait_for_port, "127.0.0.1", int(port), 30)
            # The registration's transaction waits on this lock, after its hold was taken.
            transaction = blocker.transaction()
            await transaction.start()
            await blocker.execute("LOCK TABLE auth.users IN SHARE ROW EXCLUSIVE MODE")
            async with open_channel(stack.address("auth_svc"), stack.settings) as channel:
                registering = asyncio.ensure_future(
                    auth_service_pb2_grpc.AuthServiceStub(channel).Register(
                        pb.RegisterRequest(email=email, password=PASSWORD, invite_code=code)
                    )
                )
                held = "SELECT state FROM invite.holds WHERE canonical_email = $1 ORDER BY create_time DESC LIMIT 1"

                async def hold_taken() -> bool:
                    if registering.done():
                        registering.result()  # answered before its hold showed: fail with the answer
                    return await fetchval(stack.database_url, held, canonical_email(email)) == 1

                await eventually(hold_taken, what="the hold taken")
                process.send_signal(signal.SIGKILL)
                await process.wait()
                # Killed with its transaction waiting: it cannot have answered.
                with pytest.raises(grpc.aio.AioRpcError) as cut_off:
                    await registering
                assert cut_off.value.code() is grpc.StatusCode.UNAVAILABLE
            await transaction.rollback()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            await blocker.close()

        async def hold_lapsed() -> bool:
            return await fetchval(stack.database_url, held, canonical_email(email)) == 4

        await eventually(hold_lapsed, what="the hold expired")
        users = "SELECT count(*) FROM auth.users WHERE canonical_email = $1"
        assert await fetchval(stack.database_url, users, canonical_email(email)) == 0
        check = await stack.invites.CheckCode(invite_pb.CheckCodeRequest(code=code))
        assert check.valid, "the code's one use came back"


def _breaker_state(stack: Stack, peer: str) -> float | None:
    registry = stack.servers["auth_svc"].metrics.registry
    return registry.get_sample_value("mesh_breaker_state", {"breaker": peer})


@pytest.mark.parametrize("peer", ["mail_svc", "invite_svc"])
async def test_the_outbox_calls_a_peer_that_is_down_through_its_breaker(stack: Stack, peer: str) -> None:
    """Deliveries fail fast once the peer's breaker opens, instead of each waiting on a dead peer,
    and all arrive once it is back (issue 15.4)."""
    email = someone()
    registered = await stack.register(email, (await stack.mint())[0])
    if peer == "invite_svc":
        mailed = await stack.verification_code(email)
    await stack.stop(peer)
    if peer == "invite_svc":
        # Confirming the hold and minting the codes wait in the outbox.
        await stack.auth.VerifyEmail(
            pb.VerifyEmailRequest(email=email, code=mailed, registration=registered.registration)
        )
    else:
        await stack.auth.ResendVerification(pb.ResendVerificationRequest(email=email))

    async def opened() -> bool:
        return _breaker_state(stack, peer) == 2

    await eventually(opened, within=30, what=f"auth_svc's breaker for {peer} to open")
    await stack.start(peer)

    async def closed() -> bool:
        return _breaker_state(stack, peer) == 0

    await eventually(closed, within=60, what=f"auth_svc's breaker for {peer} to close again")
    if peer == "mail_svc":
        assert len(await stack.mail_to(email, 2)) >= 2
    else:
        confirmed = "SELECT state FROM invite.holds WHERE canonical_email = $1 AND state = 2"
        assert await fetchval(stack.database_url, confirmed, canonical_email(email)) == 2
