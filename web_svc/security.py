"""What every page request passes through: which browser it is (an opaque cookie), where it comes
from (the edge's word, believed only with the edge's token), CSRF tokens bound to that cookie,
and the headers that keep a page from being framed, sniffed, cached or scripted from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from typing import Any

from starlette.datastructures import FormData, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mesh.clients import EDGE_TOKEN_HEADER, EXTERNAL_ADDRESS

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    )
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}
PERSONAL = "no-store"
"""Cache-Control of a page that shows personal data."""
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
"""Where a page's script sends the CSRF token with JSON."""
COOKIE_LIFETIME = 400 * 86400
"""Seconds a browser keeps its cookie (Chrome's cap); signing out or in replaces it."""
_BROWSER_ID = re.compile(r"[A-Za-z0-9_-]{43}")


def new_browser_id() -> str:
    return secrets.token_urlsafe(32)


class Guard:
    """Gives each request `state.browser_id` and `state.address`, and each answer its headers and,
    when the browser is new or signed in or out, its cookie. Plain ASGI: every page passes here."""

    def __init__(self, app: ASGIApp, *, edge_token: str, csrf_key: bytes, secure_cookies: bool) -> None:
        self._app = app
        self._edge_token = edge_token.encode()
        self._csrf_key = csrf_key
        self._secure = secure_cookies
        self.cookie = "__Host-browser" if secure_cookies else "browser"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request = Request(scope)
        given = request.cookies.get(self.cookie, "")
        known = _BROWSER_ID.fullmatch(given) is not None
        state = request.state
        state.browser_id = given if known else new_browser_id()
        state.new_cookie = not known
        state.address = self._address(request)
        state.csrf_key = self._csrf_key

        async def answer(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                # Pages carry a CSRF token bound to this browser: no shared cache may keep one.
                headers.setdefault("cache-control", "private, no-cache")
                if state.new_cookie:
                    headers.append("set-cookie", self._cookie(state.browser_id))
            await send(message)

        await self._app(scope, receive, answer)

    def _cookie(self, browser_id: str) -> str:
        secure = "; Secure" if self._secure else ""
        return f"{self.cookie}={browser_id}; HttpOnly; Max-Age={COOKIE_LIFETIME}; Path=/; SameSite=Lax{secure}"

    def _address(self, request: Request) -> str:
        peer = request.client.host if request.client else "unknown"
        presented = request.headers.get(EDGE_TOKEN_HEADER, "").encode()
        if presented and hmac.compare_digest(presented, self._edge_token):
            return request.headers.get(EXTERNAL_ADDRESS) or peer
        return peer


def csrf_token(request: Request) -> str:
    """The token every form of this browser carries (bound to its cookie, so useless elsewhere)."""
    digest = hmac.new(request.state.csrf_key, request.state.browser_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def start_over(request: Request) -> None:
    """A new cookie for this browser from this answer on: at sign-in (so a cookie planted before
    cannot ride the session) and at sign-out."""
    request.state.browser_id = new_browser_id()
    request.state.new_cookie = True


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token is this browser's and the browser says the post came
    from this site; else 403."""
    form = await request.form()
    given = form.get(CSRF_FIELD)
    _require_this_site(request, given if isinstance(given, str) else "")
    return form


async def checked_json(request: Request) -> dict[str, Any]:
    """A script's posted JSON object, once its CSRF token (header `x-csrf-token`) is this
    browser's; else 403 (400 for a body that is not a JSON object)."""
    _require_this_site(request, request.headers.get(CSRF_HEADER, ""))
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise HTTPException(400, "The request is not JSON.") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "The request is not a JSON object.")
    return body


def _require_this_site(request: Request, given_token: str) -> None:
    """403 unless the browser says the request came from this site and it carries this browser's
    CSRF token."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise HTTPException(403, "This was sent from another site.")
    if not hmac.compare_digest(given_token.encode(), csrf_token(request).encode()):
        raise HTTPException(403, "This page has expired. Reload it and try again.")


def form_text(form: FormData, name: str) -> str:
    """A text field of a posted form, empty when it is missing or a file."""
    value = form.get(name)
    return value if isinstance(value, str) else ""
