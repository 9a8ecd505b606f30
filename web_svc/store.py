"""What web_svc keeps in Redis, keyed by a hash of the browser's cookie: the signed-in user's
tokens (which never reach the browser) and a registration waiting for its mailed code."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from typing import TypeVar

from redis.asyncio import Redis

from mesh.redis import KeySpace

KEYS = KeySpace("web")
Stored = TypeVar("Stored")
# DECR only what exists: a lapsed registration's counter must not come back without a lifetime.
_SPEND = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('decr', KEYS[1]) end return -1"


@dataclass(frozen=True)
class Session:
    access_token: str
    access_expires: float
    """Epoch seconds."""
    refresh_token: str
    refresh_expires: float
    email: str
    """The account's, as auth_svc told at sign-in (a page shows it without asking again)."""
    member_since: str
    """The day the email was proven, ISO 8601."""


@dataclass(frozen=True)
class AdminSession:
    """An admin signed in on this browser: no refresh token exists for admins, so when the access
    token expires the admin signs in again."""

    access_token: str
    expires: float
    """Epoch seconds."""
    admin_id: str
    email: str
    role: int
    """mesh.access.AdminRole."""


@dataclass(frozen=True)
class Pending:
    """A registration whose mailed code the verify page asks for."""

    email: str
    registration: str
    """Register's token naming it: with the code it activates the account, so it stays here."""


def _slot(browser_id: str) -> str:
    # Only a hash of the cookie is stored: whoever reads Redis cannot pose as a browser with it.
    return hashlib.sha256(browser_id.encode()).hexdigest()


class WebStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def session(self, browser_id: str) -> Session | None:
        return _load(Session, await self._redis.get(KEYS.key("session", _slot(browser_id))))

    async def keep_session(self, browser_id: str, session: Session) -> None:
        lifetime = max(1, int(session.refresh_expires - time.time()))
        await self._redis.set(KEYS.key("session", _slot(browser_id)), json.dumps(asdict(session)), ex=lifetime)

    async def drop_session(self, browser_id: str) -> Session | None:
        raw = await self._redis.getdel(KEYS.key("session", _slot(browser_id)))
        return _load(Session, raw)

    async def renewing(self, browser_id: str, within: float) -> bool:
        """Whether this request renews the session (and others wait for it), for `within` seconds."""
        return bool(await self._redis.set(KEYS.key("renewing", _slot(browser_id)), 1, nx=True, px=int(within * 1000)))

    async def renewed(self, browser_id: str) -> None:
        await self._redis.delete(KEYS.key("renewing", _slot(browser_id)))

    async def pending(self, browser_id: str) -> Pending | None:
        return _load(Pending, await self._redis.get(KEYS.tagged(_slot(browser_id), "pending")))

    async def keep_pending(self, browser_id: str, pending: Pending, resends: int, lifetime: float) -> None:
        slot, seconds = _slot(browser_id), max(1, int(lifetime))
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(KEYS.tagged(slot, "pending"), json.dumps(asdict(pending)), ex=seconds)
            pipe.set(KEYS.tagged(slot, "resends"), resends, ex=seconds)
            await pipe.execute()

    async def resends_left(self, browser_id: str) -> int:
        return max(0, int(await self._redis.get(KEYS.tagged(_slot(browser_id), "resends")) or 0))

    async def spend_resend(self, browser_id: str) -> bool:
        """Takes one of the pending registration's resends; False when none was left."""
        left = await self._redis.eval(_SPEND, 1, KEYS.tagged(_slot(browser_id), "resends"))
        return int(left) >= 0

    async def drop_pending(self, browser_id: str) -> None:
        slot = _slot(browser_id)
        await self._redis.delete(KEYS.tagged(slot, "pending"), KEYS.tagged(slot, "resends"))


class AdminStore:
    """The console's state: a sign-in waiting for its second step, and a signed-in admin."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def keep_mfa_token(self, browser_id: str, token: str, lifetime: float) -> None:
        await self._redis.set(KEYS.key("admin-mfa", _slot(browser_id)), token, ex=max(1, int(lifetime)))

    async def take_mfa_token(self, browser_id: str) -> str | None:
        """The first step's token, once: a wrong code means signing in with the password again."""
        token = await self._redis.getdel(KEYS.key("admin-mfa", _slot(browser_id)))
        return token.decode() if isinstance(token, bytes) else token

    async def mfa_token(self, browser_id: str) -> str | None:
        """The first step's token, left in place (asking for passkey options does not use it)."""
        token = await self._redis.get(KEYS.key("admin-mfa", _slot(browser_id)))
        return token.decode() if isinstance(token, bytes) else token

    async def session(self, browser_id: str) -> AdminSession | None:
        session = _load(AdminSession, await self._redis.get(KEYS.key("admin", _slot(browser_id))))
        return session if session is not None and session.expires > time.time() else None

    async def keep_session(self, browser_id: str, session: AdminSession) -> None:
        lifetime = max(1, int(session.expires - time.time()))
        await self._redis.set(KEYS.key("admin", _slot(browser_id)), json.dumps(asdict(session)), ex=lifetime)

    async def drop_session(self, browser_id: str) -> AdminSession | None:
        return _load(AdminSession, await self._redis.getdel(KEYS.key("admin", _slot(browser_id))))


def _load(kind: type[Stored], raw: bytes | str | None) -> Stored | None:
    return None if raw is None else kind(**json.loads(raw))
