"""Signed-in browsers: the session's tokens stay in Redis under the browser's cookie, and the
access token is renewed with the refresh token shortly before it expires, by one request of the
browser while its others wait for the result (a refresh token works once)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace

import grpc
from invitemesh.auth.v1 import auth_service_pb2 as auth
from starlette.requests import Request

from web_svc.calls import Browser, Mesh, Refused
from web_svc.security import start_over
from web_svc.store import Session, WebStore

RENEWAL_WAIT = 5.0
"""Seconds the other requests of a browser wait for its renewal (and how long one may take)."""


@dataclass(frozen=True)
class SignedIn:
    """A signed-in browser: what its calls need, and who it is."""

    browser: Browser
    email: str
    member_since: str


def _renewed_tokens(session: Session, given: auth.Session) -> Session:
    return replace(
        session,
        access_token=given.access_token,
        access_expires=float(given.access_token_expire_time.ToSeconds()),
        refresh_token=given.refresh_token,
        refresh_expires=float(given.refresh_token_expire_time.ToSeconds()),
    )


def anonymous(request: Request) -> Browser:
    return Browser(request.state.address)


class Sessions:
    def __init__(self, store: WebStore, mesh: Mesh, refresh_before: float) -> None:
        self._store = store
        self._mesh = mesh
        self._refresh_before = refresh_before

    async def signed_in(self, request: Request) -> bool:
        return await self._store.session(request.state.browser_id) is not None

    async def signed_in_as(self, request: Request) -> SignedIn | None:
        """This browser with its user's access token, renewed if due; None when not signed in."""
        browser_id = request.state.browser_id
        session = await self._store.session(browser_id)
        if session is None:
            return None
        if session.access_expires - time.time() <= self._refresh_before:
            session = await self._renewed(browser_id, session, anonymous(request))
        if session is None:
            return None
        return SignedIn(Browser(request.state.address, session.access_token), session.email, session.member_since)

    async def begin(self, request: Request, given: auth.Session) -> None:
        """Signs this browser in (under a new cookie) with the session a sign-in answered."""
        me = await self._mesh.call(
            self._mesh.auth.GetMe, auth.GetMeRequest(), Browser(request.state.address, given.access_token)
        )
        unfilled = Session("", 0.0, "", 0.0, me.user.email, me.user.verify_time.ToDatetime().date().isoformat())
        start_over(request)
        await self._store.keep_session(request.state.browser_id, _renewed_tokens(unfilled, given))

    async def end(self, request: Request) -> None:
        ended = await self._store.drop_session(request.state.browser_id)
        start_over(request)
        if ended is not None:
            try:
                await self._mesh.call(
                    self._mesh.auth.Logout, auth.LogoutRequest(refresh_token=ended.refresh_token), anonymous(request)
                )
            except Refused as refused:
                if refused.code is not grpc.StatusCode.UNAUTHENTICATED:
                    raise

    async def _renewed(self, browser_id: str, seen: Session, browser: Browser) -> Session | None:
        """`seen` renewed, by this request or by the one of this browser that holds the lock."""
        deadline = time.monotonic() + RENEWAL_WAIT
        while not await self._store.renewing(browser_id, RENEWAL_WAIT):
            await asyncio.sleep(0.05)
            current = await self._store.session(browser_id)
            if current is None or current.access_token != seen.access_token:
                return current
            if time.monotonic() >= deadline:
                # No renewal finished in time: the old token still works until it expires.
                return seen if seen.access_expires > time.time() else None
            # Else the lock may have gone without a renewal of `seen` (its holder had read the
            # session before `seen` was kept, and found it renewed already): try to take it again.
        try:
            # Read again under the lock: a renewal may have finished since `seen` was read, and
            # its refresh token is spent.
            session = await self._store.session(browser_id)
            if session is None or session.refresh_token != seen.refresh_token:
                return session
            try:
                answer = await self._mesh.call(
                    self._mesh.auth.Refresh, auth.RefreshRequest(refresh_token=session.refresh_token), browser
                )
            except Refused as refused:
                if refused.code is grpc.StatusCode.UNAUTHENTICATED:
                    await self._store.drop_session(browser_id)
                    return None
                raise
            renewed = _renewed_tokens(session, answer.session)
            # Kept before the lock goes: no request may find the spent token after it.
            await self._store.keep_session(browser_id, renewed)
            return renewed
        finally:
            await self._store.renewed(browser_id)
