"""Budgets in Redis that stop abuse of the public methods: registrations and emails are counted
per client and per address. A client's budget may answer `RATE_LIMITED`; an email address's
budget never says so where that would reveal whether the address has an account. (Failed
sign-ins are mesh.sign_ins' business.)
"""

from __future__ import annotations

from mesh.clients import client_address
from mesh.errors import RateLimited
from mesh.limits import FixedWindowLimit, spend_together


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
