"""A forgotten password: asking for a reset link, and the page that link opens. The mail's link
carries the token in its fragment, which no browser sends to a server: the page's script moves
it into the form, which posts it in the body (so it reaches no log and no Referer); without
JavaScript, a person pastes it."""

from __future__ import annotations

from invitemesh.auth.v1 import auth_service_pb2 as auth
from starlette.requests import Request
from starlette.responses import Response

from web_svc import domain
from web_svc.busy import BusyForms
from web_svc.calls import Mesh, Refused
from web_svc.pages import page, see_other
from web_svc.security import checked_form, form_text
from web_svc.sessions import anonymous


class Recovery:
    def __init__(self, mesh: Mesh, busy_forms: BusyForms) -> None:
        self._mesh = mesh
        self._busy_forms = busy_forms

    async def reset_page(self, request: Request) -> Response:
        return page(request, "reset_password.html.j2", email="", errors={}, problem=None, notice=None)

    async def request_link(self, request: Request) -> Response:
        form = await checked_form(request)
        email = form_text(form, "email").strip()
        try:
            await self._mesh.call(
                self._mesh.auth.RequestPasswordReset, auth.RequestPasswordResetRequest(email=email), anonymous(request)
            )
        except Refused as refused:
            errors, problem = domain.placed(refused.violations, refused.reason)
            return page(
                request, "reset_password.html.j2", status=400, email=email, errors=errors, problem=problem, notice=None
            )
        notice = f"If {email} has an account, a link to choose a new password is on its way."
        return page(request, "reset_password.html.j2", email=email, errors={}, problem=None, notice=notice)

    async def reset(self, request: Request) -> Response:
        form = await checked_form(request)
        secrets = {name: self._busy_forms.field(request, form, name) for name in ("token", "password")}
        asked = auth.ResetPasswordRequest(token=secrets["token"].strip(), new_password=secrets["password"])
        try:
            await self._mesh.call(self._mesh.auth.ResetPassword, asked, anonymous(request))
        except Refused as refused:
            errors, problem = domain.placed(refused.violations, refused.reason)
            if refused.reason == "RESET_TOKEN_INVALID":
                errors, problem = {"token": domain.message_for(refused.reason)}, None
            busy = self._busy_forms.busy(request, refused, secrets)
            return page(
                request,
                "reset_password.html.j2",
                status=refused.http_status(400),
                email="",
                errors=errors,
                problem=None if busy else problem,
                notice=None,
                busy=busy,
            )
        return see_other("/sign-in?after=reset")
