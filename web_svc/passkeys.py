"""Passkeys in the console: an admin registers one on `/admin/passkeys`, and may use it instead of
the TOTP code at sign-in. The browser's WebAuthn calls need a script (static/passkeys.js), which
talks JSON to these handlers; admin_svc makes the options and checks the answers."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from invitemesh.admin.v1 import admin_service_pb2 as admin
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from web_svc import domain
from web_svc.calls import Mesh, Refused
from web_svc.console import Console
from web_svc.pages import script_failure, see_other
from web_svc.security import checked_json, start_over
from web_svc.sessions import anonymous
from web_svc.store import AdminStore

Answer = TypeVar("Answer")


class ConsolePasskeys:
    def __init__(self, mesh: Mesh, store: AdminStore, console: Console) -> None:
        self._mesh = mesh
        self._store = store
        self._console = console

    async def page(self, request: Request) -> Response:
        if (me := await self._console.signed_in(request)) is None:
            return see_other("/admin/sign-in")
        listed = await self._mesh.call(self._mesh.admin.ListPasskeys, admin.ListPasskeysRequest(), me.browser)
        return self._console.page_for(request, me, "admin/passkeys.html.j2", passkeys=listed.passkeys)

    async def registration_options(self, request: Request) -> Response:
        await checked_json(request)
        if (me := await self._console.signed_in(request)) is None:
            return script_failure("Sign in again.", 401)
        asked = admin.StartPasskeyRegistrationRequest()
        return await _answer(
            lambda: self._mesh.call(self._mesh.admin.StartPasskeyRegistration, asked, me.browser), _options
        )

    async def register(self, request: Request) -> Response:
        body = await checked_json(request)
        if (me := await self._console.signed_in(request)) is None:
            return script_failure("Sign in again.", 401)
        asked = admin.CreatePasskeyRequest(
            credential_json=json.dumps(body.get("credential")), display_name=str(body.get("name", ""))
        )
        return await _answer(
            lambda: self._mesh.call(self._mesh.admin.CreatePasskey, asked, me.browser),
            lambda made: {"passkey": made.passkey.display_name},
        )

    async def sign_in_options(self, request: Request) -> Response:
        await checked_json(request)
        token = await self._store.mfa_token(request.state.browser_id)
        if token is None:
            return script_failure("Sign in with your password again.", 401)
        asked = admin.StartPasskeySignInRequest(mfa_token=token)
        return await _answer(
            lambda: self._mesh.call(self._mesh.admin.StartPasskeySignIn, asked, anonymous(request)), _options
        )

    async def sign_in(self, request: Request) -> Response:
        body = await checked_json(request)
        token = await self._store.take_mfa_token(request.state.browser_id)
        if token is None:
            return script_failure("Sign in with your password again.", 401)
        asked = admin.VerifySessionMfaRequest(
            mfa_token=token, passkey_credential_json=json.dumps(body.get("credential"))
        )
        try:
            answer = await self._mesh.call(self._mesh.admin.VerifySessionMfa, asked, anonymous(request))
        except Refused as refused:
            return script_failure(domain.message_for(refused.reason), 401)
        start_over(request)
        await self._console.keep(request, answer)
        return JSONResponse({"next": "/admin"})


async def _answer(call: Callable[[], Awaitable[Answer]], shape: Callable[[Answer], dict[str, str]]) -> Response:
    """What admin_svc answered, shaped as JSON for the page's script; a refusal as a message it
    shows."""
    try:
        answer = await call()
    except Refused as refused:
        return script_failure(domain.in_one_line(refused.violations, refused.reason), 400)
    return JSONResponse(shape(answer))


def _options(answer: Any) -> dict[str, str]:
    return {"options": answer.options_json}
