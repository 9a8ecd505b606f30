"""Registrations at once, with real concurrency against real services: the same email with many
codes, and many emails on one code with few uses."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
from invitemesh.auth.v1 import auth_service_pb2 as pb

from mesh.emails import canonical_email
from mesh.errors import error_info
from mesh.mailing import SEND_EMAIL
from mesh.redis import KeySpace, create_redis
from mesh.services import AUTH
from tests.conftest import eventually
from tests.integration.auth_svc.conftest import PASSWORD, Stack, someone


async def _outcomes(calls: list[object]) -> list[str]:
    """`OK` or the refusal's reason, for each call."""

    async def outcome(call: object) -> str:
        try:
            await call  # type: ignore[misc]
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            return info.reason if info else error.code().name
        return "OK"

    return list(await asyncio.gather(*(outcome(call) for call in calls)))


async def test_fifty_registrations_of_one_email_stay_pending_side_by_side_and_the_verified_one_takes_all(
    stack: Stack,
) -> None:
    codes = await stack.mint(count=50)
    email = someone()
    canonical = canonical_email(email)

    outcomes = await _outcomes([stack.register(email, code) for code in codes])

    assert outcomes == ["OK"] * 50
    pending = await _fetch(stack, "SELECT hold_id FROM auth.users WHERE canonical_email = $1 AND state = 1", canonical)
    live = await _fetch(stack, "SELECT id FROM invite.holds WHERE canonical_email = $1 AND state = 1", canonical)
    assert len(pending) == 50 and {row["hold_id"] for row in pending} == {row["id"] for row in live}

    # From another device: the password names the registration whose mailed code it is.
    mailed = await stack.verification_code(email, nth=17)
    verified = await stack.auth.VerifyEmail(pb.VerifyEmailRequest(email=email, code=mailed, password=PASSWORD))

    held = "SELECT state, count(*) AS n FROM invite.holds WHERE canonical_email = $1 GROUP BY state"

    async def settled() -> bool:
        return {row["state"]: row["n"] for row in await _fetch(stack, held, canonical)} == {2: 1, 3: 49}

    await eventually(settled, within=30, what="one use confirmed and the other 49 given back")
    users = await _fetch(stack, "SELECT id, state FROM auth.users WHERE canonical_email = $1", canonical)
    assert [(str(row["id"]), row["state"]) for row in users] == [(verified.user.id, pb.USER_STATE_ACTIVE)]


async def _fetch(stack: Stack, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(stack.database_url)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def test_two_hundred_registrations_on_a_ten_use_code_make_exactly_ten_pending_accounts(stack: Stack) -> None:
    (code,) = await stack.mint(max_uses=10)
    emails = [f"rush.{uuid.uuid4().hex[:12]}@example.com" for _ in range(200)]

    outcomes = await _outcomes([stack.register(email, code) for email in emails])

    assert outcomes.count("OK") == 10
    assert set(outcomes) == {"OK", "INVITE_CODE_EXHAUSTED"}
    connection = await asyncpg.connect(stack.database_url)
    try:
        pending = await connection.fetch(
            "SELECT canonical_email, hold_id FROM auth.users WHERE canonical_email = ANY($1::text[])", emails
        )
        codes = await connection.fetch(
            "SELECT user_id FROM auth.verification_codes v JOIN auth.users u ON u.id = v.user_id"
            " WHERE u.canonical_email = ANY($1::text[])",
            emails,
        )
        live = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE canonical_email = ANY($1::text[]) AND state = 1", emails
        )
    finally:
        await connection.close()
    accepted = {email for email, outcome in zip(emails, outcomes, strict=True) if outcome == "OK"}
    assert {row["canonical_email"] for row in pending} == accepted
    assert len(codes) == 10 and live == 10


async def test_a_double_submit_gets_the_first_answer_and_sends_one_mail(stack: Stack) -> None:
    (code,) = await stack.mint(max_uses=5)
    email = someone()

    answers = await asyncio.gather(*(stack.register(email, code) for _ in range(5)))

    assert len({answer.SerializeToString() for answer in answers}) == 1
    await stack.mail_to(email)
    connection = await asyncpg.connect(stack.database_url)
    try:
        holds = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE canonical_email = $1", canonical_email(email)
        )
        mails = await connection.fetchval(
            "SELECT count(*) FROM auth.outbox WHERE aggregate = $1", canonical_email(email)
        )
    finally:
        await connection.close()
    assert holds == 1 and mails == 1


async def test_the_same_submission_sent_again_after_its_answer_was_lost_gets_that_registration(
    stack: Stack,
) -> None:
    """The replica that wrote the registration died before it answered and before it recorded
    the answer for double submits: the client's retry finds the registration in the database."""
    (code,) = await stack.mint(max_uses=5)
    email = someone()
    first = await stack.register(email, code)
    redis = create_redis(stack.settings)
    try:
        await redis.delete(KeySpace(AUTH.redis_prefix).tagged(canonical_email(email), "registration"))
    finally:
        await redis.aclose()

    again = await stack.register(email, code)
    another = await stack.register(email, code, password="another passphrase of mine")

    assert again.registration == first.registration
    assert another.registration != first.registration
    verified = await stack.verify(email, again)
    assert verified.user.state == pb.USER_STATE_ACTIVE
    connection = await asyncpg.connect(stack.database_url)
    try:
        holds = await connection.fetchval(
            "SELECT count(*) FROM invite.holds WHERE canonical_email = $1", canonical_email(email)
        )
        verification_mails = await connection.fetchval(
            "SELECT count(*) FROM auth.outbox WHERE aggregate = $1 AND kind = $2", canonical_email(email), SEND_EMAIL
        )
    finally:
        await connection.close()
    # The code held once (its registrations share the use), and one mail for the registration
    # sent twice, one for the other password's.
    assert holds == 1 and verification_mails == 2


async def test_registrations_are_counted_by_outcome(stack: Stack) -> None:
    registry = stack.servers["auth_svc"].metrics.registry

    def counted(outcome: str) -> float:
        return registry.get_sample_value("mesh_registrations_total", {"outcome": outcome}) or 0.0

    (code,) = await stack.mint(max_uses=1)
    await stack.register(someone(), code)
    await _outcomes([stack.register(someone(), code)])
    email, _ = await stack.signed_up()
    await stack.register(email, (await stack.mint())[0])

    assert (counted("pending"), counted("INVITE_CODE_EXHAUSTED"), counted("duplicate")) == (2.0, 1.0, 1.0)
