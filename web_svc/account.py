"""`/me`: the account, its codes with their uses and share links, who joined through them, and the
person's wallet (web_svc.wallets)."""

from __future__ import annotations

import asyncio

from invitemesh.invite.v1 import invite_service_pb2 as invite
from starlette.requests import Request
from starlette.responses import Response

from web_svc import domain
from web_svc.calls import Browser, Mesh, Refused
from web_svc.pages import page, see_other
from web_svc.sessions import Sessions
from web_svc.wallets import Wallets, WalletShown

LISTED = 100
"""Codes and referrals shown at most (a person has a handful of codes)."""
CODE_STATES = {
    invite.CODE_STATE_ACTIVE: "active",
    invite.CODE_STATE_DISABLED: "switched off",
    invite.CODE_STATE_EXPIRED: "expired",
}


class Account:
    def __init__(self, mesh: Mesh, sessions: Sessions, wallets: Wallets, public_url: str | None) -> None:
        self._mesh = mesh
        self._sessions = sessions
        self._wallets = wallets
        self._public_url = public_url

    async def me(self, request: Request) -> Response:
        signed_in = await self._sessions.signed_in_as(request)
        if signed_in is None:
            return see_other("/sign-in")
        browser = signed_in.browser
        # One call for the codes, each with who joined through it, and one for the wallet.
        asked = invite.ListMyCodesRequest(page_size=LISTED, view=invite.INVITE_CODE_VIEW_FULL)
        codes, wallet = await asyncio.gather(
            self._mesh.call(self._mesh.invite.ListMyCodes, asked, browser), self._wallet(browser)
        )
        joined = sorted(
            (person for code in codes.codes for person in code.referrals),
            key=lambda person: person.join_time.ToNanoseconds(),
            reverse=True,
        )
        origin = self._public_url or str(request.base_url)
        return page(
            request,
            "me.html.j2",
            personal=True,
            email=signed_in.email,
            member_since=signed_in.member_since,
            wallet=wallet,
            codes=[
                {
                    "code": code.code,
                    "state": CODE_STATES.get(code.state, "unknown"),
                    "active": code.state == invite.CODE_STATE_ACTIVE,
                    "used": code.confirmed_uses,
                    "uses": code.max_uses or None,
                    "link": domain.share_link(origin, code.code),
                }
                for code in codes.codes
            ],
            joined=[
                {
                    "email": person.masked_email,
                    "code": person.code,
                    "date": person.join_time.ToDatetime().date().isoformat(),
                }
                for person in joined[:LISTED]
            ],
        )

    async def _wallet(self, browser: Browser) -> WalletShown | str | None:
        """The wallet, or a note that it cannot be shown now: the codes do not wait on chain_svc."""
        try:
            return await self._wallets.mine(browser)
        except Refused:
            return domain.WALLET_NOT_SHOWN
