"""Multi-stage tokens against a real Redis: issued for a subject, function and state; redeemed
once; lapsed after their TTL; refused for anything they were not issued for; and never kept in
Redis as themselves."""

from __future__ import annotations

import time
import uuid

from mesh.redis import KeySpace, create_redis
from mesh.redis_pipe import RedisPipe
from mesh.settings import Settings
from mesh.stage_tokens import StageTokens
from tests.conftest import eventually


def _tokens(pipe: RedisPipe, ttl: float = 60.0) -> StageTokens:
    return StageTokens(pipe, KeySpace(f"stage-{uuid.uuid4().hex[:8]}"), ttl)


async def test_a_token_names_its_parts_and_redeems_once(pipe: RedisPipe) -> None:
    tokens, subject = _tokens(pipe), uuid.uuid4()

    issued = await tokens.issue(subject, "admin-sign-in", "password-ok")

    assert issued.token.startswith(f"{subject}:admin-sign-in:") and issued.token.endswith(":password-ok")
    assert await tokens.redeem(issued.token, "admin-sign-in", "password-ok") == subject
    assert await tokens.redeem(issued.token, "admin-sign-in", "password-ok") is None


async def test_a_token_is_refused_for_another_function_state_or_subject(pipe: RedisPipe) -> None:
    tokens, subject = _tokens(pipe), uuid.uuid4()
    for wanted in (("step-up", "password-ok"), ("admin-sign-in", "totp-ok")):
        issued = await tokens.issue(subject, "admin-sign-in", "password-ok")
        assert await tokens.redeem(issued.token, *wanted) is None
    issued = await tokens.issue(subject, "admin-sign-in", "password-ok")
    _, function, secret, state = issued.token.split(":")

    assert await tokens.redeem(f"{uuid.uuid4()}:{function}:{secret}:{state}", function, state) is None
    assert await tokens.redeem(f"{subject}:{function}:{secret}x:{state}", function, state) is None
    assert await tokens.redeem(f"not-a-uuid:{function}:{secret}:{state}", function, state) is None
    assert await tokens.redeem(issued.token, function, state) == subject


async def test_a_token_lapses(pipe: RedisPipe) -> None:
    tokens, subject = _tokens(pipe, ttl=0.2), uuid.uuid4()
    issued = await tokens.issue(subject, "admin-sign-in", "password-ok")
    started = time.monotonic()

    async def past_its_ttl() -> bool:
        return time.monotonic() - started > 0.3

    await eventually(past_its_ttl, within=2, what="the token's TTL")
    assert await tokens.redeem(issued.token, "admin-sign-in", "password-ok") is None


async def test_redis_keeps_a_digest_of_the_secret_not_the_secret(pipe: RedisPipe, redis_url: str) -> None:
    keys = KeySpace(f"stage-{uuid.uuid4().hex[:8]}")
    issued = await StageTokens(pipe, keys, 60).issue(uuid.uuid4(), "admin-sign-in", "password-ok")
    secret = issued.token.split(":")[2]
    client = create_redis(Settings(redis_url=redis_url))
    try:
        stored = [key async for key in client.scan_iter(match=f"{keys.prefix}:*")]
    finally:
        await client.aclose()

    assert len(stored) == 1 and secret.encode() not in stored[0]
