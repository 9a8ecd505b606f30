"""Budgets in Redis that stop abuse of the public methods: failed sign-ins slow down and then
stop per account and per client address, and registrations and emails are counted per client and
per address. A client's budget may answer `RATE_LIMITED`; an email address's budget never says so
where that would reveal whether the address has an account.

Redis being away opens the budgets (they guard cost and guessing speed, not correctness) and
the log says so.
"""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError

from mesh.errors import RateLimited
from mesh.limits import counted_in_window
from mesh.redis import KeySpace
from mesh.redis_pipe import RedisPipe

log = structlog.get_logger("auth_svc.throttle")


class SignInThrottle:
    def __init__(self, pipe: RedisPipe, keys: KeySpace, per_account: int, per_client: int, window: float) -> None:
        self._pipe = pipe
        self._keys = keys
        self._per_account = per_account
        self._per_client = per_client
        self._window = max(1, round(window))

    async def admit(self, canonical_email: str, client: str) -> int:
        """The account's recent failed sign-ins (`sign_in_delay` says how long this one waits);
        raises `RateLimited` once a budget is spent."""
        account, address = self._account(canonical_email), self._client(client)
        try:
            account_failures, account_ttl, client_failures, client_ttl = await self._pipe.execute_all(
                [(command, key) for key in (account, address) for command in ("GET", "TTL")]
            )
        except RedisError:
            log.warning("sign-in throttle unavailable, allowing")
            return 0
        if int(client_failures or 0) >= self._per_client:
            raise RateLimited("too many failed sign-ins from this address", _seconds(client_ttl, self._window))
        if int(account_failures or 0) >= self._per_account:
            raise RateLimited("too many failed sign-ins for this account", _seconds(account_ttl, self._window))
        return int(account_failures or 0)

    async def failed(self, canonical_email: str, client: str) -> None:
        keys = (self._account(canonical_email), self._client(client))
        try:
            await self._pipe.execute_all([step for key in keys for step in counted_in_window(key, self._window)])
        except RedisError:
            log.warning("sign-in throttle unavailable; a failure went uncounted")

    async def succeeded(self, canonical_email: str) -> None:
        try:
            await self._pipe.execute("DEL", self._account(canonical_email))
        except RedisError:
            log.warning("sign-in throttle unavailable; failures stay counted")

    def _account(self, canonical_email: str) -> str:
        return self._keys.tagged(canonical_email, "sign-in-failures")

    def _client(self, client: str) -> str:
        return self._keys.tagged(client, "sign-in-failures")


def _seconds(ttl: object, fallback: int) -> float:
    return float(ttl) if isinstance(ttl, int) and ttl > 0 else float(fallback)
