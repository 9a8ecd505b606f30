"""Wallet challenges: single-use nonces in Redis, each bound to the user who asked and the address
that is to sign. A nonce is spent by one atomic script, so of any number of concurrent links of
one challenge exactly one gets it; a spent nonce stays known, as spent, until its key lapses, so
that a replay is told so."""

from __future__ import annotations

import json
import uuid

import redis.asyncio as aioredis

from chain_svc import domain
from mesh.redis import KeySpace

_SPENT = "spent"
# After the message's own expiry, so that a late replay still meets the spent mark.
_KEPT_BEYOND_EXPIRY = 60
_SPEND = """
local held = redis.call('GET', KEYS[1])
if not held then return 'unknown' end
if held == ARGV[2] then return 'used' end
if held ~= ARGV[1] then return 'unknown' end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 'ok'
"""


class Challenges:
    def __init__(self, redis: aioredis.Redis, keys: KeySpace, ttl: float) -> None:
        self._redis = redis
        self._keys = keys
        self._ttl = ttl
        self._spend = redis.register_script(_SPEND)

    def _key(self, nonce: str) -> str:
        return self._keys.key("challenge", nonce)

    async def issue(self, user_id: uuid.UUID, address: str) -> str:
        nonce = domain.new_nonce()
        await self._redis.set(self._key(nonce), _binding(user_id, address), ex=int(self._ttl) + _KEPT_BEYOND_EXPIRY)
        return nonce

    async def spend(self, nonce: str, user_id: uuid.UUID, address: str) -> None:
        """Spends `nonce` if it was issued to `user_id` for `address` and is unspent. Someone
        else's nonce is refused like one never issued, so a refusal tells nothing about others."""
        outcome = (await self._spend(keys=[self._key(nonce)], args=[_binding(user_id, address), _SPENT])).decode()
        if outcome == "used":
            raise domain.Refusal(domain.CHALLENGE_USED, "this challenge has been used; ask for a new one")
        if outcome != "ok":
            raise domain.Refusal(domain.CHALLENGE_UNKNOWN, "no such challenge for this wallet; ask for a new one")


def _binding(user_id: uuid.UUID, address: str) -> str:
    return json.dumps([str(user_id), address])
