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

from mesh.clients import client_address
from mesh.errors import RateLimited
from mesh.limits import FixedWindowLimit, spend_together
from mesh.redis import KeySpace
from mesh.windows import Hit, WindowCounters

log = structlog.get_logger("auth_svc.throttle")


class SignInThrottle:
    def __init__(
        self, counters: WindowCounters, keys: KeySpace, per_account: int, per_client: int, window: float
    ) -> None:
        self._counters = counters
        self._keys = keys
        self._per_account = per_account
        self._per_client = per_client
        self._window = max(1.0, window)

    async def admit(self, canonical_email: str, client: str) -> int:
        """The account's recent failed sign-ins (`sign_in_delay` says how long this one waits);
        raises `RateLimited` once a budget is spent."""
        try:
            account, address = await self._counters.peek([self._account(canonical_email), self._client(client)])
        except RedisError:
            log.warning("sign-in throttle unavailable, allowing")
            return 0
        if address.count >= self._per_client:
            raise RateLimited("too many failed sign-ins from this address", address.seconds_left or self._window)
        if account.count >= self._per_account:
            raise RateLimited("too many failed sign-ins for this account", account.seconds_left or self._window)
        return account.count

    async def failed(self, canonical_email: str, client: str) -> None:
        # Each window starts with its first failure and ends on its own.
        keys = (self._account(canonical_email), self._client(client))
        try:
            await self._counters.add([Hit(key, 1, self._window) for key in keys])
        except RedisError:
            log.warning("sign-in throttle unavailable; a failure went uncounted")

    async def succeeded(self, canonical_email: str) -> None:
        try:
            await self._counters.clear(self._account(canonical_email))
        except RedisError:
            log.warning("sign-in throttle unavailable; failures stay counted")

    def _account(self, canonical_email: str) -> str:
        return self._keys.tagged(canonical_email, "sign-in-failures")

    def _client(self, client: str) -> str:
        return self._keys.tagged(client, "sign-in-failures")


class RequestBudgets:
    """What registrations, resends and reset requests spend: the client's budget, which refuses
    past its end, and the email's, which only the caller may tell (or not) to the client."""

    def __init__(self, per_client: FixedWindowLimit, per_email: FixedWindowLimit) -> None:
        self._per_client = per_client
        self._per_email = per_email

    async def spend(self, canonical_email: str) -> float:
        """Spends one of each, for every email alike; raises `RATE_LIMITED` when the client's is
        spent, and answers the seconds until the email's renews (0 while it lasts)."""
        client_wait, email_wait = await spend_together(
            [(self._per_client, client_address()), (self._per_email, canonical_email)]
        )
        if client_wait:
            raise RateLimited("too many requests from this address", client_wait)
        return email_wait
