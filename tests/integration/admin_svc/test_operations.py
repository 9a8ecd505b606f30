"""Every change and read of the admins' contract, through the services that own the data: codes
and their redemptions, the referral tree, users, the mail log and free-form mails, rate limits,
and admin accounts."""

from __future__ import annotations

import datetime
import uuid

import asyncpg
import grpc
import pytest
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from invitemesh.mesh.v1 import access_pb2
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb

from mesh.errors import field_violations
from tests.conftest import eventually
from tests.integration.admin_svc.conftest import new_admin, signed_in
from tests.integration.auth_svc.conftest import PASSWORD, Stack, StackFactory, refusal, someone


async def test_a_batch_its_redemption_the_referral_tree_and_disabling_a_code(stack: Stack) -> None:
    owner = await new_admin(stack)
    admin = stack.admin(await signed_in(stack, owner))
    # A campaign of its own, so the listing holds this test's codes only (a database given by
    # MESH_DATABASE_URL holds other runs' codes, sealed under other KEKs).
    campaign = await admin.CreateCampaign(
        pb.CreateCampaignRequest(campaign=invite_pb.Campaign(display_name=f"ops {uuid.uuid4().hex[:8]}"))
    )
    mint = pb.CreateInviteBatchRequest(count=3, max_uses=2, campaign_id=campaign.campaign.id, request_id="b-1")
    batch = await admin.CreateInviteBatch(mint)
    again = await admin.CreateInviteBatch(mint)
    code = batch.codes[0].code
    email = someone()
    verified = await stack.verify(email, await stack.register(email, code))
    invited = someone()
    own_code = await _own_code(stack, verified.user.id)
    grandchild = await stack.verify(invited, await stack.register(invited, own_code))

    found = await admin.GetInvite(pb.GetInviteRequest(code=code.lower().replace("-", "")))
    children: list[str] = []

    async def confirmed() -> bool:
        # The grandchild's use is confirmed through auth_svc's outbox, a moment after it verified.
        tree = await admin.ListReferrals(pb.ListReferralsRequest(user_id=verified.user.id, depth=2))
        children[:] = [node.user_id for node in tree.children]
        return bool(children)

    await eventually(confirmed, what="the referral tree")
    listed = await admin.ListInvites(pb.ListInvitesRequest(campaign_id=campaign.campaign.id))
    await admin.DisableInvite(pb.DisableInviteRequest(code=code))
    checked = await stack.invites.GetCode(invite_pb.GetCodeRequest(code=code))

    assert sorted(c.code for c in again.codes) == sorted(c.code for c in batch.codes)
    assert {c.owner.admin_id for c in batch.codes} == {owner.admin.id}
    assert found.code.code == code and found.code.confirmed_uses == 1
    assert [r.user_id for r in found.redemptions] == [verified.user.id]
    assert children == [grandchild.user.id]
    assert {c.code for c in batch.codes} <= {c.code for c in listed.codes}
    assert checked.code.state == invite_pb.CODE_STATE_DISABLED


async def _own_code(stack: Stack, user_id: str) -> str:
    """One of the codes a new user gets to share (minted through auth_svc's outbox)."""
    mine = invite_pb.ListCodesRequest(owner=invite_pb.Owner(user_id=user_id))
    codes: list[str] = []

    async def minted() -> bool:
        codes[:] = [code.code for code in (await stack.invites.ListCodes(mine)).codes]
        return bool(codes)

    await eventually(minted, what="the new user's own codes")
    return codes[0]


async def test_a_suspended_user_cannot_sign_in_until_reactivated(stack: Stack) -> None:
    admin = stack.admin(await signed_in(stack, await new_admin(stack, "operator")))
    email, verified = await stack.signed_up()
    login = auth_pb.LoginRequest(email=email, password=PASSWORD)

    suspended = await admin.SuspendUser(pb.SuspendUserRequest(user_id=verified.user.id, reason="spam"))
    refused = await refusal(stack.auth.Login(login))
    await admin.ReactivateUser(pb.ReactivateUserRequest(user_id=verified.user.id))

    assert suspended.user.state == auth_pb.USER_STATE_SUSPENDED
    assert refused == (grpc.StatusCode.PERMISSION_DENIED, "USER_SUSPENDED")
    assert (await stack.auth.Login(login)).session.access_token


async def test_a_free_form_email_goes_through_the_log_and_names_the_admin(stack: Stack) -> None:
    operator = await new_admin(stack, "operator")
    admin = stack.admin(await signed_in(stack, operator))
    email, verified = await stack.signed_up()
    outsider = someone()

    to_user = await admin.SendEmail(
        pb.SendEmailRequest(user_id=verified.user.id, subject="Welcome aboard", text="Line one\nLine two")
    )
    to_address = await admin.SendEmail(pb.SendEmailRequest(to=outsider, subject="Hello", text="Hi there"))
    (arrived,) = await stack.mail_to(outsider)
    listed = await admin.ListEmails(pb.ListEmailsRequest(to=outsider))

    assert to_user.email.to == email and to_user.email.template == mail_pb.EMAIL_TEMPLATE_PLAIN_TEXT

    async def delivered() -> bool:
        return any("Line one\r\nLine two" in mail.text for mail in stack.received_by(email))

    await eventually(delivered, what="the admin's email to the user")
    assert arrived.text.strip() == "Hi there"
    assert [e.id for e in listed.emails] == [to_address.email.id] and listed.total_size == 1
    assert listed.emails[0].requested_by == f"admin:{operator.admin.id}" and listed.emails[0].from_address
    assert listed.emails[0].subject == "Hello"

    async def sent() -> bool:
        page = await admin.ListEmails(pb.ListEmailsRequest(to=outsider, status=mail_pb.EMAIL_STATUS_SENT))
        return len(page.emails) == 1 and bool(page.emails[0].send_time.seconds)

    await eventually(sent, what="the email logged as sent")
    stats = await admin.GetEmailStats(pb.GetEmailStatsRequest())
    assert stats.stats.created >= 2 and stats.stats.sent >= 1


async def test_free_form_emails_are_rate_limited_per_admin_and_the_refusal_audited(
    admin_stack_with: StackFactory,
) -> None:
    async with admin_stack_with(admin_emails_per_hour=1) as stack:
        admin = stack.admin(await signed_in(stack, await new_admin(stack, "operator")))
        other = stack.admin(await signed_in(stack, await new_admin(stack, "operator")))
        send = pb.SendEmailRequest(to=someone(), subject="Hello", text="Hi")

        await admin.SendEmail(send)
        limited = await refusal(admin.SendEmail(send))
        await other.SendEmail(send)
        entries = (await stack.admin_as("meshctl").ListAuditLogEntries(pb.ListAuditLogEntriesRequest())).entries

        assert limited == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        mails = [e for e in entries if e.action == "SendEmail"][:3]
        assert [(e.outcome, e.outcome_reason) for e in mails] == [
            (pb.AUDIT_OUTCOME_SUCCEEDED, ""),
            (pb.AUDIT_OUTCOME_FAILED, "RATE_LIMITED"),
            (pb.AUDIT_OUTCOME_SUCCEEDED, ""),
        ]


async def test_the_rate_limit_rules_are_replaced_as_a_whole(stack: Stack) -> None:
    admin = stack.admin(await signed_in(stack, await new_admin(stack, "operator")))
    check = "/invitemesh.invite.v1.InviteService/CheckCode"
    login = "/invitemesh.auth.v1.AuthService/Login"

    def rule(route: str, count: int) -> ratelimit_pb.RateLimitRule:
        return ratelimit_pb.RateLimitRule(route=route, requests_per_unit=count, unit=ratelimit_pb.TIME_UNIT_MINUTE)

    try:
        await admin.UpdateRateLimits(pb.UpdateRateLimitsRequest(rules=[rule(check, 7), rule(login, 9)]))
        after = await admin.UpdateRateLimits(pb.UpdateRateLimitsRequest(rules=[rule(check, 8)]))
        listed = {r.route: r for r in (await admin.ListRateLimits(pb.ListRateLimitsRequest())).rules}

        assert {r.route: r.requests_per_unit for r in after.rules if not r.default} == {check: 8}
        assert listed[check].requests_per_unit == 8 and not listed[check].default
        assert listed[login].default
        bad = await refusal(admin.UpdateRateLimits(pb.UpdateRateLimitsRequest(rules=[rule("/no/such", 1)])))
        assert bad[0] == grpc.StatusCode.INVALID_ARGUMENT
        assert {r.route: r.requests_per_unit for r in after.rules if not r.default} == {
            r.route: r.requests_per_unit
            for r in (await admin.ListRateLimits(pb.ListRateLimitsRequest())).rules
            if not r.default
        }
    finally:
        await admin.UpdateRateLimits(pb.UpdateRateLimitsRequest())


async def test_a_rule_whose_route_left_the_contract_is_kept_when_given_back_and_can_be_dropped(stack: Stack) -> None:
    admin = stack.admin(await signed_in(stack, await new_admin(stack, "operator")))
    gone = f"/invitemesh.gone.v1.Gone/Method{uuid.uuid4().hex[:8]}"
    check = ratelimit_pb.RateLimitRule(
        route="/invitemesh.invite.v1.InviteService/CheckCode", requests_per_unit=6, unit=ratelimit_pb.TIME_UNIT_MINUTE
    )
    connection = await asyncpg.connect(stack.database_url)
    try:
        await connection.execute(
            "INSERT INTO ratelimit.rules (route, requests_per_unit, unit, fail_closed) VALUES ($1, 3, 2, false)", gone
        )
    finally:
        await connection.close()
    listed = (await admin.ListRateLimits(pb.ListRateLimitsRequest())).rules
    kept = [r for r in listed if not r.default and r.route != check.route]

    with_stale = await admin.UpdateRateLimits(pb.UpdateRateLimitsRequest(rules=[*kept, check]))
    without = await admin.UpdateRateLimits(pb.UpdateRateLimitsRequest(rules=[r for r in kept if r.route != gone]))

    assert {r.route for r in with_stale.rules if not r.default} >= {gone, check.route}
    assert gone not in {r.route for r in without.rules}
    assert check.route not in {r.route for r in without.rules if not r.default}


async def test_admins_are_created_once_per_email_and_request_and_listed_in_pages(stack: Stack) -> None:
    owner_token = await signed_in(stack, await new_admin(stack))
    admin = stack.admin(owner_token)
    email = f"new.{uuid.uuid4().hex[:8]}@example.com"
    create = pb.CreateAdminRequest(email=email, password=PASSWORD, role=access_pb2.ADMIN_ROLE_VIEWER, request_id="r1")

    first = await admin.CreateAdmin(create)
    repeated = await admin.CreateAdmin(create)
    taken = create.__class__(email=email, password=PASSWORD, role=access_pb2.ADMIN_ROLE_OWNER, request_id="r2")
    bad = pb.CreateAdminRequest(email="not an email", password="short", role=access_pb2.ADMIN_ROLE_UNSPECIFIED)
    pages, token = [], ""
    while True:
        page = await admin.ListAdmins(pb.ListAdminsRequest(page_size=2, page_token=token))
        pages.append(page.admins)
        if not (token := page.next_page_token):
            break

    assert repeated.admin.id == first.admin.id and repeated.totp_uri == first.totp_uri
    assert await refusal(admin.CreateAdmin(taken)) == (grpc.StatusCode.ALREADY_EXISTS, "ADMIN_EXISTS")
    with pytest.raises(grpc.aio.AioRpcError) as refused_bad:
        await admin.CreateAdmin(bad)
    assert {v.field for v in field_violations(refused_bad.value)} == {"email", "password", "role"}
    listed = [a.id for page in pages for a in page]
    assert first.admin.id in listed and len(listed) == len(set(listed))
    assert all(len(page) <= 2 for page in pages)


async def test_a_days_registrations_begun_and_verified(stack: Stack) -> None:
    admin = stack.admin(await signed_in(stack, await new_admin(stack, "viewer")))
    # The database may hold other runs' registrations of today: what this test adds is counted.
    before = (await admin.GetRegistrationStats(pb.GetRegistrationStatsRequest())).stats
    await stack.signed_up()
    pending = someone()
    await stack.register(pending, (await stack.mint())[0])
    after = (await admin.GetRegistrationStats(pb.GetRegistrationStatsRequest(time_zone="UTC"))).stats
    long_ago = (await admin.GetRegistrationStats(pb.GetRegistrationStatsRequest(day="2001-01-01"))).stats
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await admin.GetRegistrationStats(pb.GetRegistrationStatsRequest(day="May 1st", time_zone="Mars"))

    assert after.day == before.day == datetime.datetime.now(datetime.UTC).date().isoformat()
    assert after.started - before.started >= 2 and after.verified - before.verified >= 1
    assert (long_ago.started, long_ago.verified) == (0, 0)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {violation.field for violation in field_violations(bad.value)} == {"day", "time_zone"}
