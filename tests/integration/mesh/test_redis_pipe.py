"""The Redis pipe against a real Redis: commands sent together keep their order, and an error
reply fails only its own command. (mesh.nonces' tests cover lost connections and silence.)"""

from __future__ import annotations

import asyncio
import uuid

from redis.exceptions import ResponseError

from mesh.redis_pipe import RedisPipe


async def test_commands_sent_together_are_answered_in_their_order(pipe: RedisPipe) -> None:
    key = f"pipe-test:{uuid.uuid4().hex}"

    replies = await pipe.execute_all([("SET", key, 5, "EX", 60, "NX"), ("INCR", key), ("INCR", key), ("GET", key)])

    assert replies == [b"OK", 6, 7, b"7"]


async def test_an_error_reply_fails_only_its_own_command(pipe: RedisPipe) -> None:
    key = f"pipe-test:{uuid.uuid4().hex}"
    await pipe.execute("SET", key, "not a number", "EX", 60)

    outcomes = await asyncio.gather(
        pipe.execute("INCR", key), pipe.execute("GET", key), pipe.execute("EXISTS", key), return_exceptions=True
    )

    assert isinstance(outcomes[0], ResponseError)
    assert list(outcomes[1:]) == [b"not a number", 1]
