"""Reserving a spot: the reserve page (invite code, email, password), the live code check, and
the verify page that turns the mailed six digits into a signed-in account."""

from __future__ import annotations

import time

from invitemesh.auth.v1 import auth_service_pb2 as auth
from invitemesh.invite.v1 import invite_service_pb2 as invite
from starlette.requests import Request
from starlette.responses import Response

from web_svc import domain
from web_svc.busy import BusyForms
from web_svc.calls import Mesh, Refused
from web_svc.pages import fragment, page, see_other
from web_svc.security import checked_form, form_text
from web_svc.sessions import Sessions, anonymous
from web_svc.store import Pending, WebStore


class Reservation:
    def __init__(self, mesh: Mesh, store: WebStore, sessions: Sessions, resends: int, busy_forms: BusyForms) -> None:
        self._mesh = mesh
        self._store = store
        self._sessions = sessions
        self._resends = resends
        self._busy_forms = busy_forms

    async def reserve_page(self, request: Request) -> Response:
        code = domain.displayed_code(request.query_params.get("code", ""))
        signed_in = await self._sessions.signed_in(request)
        return page(
            request,
            "reserve.html.j2",
            signed_in=signed_in,
            code=code,
            email="",
            errors={},
            problem=None,
            waitlist_offer=False,
        )

    async def check_code(self, request: Request) -> Response:
        """The code field's status as it is typed: a typo is caught here, without a lookup."""
        typed = form_text(await checked_form(request), "code").strip()
        if not typed:
            return fragment(request, "_code_status.html.j2", valid=None, message="")
        if problem := domain.code_problem(typed):
            return fragment(request, "_code_status.html.j2", valid=False, message=problem)
        try:
            answer = await self._mesh.call(
                self._mesh.invite.CheckCode, invite.CheckCodeRequest(code=typed), anonymous(request)
            )
        except Refused as refused:
            return fragment(request, "_code_status.html.j2", valid=False, message=domain.message_for(refused.reason))
        if answer.valid:
            return fragment(request, "_code_status.html.j2", valid=True, message="This code works.")
        return fragment(request, "_code_status.html.j2", valid=False, message=domain.message_for(answer.reason))

    async def reserve(self, request: Request) -> Response:
        form = await checked_form(request)
        code, email = form_text(form, "code"), form_text(form, "email").strip()
        password = self._busy_forms.field(request, form, "password")
        shown = domain.displayed_code(code)
        try:
            answer = await self._mesh.call(
                self._mesh.auth.Register,
                auth.RegisterRequest(email=email, password=password, invite_code=code),
                anonymous(request),
            )
        except Refused as refused:
            errors, problem = _placed(refused)
            # auth_svc asks invite_svc about the code only once the rest is right: a typo the
            # page can tell by itself is said now, with the rest.
            if errors and "code" not in errors and (typo := domain.code_problem(code)):
                errors["code"] = typo
            busy = self._busy_forms.busy(request, refused, {"password": password})
            return page(
                request,
                "reserve.html.j2",
                status=refused.http_status(400),
                code=shown,
                email=email,
                errors=errors,
                problem=None if busy else problem,
                waitlist_offer=refused.reason in domain.WAITLIST_INSTEAD,
                busy=busy,
            )
        lifetime = answer.verification_expire_time.ToSeconds() - time.time()
        await self._store.keep_pending(
            request.state.browser_id, Pending(email, answer.registration), self._resends, lifetime
        )
        return see_other("/verify")

    async def verify_page(self, request: Request) -> Response:
        return await self._verify_form(request, status=200, errors={}, problem=None, notice=None)

    async def verify(self, request: Request) -> Response:
        form = await checked_form(request)
        pending = await self._store.pending(request.state.browser_id)
        code = form_text(form, "code").strip()
        if problem := domain.verification_code_problem(code):
            return await self._verify_form(request, status=400, errors={"code": problem}, problem=None, notice=None)
        if pending is not None:
            asked = auth.VerifyEmailRequest(email=pending.email, code=code, registration=pending.registration)
        else:
            asked = auth.VerifyEmailRequest(
                email=form_text(form, "email").strip(), code=code, password=form_text(form, "password")
            )
        try:
            answer = await self._mesh.call(self._mesh.auth.VerifyEmail, asked, anonymous(request))
        except Refused as refused:
            errors, problem = _placed(refused)
            if refused.reason == "VERIFICATION_CODE_INVALID":
                errors, problem = {"code": domain.message_for(refused.reason)}, None
            return await self._verify_form(request, status=400, errors=errors, problem=problem, notice=None)
        await self._store.drop_pending(request.state.browser_id)
        await self._sessions.begin(request, answer.session)
        return see_other("/me")

    async def resend(self, request: Request) -> Response:
        await checked_form(request)
        browser_id = request.state.browser_id
        pending = await self._store.pending(browser_id)
        if pending is None or not await self._store.spend_resend(browser_id):
            return await self._verify_form(
                request, status=429, errors={}, problem="No more mails can be sent for this registration.", notice=None
            )
        try:
            await self._mesh.call(
                self._mesh.auth.ResendVerification,
                auth.ResendVerificationRequest(email=pending.email, registration=pending.registration),
                anonymous(request),
            )
        except Refused as refused:
            return await self._verify_form(
                request, status=400, errors={}, problem=domain.message_for(refused.reason), notice=None
            )
        return await self._verify_form(
            request, status=200, errors={}, problem=None, notice=f"We sent a new code to {pending.email}."
        )

    async def _verify_form(
        self, request: Request, *, status: int, errors: dict[str, str], problem: str | None, notice: str | None
    ) -> Response:
        browser_id = request.state.browser_id
        pending = await self._store.pending(browser_id)
        resends = await self._store.resends_left(browser_id) if pending else 0
        return page(
            request,
            "verify.html.j2",
            status=status,
            pending_email=pending.email if pending else None,
            resends_left=resends,
            errors=errors,
            problem=problem,
            notice=notice,
        )


def _placed(refused: Refused) -> tuple[dict[str, str], str | None]:
    """A refusal as messages beside the fields it is about, or else one for the whole form."""
    if not refused.violations and refused.reason in domain.CODE_MESSAGES:
        return {"code": domain.CODE_MESSAGES[refused.reason]}, None
    return domain.placed(refused.violations, refused.reason)
