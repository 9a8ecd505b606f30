"""A person's wallet on `/me`: shown with its latest snapshot, linked with Sign-In with Ethereum,
unlinked. Signing needs the person's wallet in their browser (EIP-1193, `window.ethereum`), so
linking is a script (static/wallet.js) that talks JSON to these handlers; chain_svc makes the
message and checks the signature. Showing and unlinking work without a script."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from invitemesh.chain.v1 import chain_service_pb2 as chain
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from web_svc import domain
from web_svc.calls import Browser, Mesh, Refused
from web_svc.pages import script_failure, see_other
from web_svc.security import checked_form, checked_json
from web_svc.sessions import Sessions


@dataclass(frozen=True)
class TokenShown:
    contract: str
    balance: str


@dataclass(frozen=True)
class WalletShown:
    address: str
    chain_id: int
    linked: str
    balance: str | None
    """In ether; None until the first snapshot."""
    transactions: int | None
    tokens: list[TokenShown]
    block: int | None
    read: str | None


def shown(wallet: chain.Wallet) -> WalletShown:
    """A wallet as the pages show it, for its owner and for admins."""
    snapshot = wallet.latest_snapshot if wallet.HasField("latest_snapshot") else None
    return WalletShown(
        address=wallet.address,
        chain_id=wallet.chain_id,
        linked=wallet.link_time.ToDatetime().strftime("%Y-%m-%d"),
        balance=domain.ether(int(snapshot.balance_wei)) if snapshot else None,
        transactions=snapshot.nonce if snapshot else None,
        tokens=[
            TokenShown(domain.short_address(token.contract_address), f"{int(token.balance):,}")
            for token in (snapshot.token_balances if snapshot else [])
        ],
        block=snapshot.block_number if snapshot else None,
        read=snapshot.read_time.ToDatetime().strftime("%Y-%m-%d %H:%M UTC") if snapshot else None,
    )


class Wallets:
    def __init__(self, mesh: Mesh, sessions: Sessions) -> None:
        self._mesh = mesh
        self._sessions = sessions

    async def mine(self, browser: Browser) -> WalletShown | None:
        """The person's wallet; None when none is linked. chain_svc down raises `Refused`."""
        try:
            answer = await self._mesh.call(self._mesh.chain.GetMyWallet, chain.GetMyWalletRequest(), browser)
        except Refused as refused:
            if refused.code is grpc.StatusCode.NOT_FOUND:
                return None
            raise
        return shown(answer.wallet)

    async def challenge(self, request: Request) -> Response:
        body = await checked_json(request)
        if (signed_in := await self._sessions.signed_in_as(request)) is None:
            return script_failure("Sign in again.", 401)
        asked = chain.CreateWalletChallengeRequest(address=str(body.get("address", "")))
        try:
            answer = await self._mesh.call(self._mesh.chain.CreateWalletChallenge, asked, signed_in.browser)
        except Refused as refused:
            return script_failure(domain.message_for(refused.reason), 400)
        return JSONResponse({"message": answer.message})

    async def link(self, request: Request) -> Response:
        body = await checked_json(request)
        if (signed_in := await self._sessions.signed_in_as(request)) is None:
            return script_failure("Sign in again.", 401)
        asked = chain.LinkWalletRequest(message=str(body.get("message", "")), signature=str(body.get("signature", "")))
        try:
            answer = await self._mesh.call(self._mesh.chain.LinkWallet, asked, signed_in.browser)
        except Refused as refused:
            return script_failure(domain.message_for(refused.reason), 400)
        return JSONResponse({"address": answer.wallet.address})

    async def unlink(self, request: Request) -> Response:
        await checked_form(request)
        if (signed_in := await self._sessions.signed_in_as(request)) is None:
            return see_other("/sign-in")
        try:
            await self._mesh.call(self._mesh.chain.UnlinkWallet, chain.UnlinkWalletRequest(), signed_in.browser)
        except Refused as refused:
            if refused.code is not grpc.StatusCode.NOT_FOUND:  # unlinked already: what was asked holds
                raise
        return see_other("/me")
