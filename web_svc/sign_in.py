"""Signing in with email and password, and out again."""

from __future__ import annotations

from invitemesh.auth.v1 import auth_service_pb2 as auth
from starlette.requests import Request
from starlette.responses import Response

from web_svc import domain
from web_svc.busy import BusyForms
from web_svc.calls import Mesh, Refused
from web_svc.pages import page, see_other
from web_svc.security import checked_form, form_text
from web_svc.sessions import Sessions, anonymous

NOTICES = {"reset": "Your password is changed. Sign in with the new one.", "out": "You are signed out."}
"""What the sign-in page says after a flow that leads to it (`/sign-in?after=…`)."""


class SignIn:
    def __init__(self, mesh: Mesh, sessions: Sessions, busy_forms: BusyForms) -> None:
        self._mesh = mesh
        self._sessions = sessions
        self._busy_forms = busy_forms

    async def sign_in_page(self, request: Request) -> Response:
        if await self._sessions.signed_in(request):
            return see_other("/me")
        notice = NOTICES.get(request.query_params.get("after", ""))
        return page(request, "sign_in.html.j2", email="", problem=None, notice=notice)

    async def sign_in(self, request: Request) -> Response:
        form = await checked_form(request)
        email = form_text(form, "email").strip()
        password = self._busy_forms.field(request, form, "password")
        try:
            answer = await self._mesh.call(
                self._mesh.auth.Login, auth.LoginRequest(email=email, password=password), anonymous(request)
            )
        except Refused as refused:
            busy = self._busy_forms.busy(request, refused, {"password": password})
            problem = None if busy else domain.message_for(refused.reason)
            return page(
                request,
                "sign_in.html.j2",
                status=refused.http_status(400),
                email=email,
                problem=problem,
                notice=None,
                busy=busy,
            )
        await self._sessions.begin(request, answer.session)
        return see_other("/me")

    async def sign_out_page(self, request: Request) -> Response:
        return page(request, "sign_out.html.j2", signed_in=await self._sessions.signed_in(request))

    async def sign_out(self, request: Request) -> Response:
        await checked_form(request)
        await self._sessions.end(request)
        return see_other("/sign-in?after=out")
