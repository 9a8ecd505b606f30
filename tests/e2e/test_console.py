"""The admins' console in Debian's Chromium, end to end through Envoy: sign-in with password and
TOTP, a code disabled (and the reserve page then says so), campaigns, a user suspended and
reactivated, the mail log, rate limits and the audit log; a viewer sees no control it may not
use, and a post it should not make is refused and changes nothing."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browsers import chromium, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_admin import fresh_chain
from tests.e2e.test_edge import PASSWORD, call, fresh_email, ok, registered_and_verified
from tests.e2e.test_pages import minted

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "the operators' own long passphrase"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_RATELIMIT_RULES_CACHE="0.5") as mesh:
        fresh_chain(mesh)
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def new_admin(mesh: Mesh, role: str) -> tuple[str, pyotp.TOTP]:
    """A fresh admin (its TOTP code works once a window: each sign-in here is a new admin's)."""
    email = f"{role}.{uuid.uuid4().hex[:8]}@example.com"
    created = json.loads(
        mesh.ctl("admins", "create", email, "--role", role, "--json", input=ADMIN_PASSWORD + "\n").stdout
    )
    totp = pyotp.parse_uri(created["totpUri"])
    assert isinstance(totp, pyotp.TOTP)
    return email, totp


def admin_token(mesh: Mesh, role: str) -> str:
    """The access token of a fresh admin of `role`, signed in over REST (both steps)."""
    email, totp = new_admin(mesh, role)
    mfa = ok(call(mesh.edge, "POST", "/v1/admin/sessions", {"email": email, "password": ADMIN_PASSWORD}))
    session = ok(
        call(mesh.edge, "POST", "/v1/admin/sessions:mfa", {"mfaToken": mfa["mfaToken"], "totpCode": totp.now()})
    )
    return str(session["accessToken"])


def sign_in(page: Page, mesh: Mesh, role: str) -> str:
    email, totp = new_admin(mesh, role)
    page.goto("/admin")
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Continue").click()
    page.get_by_label("Code from your app").fill(totp.now())
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/admin$"))
    return email


def test_an_operator_disables_a_code_and_the_reserve_page_then_says_so(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh)
    with person(browser, mesh.edge) as admin_context, person(browser, mesh.edge) as visitor:
        page = admin_context.new_page()
        email = sign_in(page, mesh, "operator")
        expect(page.get_by_text(email)).to_be_visible()
        expect(page.get_by_role("img", name=re.compile("^Mail today by status"))).to_be_visible()
        expect(
            page.get_by_role("img", name=re.compile(r"^Registrations today: begun: \d+; verified: \d+"))
        ).to_be_visible()
        page.get_by_role("link", name="Codes").click()
        page.get_by_label("Look up a code").fill(code)
        page.get_by_role("button", name="Look up").click()
        expect(page.locator(".facts")).to_contain_text("active")
        page.get_by_role("button", name="Disable this code").click()
        expect(page.locator(".facts")).to_contain_text("disabled")
        expect(page.get_by_role("button", name="Disable this code")).to_have_count(0)

        reserve = visitor.new_page()
        reserve.goto(f"/?code={code}")
        expect(reserve.locator("#code-status")).to_have_text("This code has been switched off.")

        page.get_by_role("link", name="Audit log").click()
        expect(page.get_by_role("row").filter(has_text="DisableInvite").first).to_contain_text("succeeded")
        expect(page.get_by_role("status")).to_contain_text("Chain check: all")


def test_campaigns_users_mail_and_rate_limits_from_the_console(mesh: Mesh, browser: Browser) -> None:
    member = fresh_email()
    session = registered_and_verified(mesh, member, minted(mesh))
    user_id = ok(call(mesh.edge, "GET", "/v1/users/me", token=session["accessToken"]))["user"]["id"]
    campaign = f"console-{uuid.uuid4().hex[:8]}"
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        sign_in(page, mesh, "owner")

        page.goto("/admin/campaigns")
        page.get_by_label("Name").fill(campaign)
        page.get_by_label("Spots (0: unlimited)").fill("lots")
        page.get_by_role("button", name="Create campaign").click()
        expect(page.locator("#capacity-error")).to_be_visible()
        page.get_by_label("Spots (0: unlimited)").fill("50")
        page.get_by_label("Codes each new member gets").fill("2")
        page.get_by_role("button", name="Create campaign").click()
        expect(page.get_by_role("status")).to_contain_text(f"Created {campaign}: 0 / 50 spots")

        page.goto(f"/admin/users?user_id={user_id}")
        page.get_by_label("Reason (for the audit log)").fill("spam")
        page.get_by_role("button", name="Suspend").click()
        expect(page.get_by_role("status")).to_have_text("The user is suspended.")
        suspended = call(mesh.edge, "POST", "/v1/sessions", {"email": member, "password": PASSWORD})
        page.get_by_role("button", name="Reactivate").click()
        expect(page.get_by_role("status")).to_have_text("The user is active again.")
        ok(call(mesh.edge, "POST", "/v1/sessions", {"email": member, "password": PASSWORD}))

        page.goto("/admin/mail")
        page.get_by_label("Recipient").fill(member)
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("row").filter(has_text=member).first).to_be_visible()
        expect(page.get_by_text(re.compile(r"^\d+ emails?\.$"))).to_be_visible()

        page.goto("/admin/rate-limits")
        check_code = "/invitemesh.invite.v1.InviteService/CheckCode"
        page.get_by_label(f"Requests for {check_code}").fill("45")
        page.get_by_role("button", name="Save rate limits").click()
        expect(page.get_by_role("status")).to_have_text("Saved.")
        expect(page.get_by_label(f"Requests for {check_code}")).to_have_value("45")
        # The rules left as they were are still the defaults, not rules set to the same numbers.
        expect(page.get_by_role("row").filter(has_text="/invitemesh.auth.v1.AuthService/Login")).to_contain_text(
            "(default)"
        )
        # Back to the default: a database given by MESH_DATABASE_URL keeps rules for later runs.
        mesh.ctl("ratelimits", "reset", check_code)

    assert suspended.status == 403 and suspended.reason() == "USER_SUSPENDED"


def test_a_viewer_sees_no_control_and_a_forged_change_is_refused(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh)
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        sign_in(page, mesh, "viewer")
        page.goto(f"/admin/codes?code={code}")
        expect(page.locator(".facts")).to_contain_text("active")
        buttons = {}
        for path in ("/admin/codes?code=" + code, "/admin/campaigns", "/admin/users?user_id=" + str(uuid.uuid4()),
                     "/admin/rate-limits"):  # fmt: skip
            page.goto(path)
            buttons[path] = page.locator("main button, main input[type=checkbox]").count()
        token = page.locator("input[name=csrf]").first.input_value()
        forged = context.request.post("/admin/codes/disable", form={"csrf": token, "code": code}, max_redirects=0)
        page.goto(f"/admin/codes?code={code}")
        expect(page.locator(".facts")).to_contain_text("active")

    # Only the look-up and search buttons: nothing that changes anything.
    assert buttons == {
        f"/admin/codes?code={code}": 2,
        "/admin/campaigns": 0,
        next(path for path in buttons if "users" in path): 1,
        "/admin/rate-limits": 0,
    }
    assert forged.status == 403
