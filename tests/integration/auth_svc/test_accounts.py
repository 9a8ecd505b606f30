"""Verification codes, password resets, duplicates and sign-in refusals, over real gRPC: what each
refuses, how often, and that no answer tells whether an email is registered."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import grpc
import pytest
from google.protobuf.message import Message
from invitemesh.auth.v1 import auth_service_pb2 as pb

from mesh.clients import EXTERNAL_ADDRESS
from mesh.emails import canonical_email
from mesh.errors import error_info, field_violations, retry_info
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, someone


async def _refusal(call: object) -> tuple[grpc.StatusCode, str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else "", raised.value.details() or ""


def _other(code: str) -> str:
    return f"{(int(code) + 1) % 1_000_000:06d}"


@pytest.mark.parametrize("proof", ["registration", "password"])
async def test_five_wrong_codes_use_the_code_up(stack: Stack, proof: str) -> None:
    (code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, code)
    right = await stack.verification_code(email)
    named = {"registration": registered.registration} if proof == "registration" else {"password": PASSWORD}

    for _ in range(5):
        wrong = pb.VerifyEmailRequest(email=email, code=_other(right), **named)
        refused = await _refusal(stack.auth.VerifyEmail(wrong))
        assert refused[:2] == (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")
    refused = await _refusal(stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=right, **named)))

    assert refused[:2] == (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")


async def test_wrong_codes_sent_at_once_spend_no_more_than_the_attempts(stack: Stack) -> None:
    (code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, code)
    right = await stack.verification_code(email)
    wrong = [f"{n:06d}" for n in range(40) if f"{n:06d}" != right][:30]

    await asyncio.gather(
        *(
            stack.auth.VerifyEmail(
                pb.VerifyEmailRequest(email=email, code=guess, registration=registered.registration)
                if index % 2
                else pb.VerifyEmailRequest(email=email, code=guess, password=PASSWORD)
            )
            for index, guess in enumerate(wrong)
        ),
        return_exceptions=True,
    )

    connection = await asyncpg.connect(stack.database_url)
    try:
        left = await connection.fetchval(
            "SELECT attempts_left FROM auth.verification_codes v JOIN auth.users u ON u.id = v.user_id"
            " WHERE u.canonical_email = $1",
            canonical_email(email),
        )
    finally:
        await connection.close()
    assert left == 0


async def test_a_verification_presented_again_answers_the_account_it_made_with_a_session_of_its_own(
    stack: Stack,
) -> None:
    """What a client does when told to try again after a replica died between commit and reply."""
    (code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, code)
    right = await stack.verification_code(email)
    again = pb.VerifyEmailRequest(email=email, code=right, registration=registered.registration)

    first = await stack.auth.VerifyEmail(again)
    second = await stack.auth.VerifyEmail(again)
    other_code = pb.VerifyEmailRequest(email=email, code=_other(right), registration=registered.registration)
    wrong = await _refusal(stack.auth.VerifyEmail(other_code))
    by_password = await _refusal(
        stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=right, password=PASSWORD))
    )

    assert second.user.id == first.user.id and second.user.state == pb.USER_STATE_ACTIVE
    assert second.session.refresh_token != first.session.refresh_token
    assert wrong[:2] == by_password[:2] == (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")
    # The account's follow-ups ran once: one confirmed use of the code, one set of own codes.
    connection = await asyncpg.connect(stack.database_url)
    try:
        holds = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE canonical_email = $1", canonical_email(email)
        )
        await connection.execute(
            "UPDATE auth.verification_codes SET expire_time = now() - interval '1 second' WHERE user_id = $1::uuid",
            first.user.id,
        )
    finally:
        await connection.close()
    expired = await _refusal(stack.auth.VerifyEmail(again))
    assert holds == 1
    assert expired[:2] == (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")


async def test_an_expired_code_fails_and_a_resent_one_works(stack: Stack) -> None:
    (code,) = await stack.mint()
    email = someone()
    registered = await stack.register(email, code)
    first = await stack.verification_code(email)
    connection = await asyncpg.connect(stack.database_url)
    try:
        await connection.execute(
            "UPDATE auth.verification_codes SET expire_time = now() - interval '1 second'"
            " WHERE user_id = (SELECT id FROM auth.users WHERE canonical_email = $1)",
            canonical_email(email),
        )
    finally:
        await connection.close()

    refused = await _refusal(
        stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=first, registration=registered.registration))
    )
    await stack.auth.ResendVerification(pb.ResendVerificationRequest(email=email, registration=registered.registration))
    verified = await stack.verify(email, registered, nth=2)

    assert refused[:2] == (grpc.StatusCode.UNAUTHENTICATED, "VERIFICATION_CODE_INVALID")
    assert verified.user.state == pb.USER_STATE_ACTIVE


async def test_a_reset_link_works_once_and_ends_every_session(stack: Stack) -> None:
    email, verified = await stack.signed_up()
    await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=email))
    token = await stack.link_token(email)
    new_password = "another passphrase entirely"

    await stack.auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password=new_password))
    again = await _refusal(
        stack.auth.ResetPassword(pb.ResetPasswordRequest(token=token, new_password="yet another long one"))
    )

    assert again[:2] == (grpc.StatusCode.UNAUTHENTICATED, "RESET_TOKEN_INVALID")
    old_session = await _refusal(stack.auth.Refresh(pb.RefreshRequest(refresh_token=verified.session.refresh_token)))
    assert old_session[:2] == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")
    assert (await _refusal(stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))))[1] == (
        "INVALID_CREDENTIALS"
    )
    assert (await stack.auth.Login(pb.LoginRequest(email=email, password=new_password))).session.access_token


async def test_registering_an_active_email_answers_alike_mails_the_owner_and_holds_like_anyone(stack: Stack) -> None:
    email, _ = await stack.signed_up()
    (code,) = await stack.mint()

    answer = await stack.register(email, code, password="somebody else's passphrase")

    assert answer.HasField("verification_expire_time") and answer.registration

    async def noticed() -> bool:
        return any("tried to sign up" in mail.text.lower() for mail in stack.received_by(email))

    await eventually(noticed, what="the owner's notice")
    connection = await asyncpg.connect(stack.database_url)
    try:
        holds = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE canonical_email = $1 AND state = 1", canonical_email(email)
        )
    finally:
        await connection.close()
    # Held as for a new email, and left to lapse as an abandoned registration's hold is.
    assert holds == 1


def _shape(message: Message) -> list[str]:
    """Which fields an answer sets, not their values (times differ from call to call)."""
    return sorted(field.name for field, _ in message.ListFields())


async def test_no_method_tells_whether_an_email_is_registered(stack: Stack) -> None:
    known, _ = await stack.signed_up()
    unknown = someone()
    (code_a,) = await stack.mint()
    (code_b,) = await stack.mint()

    registered = [
        _shape(await stack.register(address, code, "a fresh passphrase here"))
        for address, code in ((known, code_a), (unknown, code_b))
    ]
    resent = [
        _shape(await stack.auth.ResendVerification(pb.ResendVerificationRequest(email=address)))
        for address in (known, unknown)
    ]
    resets = [
        _shape(await stack.auth.RequestPasswordReset(pb.RequestPasswordResetRequest(email=address)))
        for address in (known, unknown)
    ]
    sign_ins = []
    for address in (known, unknown):
        started = time.perf_counter()
        refused = await _refusal(stack.auth.Login(pb.LoginRequest(email=address, password="not the password!")))
        sign_ins.append((refused, time.perf_counter() - started))
    verifies = [
        await _refusal(stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=address, code="123456", password=PASSWORD)))
        for address in (known, unknown)
    ]

    assert registered[0] == registered[1]
    assert resent[0] == resent[1] and resets[0] == resets[1]
    assert (
        sign_ins[0][0]
        == sign_ins[1][0]
        == (
            grpc.StatusCode.UNAUTHENTICATED,
            "INVALID_CREDENTIALS",
            "the email or the password is wrong",
        )
    )
    # Both checked a password hash: an unknown email is not answered markedly faster.
    assert sign_ins[1][1] > 0.3 * sign_ins[0][1]
    assert verifies[0] == verifies[1]


async def test_bad_input_is_refused_with_each_field_named(stack: Stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.auth.Register(pb.RegisterRequest(email="not an email", password="password1234", invite_code=""))

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert {v.field for v in field_violations(raised.value)} == {"email", "password", "invite_code"}


async def test_a_mistyped_invite_code_is_refused_for_the_invite_code_field(stack: Stack) -> None:
    (code,) = await stack.mint()
    typo = code[:-1] + ("2" if code[-1] != "2" else "3")

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.register(someone(), typo)

    assert raised.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in field_violations(raised.value)] == ["invite_code"]


async def test_failed_sign_ins_slow_down_then_stop_with_a_retry_time(stack_with: StackFactory) -> None:
    async with stack_with(auth_login_failures_per_account=4) as stack:
        email, _ = await stack.signed_up()
        wrong = pb.LoginRequest(email=email, password="not the password!")
        for _ in range(4):
            assert (await _refusal(stack.auth.Login(wrong)))[1] == "INVALID_CREDENTIALS"

        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await stack.auth.Login(pb.LoginRequest(email=email, password=PASSWORD))

        assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(limited.value).reason == "RATE_LIMITED"  # type: ignore[union-attr]
        retry = retry_info(limited.value)
        assert retry is not None and retry.retry_delay.seconds > 0


async def test_registrations_are_budgeted_per_email_and_per_client(stack_with: StackFactory) -> None:
    # A client address of this test's own: budgets live in Redis, which other tests share.
    client = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    async with stack_with(auth_emails_per_hour=2, auth_registrations_per_hour=5) as stack:
        codes = await stack.mint(count=6)
        email = someone()
        for code in codes[:2]:
            await stack.register(email, code, client=client)

        with pytest.raises(grpc.aio.AioRpcError) as per_email:
            await stack.register(email, codes[2], client=client)
        await stack.register(someone(), codes[3], client=client)
        await stack.register(someone(), codes[4], client=client)
        with pytest.raises(grpc.aio.AioRpcError) as per_client:
            await stack.register(someone(), codes[5], client=client)

    for limited in (per_email, per_client):
        assert limited.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert error_info(limited.value).reason == "RATE_LIMITED"  # type: ignore[union-attr]
        assert retry_info(limited.value) is not None


async def test_a_caller_that_is_not_the_edge_cannot_spend_a_clients_budget(stack_with: StackFactory) -> None:
    """Straight to auth_svc's port, claiming the victim's address as Envoy would pass it, but
    without the edge's token: counted against the caller's own address (security issue 14.4)."""
    victim = f"2001:db8::{uuid.uuid4().hex[:4]}:{uuid.uuid4().hex[:4]}"
    async with stack_with(auth_registrations_per_hour=2) as stack:
        claimed = pb.RegisterRequest(email=someone(), password=PASSWORD, invite_code="ABCD-EFGH-J")
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await stack.auth.Register(claimed, metadata=((EXTERNAL_ADDRESS, victim),))
        codes = await stack.mint(count=3)
        for code in codes[:2]:
            await stack.register(someone(), code, client=victim)
        with pytest.raises(grpc.aio.AioRpcError) as third:
            await stack.register(someone(), codes[2], client=victim)

    assert error_info(third.value).reason == "RATE_LIMITED"  # type: ignore[union-attr]
