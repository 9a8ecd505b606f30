"""Failed sign-ins slow down, then stop, per account and per client address: guessing a password
gets slower long before an account is locked. Users' and admins' sign-ins alike.

Redis being away opens the throttle (it guards guessing speed, not correctness) and the log says so.
"""

from __future__ import annotations

import structlog
from redis.exceptions import RedisError

from mesh.errors import RateLimited
from mesh.redis import KeySpace
from mesh.windows import Hit, WindowCounters

log = structlog.get_logger("mesh.sign_ins")


class AccountLocked(RateLimited):
    """The account's budget of failed sign-ins is spent (its client's may not be)."""


def sign_in_delay(failures: int, free: int = 3, step: float = 0.25, cap: float = 4.0) -> float:
    """Seconds a sign-in waits after `failures` recent failures: nothing for the first few typos,
    then doubling up to `cap`, so guessing slows down long before an account is locked."""
    if failures < free:
        return 0.0
    return min(cap, step * 2.0 ** (failures - free))


class SignInThrottle:
    def __init__(
        self, counters: WindowCounters, keys: KeySpace, per_account: int, per_client: int, window: float
    ) -> None:
        self._counters = counters
        self._keys = keys
        self._per_account = per_account
        self._per_client = per_client
        self._window = max(1.0, window)

    async def admit(self, account: str, client: str) -> int:
        """The recent failed sign-ins of `account` (its canonical email; `sign_in_delay` says how
        long this one waits); raises `RateLimited` once a budget is spent."""
        try:
            mine, address = await self._counters.peek([self._account(account), self._client(client)])
        except RedisError:
            log.warning("sign-in throttle unavailable, allowing")
            return 0
        if address.count >= self._per_client:
            raise RateLimited("too many failed sign-ins from this address", address.seconds_left or self._window)
        if mine.count >= self._per_account:
            raise AccountLocked("too many failed sign-ins for this account", mine.seconds_left or self._window)
        return mine.count

    async def failed(self, account: str, client: str) -> None:
        # Each window starts with its first failure and ends on its own.
        keys = (self._account(account), self._client(client))
        try:
            await self._counters.add([Hit(key, 1, self._window) for key in keys])
        except RedisError:
            log.warning("sign-in throttle unavailable; a failure went uncounted")

    async def succeeded(self, account: str) -> None:
        try:
            await self._counters.clear(self._account(account))
        except RedisError:
            log.warning("sign-in throttle unavailable; failures stay counted")

    def _account(self, account: str) -> str:
        return self._keys.tagged(account, "sign-in-failures")

    def _client(self, client: str) -> str:
        return self._keys.tagged(client, "sign-in-failures")
