"""Linking a wallet: a challenge for an address, then the address's signature over it (EIP-4361).

A link is refused before the nonce is touched when the message is not ours, has expired, or is
not signed by its address; only then is the nonce spent (chain_svc.challenges), so nobody can
burn another's challenge with a bad signature, and of concurrent links of one challenge exactly
one goes on to the store."""

from __future__ import annotations

import datetime
import uuid

from chain_svc import domain
from chain_svc.challenges import Challenges
from chain_svc.rpc import ChainReader
from chain_svc.settings import ChainSettings
from chain_svc.store import Wallet, WalletStore
from mesh.errors import RateLimited
from mesh.limits import FixedWindowLimit


class Linking:
    def __init__(
        self,
        store: WalletStore,
        challenges: Challenges,
        reader: ChainReader,
        own: ChainSettings,
        budget: FixedWindowLimit,
    ) -> None:
        self._store = store
        self._challenges = challenges
        self._reader = reader
        self._own = own
        self._budget = budget
        """Challenges per user and hour: each one holds a nonce in Redis until it lapses."""

    async def site(self) -> domain.Site:
        chain_id = self._own.chain_id
        if chain_id is None:
            try:
                chain_id = await self._reader.chain_id()
            except Exception as error:  # the node down, slow, its breaker open: anything but an answer
                raise domain.Refusal(domain.CHAIN_UNAVAILABLE, "the chain's node does not answer; try again") from error
        return domain.Site(self._own.siwe_domain, self._own.siwe_uri, chain_id)

    async def challenge(self, user_id: uuid.UUID, address: str) -> tuple[str, datetime.datetime]:
        """The message for `address` to sign, and when it lapses."""
        checksummed = domain.checksummed(address)
        if wait := await self._budget.wait_after(str(user_id)):
            raise RateLimited("too many wallet challenges for this account; wait a while", wait)
        site = await self.site()
        nonce = await self._challenges.issue(user_id, checksummed)
        now = datetime.datetime.now(datetime.UTC)
        message = domain.challenge(site, checksummed, nonce, now, self._own.challenge_ttl)
        return message.prepare_message(), domain.expiry_of(message)

    async def link(self, user_id: uuid.UUID, text: str, signature: str) -> Wallet:
        site = await self.site()
        message = domain.signed_for(site, text, signature, datetime.datetime.now(datetime.UTC))
        await self._challenges.spend(message.nonce, user_id, message.address)
        return await self._store.link(user_id, message.address, message.chain_id)
