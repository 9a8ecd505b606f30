"""Multi-stage tokens for flows with a second step (DESIGN §4): `{SUBJECT_ID}:{FUNCTION}:{TOKEN}:{STATE}`,
for example an admin's sign-in between the password and the TOTP code.

The random part is kept in Redis only as its SHA-256, under the subject's id, with the function and
state it was issued for and a TTL. Redeeming takes it away (GETDEL), so a token works once, only
for its own subject, function and state, and only until it lapses. Without Redis no token can be
issued or redeemed: the flow answers `UNAVAILABLE` rather than skip its second step.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import secrets
import uuid
from dataclasses import dataclass

from redis.exceptions import RedisError

from mesh.errors import Unavailable
from mesh.redis import Commands, KeySpace

_UNAVAILABLE = "STAGE_TOKENS_UNAVAILABLE"


@dataclass(frozen=True)
class StageToken:
    token: str
    expire_time: datetime.datetime


class StageTokens:
    def __init__(self, pipe: Commands, keys: KeySpace, ttl: float) -> None:
        self._pipe = pipe
        self._keys = keys
        self._ttl = ttl

    async def issue(self, subject: uuid.UUID, function: str, state: str) -> StageToken:
        secret = secrets.token_urlsafe(32)
        expire = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self._ttl)
        try:
            await self._pipe.execute("SET", self._key(str(subject), secret), _stage(function, state), "PX", self._ms())
        except RedisError:
            raise Unavailable(_UNAVAILABLE, "this step cannot be started right now; try again shortly") from None
        return StageToken(f"{subject}:{function}:{secret}:{state}", expire.replace(microsecond=0))

    async def peek(self, token: str, function: str, state: str) -> uuid.UUID | None:
        """The subject of `token` as `redeem` would answer it, leaving the token unused."""
        return await self._subject(token, function, state, "GET")

    async def redeem(self, token: str, function: str, state: str) -> uuid.UUID | None:
        """The subject of `token` if it was issued for `function` in `state` and is unused and
        unexpired; it is used up either way once its subject's entry is found."""
        return await self._subject(token, function, state, "GETDEL")

    async def _subject(self, token: str, function: str, state: str, read: str) -> uuid.UUID | None:
        if token.count(":") != 3:
            return None
        subject, found_function, secret, found_state = token.split(":")
        if not secret or not _is_uuid(subject):
            return None
        try:
            stored = await self._pipe.execute(read, self._key(subject, secret))
        except RedisError:
            raise Unavailable(_UNAVAILABLE, "this step cannot be checked right now; try again shortly") from None
        issued_for = _stage(function, state).encode()
        if stored != issued_for or _stage(found_function, found_state).encode() != issued_for:
            return None
        return uuid.UUID(subject)

    def _key(self, subject: str, secret: str) -> str:
        return self._keys.tagged(subject, "stage", hashlib.sha256(secret.encode()).hexdigest())

    def _ms(self) -> int:
        return max(1, math.ceil(self._ttl * 1000))


def _stage(function: str, state: str) -> str:
    return f"{function}:{state}"


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
