"""The waitlist's pages: join (through a friend's share link or not), the mail is on its way, and
"your place", which the mailed link opens. The link carries its token in the fragment, which no
browser sends to a server: the page's script moves it into a form and posts it (so it reaches
no log and no Referer); posting it confirms the place the first time and shows it every time.
Without JavaScript, a person pastes the token."""

from __future__ import annotations

import re

from invitemesh.invite.v1 import invite_service_pb2 as invite
from starlette.requests import Request
from starlette.responses import Response

from web_svc import domain
from web_svc.calls import Mesh, Refused
from web_svc.pages import page
from web_svc.security import checked_form, form_text
from web_svc.sessions import anonymous

_REFERRAL_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class WaitlistPages:
    def __init__(self, mesh: Mesh) -> None:
        self._mesh = mesh

    async def join_page(self, request: Request) -> Response:
        return self._join_form(request, _referral_code(request.query_params.get("ref", "")), "", {}, None)

    async def join(self, request: Request) -> Response:
        form = await checked_form(request)
        email, ref = form_text(form, "email").strip(), _referral_code(form_text(form, "ref"))
        try:
            await self._mesh.call(
                self._mesh.invite.JoinWaitlist,
                invite.JoinWaitlistRequest(email=email, referral_code=ref),
                anonymous(request),
            )
        except Refused as refused:
            errors, problem = domain.placed(refused.violations, refused.reason)
            status = refused.http_status(400)
            return self._join_form(request, ref, email, errors, problem, status)
        return page(request, "waitlist_sent.html.j2", email=email)

    def _join_form(
        self,
        request: Request,
        ref: str,
        email: str,
        errors: dict[str, str],
        problem: str | None,
        status: int = 200,
    ) -> Response:
        return page(request, "waitlist.html.j2", status=status, ref=ref, email=email, errors=errors, problem=problem)

    async def place_page(self, request: Request) -> Response:
        return page(request, "waitlist_place.html.j2", entry=None, token="", errors={}, private=True)

    async def place(self, request: Request) -> Response:
        token = form_text(await checked_form(request), "token").strip()
        try:
            answer = await self._mesh.call(
                self._mesh.invite.ConfirmWaitlistEntry,
                invite.ConfirmWaitlistEntryRequest(token=token),
                anonymous(request),
            )
        except Refused as refused:
            errors, problem = domain.placed(refused.violations, refused.reason)
            errors = errors or {"token": problem or domain.UNEXPECTED}
            return page(
                request, "waitlist_place.html.j2", status=400, entry=None, token=token, errors=errors, private=True
            )
        entry = answer.entry
        return page(
            request,
            "waitlist_place.html.j2",
            entry=entry,
            state=invite.WaitlistEntryState.Name(entry.state).removeprefix("WAITLIST_ENTRY_STATE_").lower(),
            token=token,
            errors={},
            private=True,
        )


def _referral_code(typed: str) -> str:
    """A share link's code as it may be passed on, or nothing (a mangled link joins all the same)."""
    typed = typed.strip()
    return typed if _REFERRAL_CODE.match(typed) else ""
