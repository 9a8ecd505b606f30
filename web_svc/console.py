"""The admins' console (`/admin`): sign-in with password and TOTP, a dashboard, codes, campaigns,
users and their referral trees, the mail log, rate limits and the audit log. Every control is
shown only to a role the contract lets use it (mesh.access reads the method's
`min_admin_role`), and admin_svc checks it again on every call."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from invitemesh.admin.v1 import admin_service_pb2 as admin
from invitemesh.invite.v1 import invite_service_pb2 as invite
from invitemesh.mail.v1 import mail_service_pb2 as mail
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit
from starlette.requests import Request
from starlette.responses import Response

from mesh.access import AdminRole, access_rule
from web_svc import domain, wallets
from web_svc.calls import Browser, Mesh, Refused
from web_svc.charts import Bar, bar_chart
from web_svc.pages import page, see_other
from web_svc.security import checked_form, form_text, start_over
from web_svc.sessions import anonymous
from web_svc.store import AdminSession, AdminStore
from web_svc.wallets import WalletShown

ADMIN_SERVICE = "/invitemesh.admin.v1.AdminService/"
PAGE_SIZE = 50
MAIL_COUNTS = ("created", "sent", "failed", "bounced", "suppressed", "expired")
EMAIL_STATUSES = [name.removeprefix("EMAIL_STATUS_").lower() for name in mail.EmailStatus.keys()[1:]]
CODE_STATES = [name.removeprefix("CODE_STATE_").lower() for name in invite.CodeState.keys()[1:]]
WAITLIST_STATES = [name.removeprefix("WAITLIST_ENTRY_STATE_").lower() for name in invite.WaitlistEntryState.keys()[1:]]
GROWTH_DAYS = 14
UNITS = {"second": ratelimit.TIME_UNIT_SECOND, "minute": ratelimit.TIME_UNIT_MINUTE,
         "hour": ratelimit.TIME_UNIT_HOUR, "day": ratelimit.TIME_UNIT_DAY}  # fmt: skip


@dataclass(frozen=True)
class SignedInAdmin:
    browser: Browser
    session: AdminSession

    def can(self, method: str) -> bool:
        """Whether this admin's role may call `method` of AdminService, as its contract says."""
        rule = access_rule(ADMIN_SERVICE + method)
        return rule is not None and self.session.role >= rule.min_admin_role

    @property
    def role(self) -> str:
        return AdminRole(self.session.role).claim


AdminPage = Callable[["Console", Request, "SignedInAdmin"], Awaitable[Response]]


def _for_admins(handler: AdminPage) -> Callable[[Console, Request], Awaitable[Response]]:
    """A console page: for a signed-in admin, given as `me`; anyone else is sent to sign in."""

    @functools.wraps(handler)
    async def page(console: Console, request: Request) -> Response:
        if (me := await console.signed_in(request)) is None:
            return see_other("/admin/sign-in")
        return await handler(console, request, me)

    return page


class Console:
    def __init__(self, mesh: Mesh, store: AdminStore) -> None:
        self._mesh = mesh
        self._store = store

    # Sign-in, in two steps.

    async def sign_in_page(self, request: Request) -> Response:
        if await self.signed_in(request):
            return see_other("/admin")
        return page(request, "admin/sign_in.html.j2", email="", problem=None)

    async def sign_in(self, request: Request) -> Response:
        form = await checked_form(request)
        email = form_text(form, "email").strip()
        asked = admin.CreateSessionRequest(email=email, password=form_text(form, "password"))
        try:
            answer = await self._mesh.call(self._mesh.admin.CreateSession, asked, anonymous(request))
        except Refused as refused:
            problem = domain.message_for(refused.reason)
            return page(request, "admin/sign_in.html.j2", status=400, email=email, problem=problem)
        lifetime = answer.mfa_expire_time.ToSeconds() - time.time()
        await self._store.keep_mfa_token(request.state.browser_id, answer.mfa_token, lifetime)
        return see_other("/admin/sign-in/code")

    async def code_page(self, request: Request) -> Response:
        if await self._store.mfa_token(request.state.browser_id) is None:
            return see_other("/admin/sign-in")
        return page(request, "admin/code.html.j2", errors={})

    async def verify_code(self, request: Request) -> Response:
        form = await checked_form(request)
        code = form_text(form, "code").strip()
        if problem := domain.verification_code_problem(code):
            return page(request, "admin/code.html.j2", status=400, errors={"code": problem.replace("mail", "app")})
        token = await self._store.take_mfa_token(request.state.browser_id)
        if token is None:
            return see_other("/admin/sign-in")
        asked = admin.VerifySessionMfaRequest(mfa_token=token, totp_code=code)
        try:
            answer = await self._mesh.call(self._mesh.admin.VerifySessionMfa, asked, anonymous(request))
        except Refused as refused:
            problem = domain.message_for(refused.reason)
            return page(request, "admin/sign_in.html.j2", status=400, email="", problem=problem)
        start_over(request)
        await self.keep(request, answer)
        return see_other("/admin")

    async def keep(self, request: Request, answer: admin.VerifySessionMfaResponse) -> None:
        """Signs this browser in as the admin a second step answered (under its new cookie)."""
        signed_in = AdminSession(
            access_token=answer.access_token,
            expires=float(answer.access_token_expire_time.ToSeconds()),
            admin_id=answer.admin.id,
            email=answer.admin.email,
            role=answer.admin.role,
        )
        await self._store.keep_session(request.state.browser_id, signed_in)

    async def sign_out(self, request: Request) -> Response:
        await checked_form(request)
        ended = await self._store.drop_session(request.state.browser_id)
        if ended is not None:
            try:
                browser = Browser(request.state.address, ended.access_token)
                await self._mesh.call(self._mesh.admin.RevokeSession, admin.RevokeSessionRequest(), browser)
            except Refused:
                pass  # expired or revoked already: signed out all the same
        start_over(request)
        return see_other("/admin/sign-in")

    async def signed_in(self, request: Request) -> SignedInAdmin | None:
        session = await self._store.session(request.state.browser_id)
        if session is None:
            return None
        return SignedInAdmin(Browser(request.state.address, session.access_token), session)

    async def forget(self, request: Request) -> None:
        """This browser's admin session ended elsewhere (revoked, role changed, expired)."""
        await self._store.drop_session(request.state.browser_id)

    # The console's pages: each needs a signed-in admin.

    @_for_admins
    async def dashboard(self, request: Request, me: SignedInAdmin) -> Response:
        registrations, stats, campaigns = await asyncio.gather(
            self._call(me, self._mesh.admin.GetRegistrationStats, admin.GetRegistrationStatsRequest()),
            self._call(me, self._mesh.admin.GetEmailStats, admin.GetEmailStatsRequest()),
            self._call(me, self._mesh.admin.ListCampaigns, admin.ListCampaignsRequest(page_size=PAGE_SIZE)),
        )
        joined, mailed = registrations.stats, stats.stats
        charts = [
            bar_chart("Registrations today", [Bar("begun", joined.started), Bar("verified", joined.verified)]),
            bar_chart("Mail today by status", [Bar(name, getattr(mailed, name)) for name in MAIL_COUNTS]),
            bar_chart(
                "Campaigns filled", [Bar(c.display_name, c.taken, c.capacity or None) for c in campaigns.campaigns[:12]]
            ),
        ]
        return self.page_for(request, me, "admin/dashboard.html.j2", day=joined.day, charts=charts,
                          verified=joined.verified)  # fmt: skip

    @_for_admins
    async def codes(self, request: Request, me: SignedInAdmin) -> Response:
        query = request.query_params
        code = query.get("code", "").strip()
        if code:
            try:
                found = await self._call(me, self._mesh.admin.GetInvite, admin.GetInviteRequest(code=code))
            except Refused as refused:
                return self.page_for(request, me, "admin/codes.html.j2", status=404 if refused.reason else 400,
                                  code=code, found=None, problem=domain.message_for(refused.reason), listing=None,
                                  filters=self._code_filters(query))  # fmt: skip
            return self.page_for(request, me, "admin/codes.html.j2", code=code, found=found, problem=None, listing=None,
                              filters=self._code_filters(query))  # fmt: skip
        filters = self._code_filters(query)
        if not any(filters.values()):
            return self.page_for(request, me, "admin/codes.html.j2", code="", found=None, problem=None, listing=None,
                              filters=filters)  # fmt: skip
        state = invite.CodeState.Value(f"CODE_STATE_{(filters['state'] or 'unspecified').upper()}")
        listing = await self._call(
            me,
            self._mesh.admin.ListInvites,
            admin.ListInvitesRequest(
                page_size=PAGE_SIZE,
                page_token=query.get("page_token", ""),
                campaign_id=filters["campaign"],
                state=state,
            ),
        )
        return self.page_for(request, me, "admin/codes.html.j2", code="", found=None, problem=None, listing=listing,
                          filters=filters)  # fmt: skip

    @_for_admins
    async def disable_code(self, request: Request, me: SignedInAdmin) -> Response:
        code = form_text(await checked_form(request), "code").strip()
        await self._call(me, self._mesh.admin.DisableInvite, admin.DisableInviteRequest(code=code))
        return see_other(f"/admin/codes?code={code}")

    @_for_admins
    async def campaigns(self, request: Request, me: SignedInAdmin) -> Response:
        notice = "The waitlist top-up is set." if request.query_params.get("done") == "top-up" else None
        return await self._campaigns_page(request, me, errors={}, given={}, status=200, notice=notice)

    @_for_admins
    async def create_campaign(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        given = {name: form_text(form, name).strip() for name in ("name", "capacity", "quota", "domains", "top_up")}
        errors = {
            name: "A whole number, 0 or more."
            for name in ("capacity", "quota", "top_up")
            if given[name] and not given[name].isdigit()
        }
        if not errors:
            campaign = invite.Campaign(
                display_name=given["name"],
                capacity=int(given["capacity"] or 0),
                invite_quota=int(given["quota"] or 0),
                allowed_email_domains=[d.strip() for d in given["domains"].split(",") if d.strip()],
                waitlist_top_up=int(given["top_up"] or 0),
            )
            asked = admin.CreateCampaignRequest(campaign=campaign, request_id=form_text(form, "request_id"))
            try:
                made = (await self._call(me, self._mesh.admin.CreateCampaign, asked)).campaign
                notice = f"Created {made.display_name}: {made.taken} / {made.capacity or '∞'} spots, id {made.id}."
                return await self._campaigns_page(request, me, errors={}, given={}, status=200, notice=notice)
            except Refused as refused:
                fields = {"campaign.display_name": "name", "campaign.capacity": "capacity",
                          "campaign.invite_quota": "quota", "campaign.allowed_email_domains": "domains",
                          "campaign.waitlist_top_up": "top_up"}  # fmt: skip
                errors = {fields.get(f, f): d for f, d in domain.form_errors(refused.violations).items()}
                if not errors:
                    errors = {"name": domain.message_for(refused.reason)}
        return await self._campaigns_page(request, me, errors=errors, given=given, status=400, notice=None)

    @_for_admins
    async def set_campaign_top_up(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        top_up = form_text(form, "top_up").strip()
        problem = None if top_up.isdigit() else "Keep a whole number of invitations out, 0 or more."
        if problem is None:
            campaign = invite.Campaign(id=form_text(form, "id").strip(), waitlist_top_up=int(top_up))
            try:
                asked = admin.UpdateCampaignRequest(campaign=campaign)
                await self._call(me, self._mesh.admin.UpdateCampaign, asked)
            except Refused as refused:
                problem = domain.in_one_line(refused.violations, refused.reason)
        if problem is not None:
            return await self._campaigns_page(
                request, me, errors={}, given={}, status=400, notice=None, problem=problem
            )
        return see_other("/admin/campaigns?done=top-up")

    async def _campaigns_page(
        self,
        request: Request,
        me: SignedInAdmin,
        *,
        errors: dict[str, str],
        given: dict[str, str],
        status: int,
        notice: str | None,
        problem: str | None = None,
    ) -> Response:
        asked = admin.ListCampaignsRequest(page_size=PAGE_SIZE, page_token=request.query_params.get("page_token", ""))
        listed = await self._call(me, self._mesh.admin.ListCampaigns, asked)
        return self.page_for(request, me, "admin/campaigns.html.j2", status=status, campaigns=listed.campaigns,
                          next_page_token=listed.next_page_token, errors=errors, given=given,
                          request_id=str(uuid.uuid4()), notice=notice, problem=problem)  # fmt: skip

    @_for_admins
    async def users(self, request: Request, me: SignedInAdmin) -> Response:
        user_id = request.query_params.get("user_id", "").strip()
        tree, problem, wallet = None, None, None
        if user_id:
            try:
                tree = await self._call(
                    me, self._mesh.admin.ListReferrals, admin.ListReferralsRequest(user_id=user_id, depth=3)
                )
            except Refused as refused:
                problem = domain.in_one_line(refused.violations, refused.reason)
            else:
                wallet = await self._wallet_of(me, user_id)
        notice = {"suspended": "The user is suspended.", "reactivated": "The user is active again."}.get(
            request.query_params.get("done", "")
        )
        return self.page_for(request, me, "admin/users.html.j2", user_id=user_id, tree=tree, problem=problem,
                          notice=notice, wallet=wallet)  # fmt: skip

    async def _wallet_of(self, me: SignedInAdmin, user_id: str) -> WalletShown | str | None:
        """The user's wallet; None without one, or a note when it cannot be shown now."""
        try:
            found = await self._call(me, self._mesh.admin.GetUserWallet, admin.GetUserWalletRequest(user_id=user_id))
        except Refused as refused:
            return None if refused.reason == "WALLET_NOT_FOUND" else domain.WALLET_NOT_SHOWN
        return wallets.shown(found.wallet)

    @_for_admins
    async def change_user(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        user_id, change = form_text(form, "user_id").strip(), form_text(form, "change")
        if change == "suspend":
            asked: Any = admin.SuspendUserRequest(user_id=user_id, reason=form_text(form, "reason").strip())
            await self._call(me, self._mesh.admin.SuspendUser, asked)
            return see_other(f"/admin/users?user_id={user_id}&done=suspended")
        await self._call(me, self._mesh.admin.ReactivateUser, admin.ReactivateUserRequest(user_id=user_id))
        return see_other(f"/admin/users?user_id={user_id}&done=reactivated")

    @_for_admins
    async def mail_log(self, request: Request, me: SignedInAdmin) -> Response:
        query = request.query_params
        status_name = query.get("status", "") if query.get("status", "") in EMAIL_STATUSES else ""
        to = query.get("to", "").strip()
        status = mail.EmailStatus.Value(f"EMAIL_STATUS_{(status_name or 'unspecified').upper()}")
        asked = admin.ListEmailsRequest(
            page_size=PAGE_SIZE, page_token=query.get("page_token", ""), status=status, to=to
        )
        listed = await self._call(me, self._mesh.admin.ListEmails, asked)
        return self.page_for(request, me, "admin/mail.html.j2", emails=listed.emails, total=listed.total_size,
                          next_page_token=listed.next_page_token, status_filter=status_name, to=to,
                          statuses=EMAIL_STATUSES, status_names=_email_status_names())  # fmt: skip

    @_for_admins
    async def waitlist(self, request: Request, me: SignedInAdmin) -> Response:
        notice = request.query_params.get("released")
        return await self._waitlist_page(
            request, me, status=200, problem=None, notice=f"Invited {notice} from the waitlist." if notice else None
        )

    @_for_admins
    async def release_waitlist(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        count = form_text(form, "count").strip()
        if not count.isdigit() or int(count) < 1:
            return await self._waitlist_page(
                request, me, status=400, problem="Release a whole number of places, 1 or more.", notice=None
            )
        asked = admin.ReleaseWaitlistPlacesRequest(
            count=int(count), campaign_id=form_text(form, "campaign").strip(), request_id=form_text(form, "request_id")
        )
        try:
            released = await self._call(me, self._mesh.admin.ReleaseWaitlistPlaces, asked)
        except Refused as refused:
            problem = domain.in_one_line(refused.violations, refused.reason)
            return await self._waitlist_page(request, me, status=400, problem=problem, notice=None)
        invited = len(released.entries)
        return see_other(f"/admin/waitlist?released={invited}+{'person' if invited == 1 else 'people'}")

    @_for_admins
    async def change_waitlist_entry(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        entry_id, places = form_text(form, "id").strip(), form_text(form, "places").strip()
        try:
            if form_text(form, "change") == "remove":
                await self._call(
                    me, self._mesh.admin.RemoveWaitlistEntry, admin.RemoveWaitlistEntryRequest(id=entry_id)
                )
            elif places.lstrip("-").isdigit():
                asked = admin.MoveWaitlistEntryRequest(id=entry_id, places=int(places))
                await self._call(me, self._mesh.admin.MoveWaitlistEntry, asked)
            else:
                return await self._waitlist_page(
                    request, me, status=400, problem="Move by a whole number of places.", notice=None
                )
        except Refused as refused:
            problem = domain.in_one_line(refused.violations, refused.reason)
            return await self._waitlist_page(request, me, status=400, problem=problem, notice=None)
        return see_other("/admin/waitlist")

    async def _waitlist_page(
        self, request: Request, me: SignedInAdmin, *, status: int, problem: str | None, notice: str | None
    ) -> Response:
        query = request.query_params
        state = query.get("state", "") if query.get("state", "") in WAITLIST_STATES else "waiting"
        email = query.get("email", "").strip()
        asked = admin.ListWaitlistEntriesRequest(
            page_size=PAGE_SIZE,
            page_token=query.get("page_token", ""),
            state=invite.WaitlistEntryState.Value(f"WAITLIST_ENTRY_STATE_{state.upper()}"),
            email_prefix=email,
        )
        listed, counted, campaigns = await asyncio.gather(
            self._call(me, self._mesh.admin.ListWaitlistEntries, asked),
            self._call(me, self._mesh.admin.GetWaitlistStats, admin.GetWaitlistStatsRequest(days=GROWTH_DAYS)),
            self._call(me, self._mesh.admin.ListCampaigns, admin.ListCampaignsRequest(page_size=PAGE_SIZE)),
        )
        stats = counted.stats
        growth = bar_chart(
            f"Joined per day, last {GROWTH_DAYS} days (UTC)", [Bar(day.day[5:], day.joined) for day in stats.days]
        )
        return self.page_for(request, me, "admin/waitlist.html.j2", status=status, stats=stats, growth=growth,
                          entries=listed.entries, total=listed.total_size, next_page_token=listed.next_page_token,
                          state_filter=state, email=email, states=WAITLIST_STATES, campaigns=campaigns.campaigns,
                          state_names={v: n.removeprefix("WAITLIST_ENTRY_STATE_").lower()
                                       for n, v in invite.WaitlistEntryState.items()},
                          request_id=str(uuid.uuid4()), problem=problem, notice=notice)  # fmt: skip

    @_for_admins
    async def rate_limits(self, request: Request, me: SignedInAdmin) -> Response:
        return await self._rate_limits_page(request, me, status=200, problem=None, notice=None)

    @_for_admins
    async def update_rate_limits(self, request: Request, me: SignedInAdmin) -> Response:
        form = await checked_form(request)
        routes = form.getlist("route")
        rules, problem = [], None
        for index, route in enumerate(routes):
            if not isinstance(route, str) or not route.strip():
                continue  # the blank row for a new rule, left blank
            requests = form_text(form, f"requests-{index}").strip()
            unit = UNITS.get(form_text(form, f"unit-{index}"))
            shown = f"{requests}|{form_text(form, f'unit-{index}')}|{form_text(form, f'fail-closed-{index}') == 'on'}"
            if form_text(form, f"default-{index}") == shown:
                continue  # a default left as it was stays a default: the set names only rules set
            if not requests.isdigit() or unit is None:
                problem = f"The rule of {route} needs a whole number of requests and a unit."
                break
            rules.append(
                ratelimit.RateLimitRule(
                    route=route.strip(), requests_per_unit=int(requests), unit=unit,
                    fail_closed=form_text(form, f"fail-closed-{index}") == "on",
                )
            )  # fmt: skip
        if problem is None:
            asked = admin.UpdateRateLimitsRequest(rules=rules, request_id=form_text(form, "request_id"))
            try:
                await self._call(me, self._mesh.admin.UpdateRateLimits, asked)
                return await self._rate_limits_page(request, me, status=200, problem=None, notice="Saved.")
            except Refused as refused:
                problem = domain.in_one_line(refused.violations, refused.reason)
        return await self._rate_limits_page(request, me, status=400, problem=problem, notice=None)

    async def _rate_limits_page(
        self, request: Request, me: SignedInAdmin, *, status: int, problem: str | None, notice: str | None
    ) -> Response:
        listed = await self._call(me, self._mesh.admin.ListRateLimits, admin.ListRateLimitsRequest())
        unit_names = {value: name for name, value in UNITS.items()}
        rules = [
            {"route": rule.route, "requests": rule.requests_per_unit, "unit": unit_names.get(rule.unit, "minute"),
             "fail_closed": rule.fail_closed, "default": rule.default}
            for rule in listed.rules
        ]  # fmt: skip
        return self.page_for(request, me, "admin/rate_limits.html.j2", status=status, rules=rules, units=list(UNITS),
                          problem=problem, notice=notice, request_id=str(uuid.uuid4()))  # fmt: skip

    @_for_admins
    async def audit_log(self, request: Request, me: SignedInAdmin) -> Response:
        token = request.query_params.get("page_token", "")
        asked = admin.ListAuditLogEntriesRequest(page_size=PAGE_SIZE, page_token=token)
        listed = await self._call(me, self._mesh.admin.ListAuditLogEntries, asked)
        # The chain is checked on the first page, the one an admin opens.
        checked = (
            None if token else await self._call(me, self._mesh.admin.VerifyAuditLog, admin.VerifyAuditLogRequest())
        )
        return self.page_for(request, me, "admin/audit.html.j2", entries=listed.entries,
                          next_page_token=listed.next_page_token, checked=checked,
                          outcomes={v: n.removeprefix("AUDIT_OUTCOME_").lower()
                                    for n, v in admin.AuditOutcome.items()})  # fmt: skip

    async def _call(self, me: SignedInAdmin, method: Any, request: Any) -> Any:
        return await self._mesh.call(method, request, me.browser)

    def page_for(
        self, request: Request, me: SignedInAdmin, template: str, *, status: int = 200, **context: Any
    ) -> Response:
        return page(request, template, status=status, personal=True, admin=me, **context)

    @staticmethod
    def _code_filters(query: Any) -> dict[str, str]:
        state = query.get("state", "")
        return {"campaign": query.get("campaign", "").strip(), "state": state if state in CODE_STATES else ""}


def _email_status_names() -> dict[int, str]:
    return {value: name.removeprefix("EMAIL_STATUS_").lower() for name, value in mail.EmailStatus.items()}
