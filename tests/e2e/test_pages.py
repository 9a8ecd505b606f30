"""web_svc's pages in Debian's Chromium, end to end through Envoy: reserving a spot with a code,
verifying, the codes and share links on /me, a friend joining through one, signing out and in,
resetting a password from the mail's link; and what keeps the pages safe (CSRF, cookie flags,
CSP, no token in a page) and per-person budgets counted per browser address."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browsers import chromium, path_of, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import PASSWORD, fresh_email, mailed

pytestmark = pytest.mark.e2e

NEW_PASSWORD = "another long passphrase"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def minted(mesh: Mesh, quota: int = 2) -> str:
    """A fresh code of a campaign of its own, whose redeemers get `quota` codes."""
    campaign = f"pages-{uuid.uuid4().hex[:8]}"
    args = ["invites", "mint", "--campaign", campaign, "--invite-quota", str(quota), "--json"]
    (code,) = json.loads(mesh.ctl(*args).stdout)
    return str(code["code"])


def reserve(page: Page, mesh: Mesh, email: str) -> None:
    """From the reserve page with a code in it to /me, through the mailed six digits."""
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Reserve my spot").click()
    expect(page).to_have_url(re.compile(r"/verify$"))
    expect(page.get_by_text(email)).to_be_visible()
    page.get_by_label("Code from the mail").fill(mailed(mesh, email, r"\b(\d{6})\b"))
    page.get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(r"/me$"))


def own_codes(page: Page, count: int) -> list[str]:
    """The codes /me lists, once the `count` a new account gets have been minted (through the
    outbox, a moment after the verification)."""
    deadline = time.monotonic() + 60
    while len(shown := page.locator(".code-card code").all_inner_texts()) < count:
        assert time.monotonic() < deadline, f"/me shows {shown}"
        time.sleep(0.5)
        page.reload()
    return shown


def test_a_person_reserves_a_spot_shares_a_code_and_sees_a_friend_join(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh, quota=2)
    email = fresh_email()
    with person(browser, mesh.edge) as ada_context:
        ada = ada_context.new_page()
        ada.goto(f"/?code={code.lower().replace('-', ' ')}")
        expect(ada.get_by_label("Invite code")).to_have_value(code)
        expect(ada.locator("#code-status")).to_have_text("✓ This code works.")
        reserve(ada, mesh, email)
        expect(ada.get_by_text(f"Signed in as {email}")).to_be_visible()
        codes = own_codes(ada, 2)
        share = ada.get_by_label(f"Share link for {codes[0]}").input_value()
        assert share.endswith(f"/?code={codes[0]}")

        friend = fresh_email()
        with person(browser, mesh.edge) as friend_context:
            page = friend_context.new_page()
            page.goto(path_of(share))
            expect(page.get_by_label("Invite code")).to_have_value(codes[0])
            reserve(page, mesh, friend)

        ada.reload()
        joined = ada.get_by_role("table").get_by_role("row").nth(1)
        expect(joined).to_contain_text(f"{friend[0]}•••@example.com")
        expect(joined).to_contain_text(codes[0])


def test_a_typo_is_caught_as_typed_and_a_refusal_is_said_beside_its_field(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh)
    typo = code[:-1] + ("A" if code[-1] != "A" else "B")
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto("/")
        page.get_by_label("Invite code").fill(typo)
        expect(page.locator("#code-status")).to_have_text("This code has a typo: please check each symbol.")
        page.get_by_label("Invite code").fill(code)
        expect(page.locator("#code-status")).to_have_text("✓ This code works.")
        page.get_by_label("Email").fill(fresh_email())
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Reserve my spot").click()
        expect(page.locator("#password-error")).to_be_visible()
        expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label("Invite code")).to_have_value(code)


def test_sign_out_then_in_again(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto(f"/?code={minted(mesh)}")
        reserve(page, mesh, email)
        page.get_by_role("link", name="Sign out").click()
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/sign-in\?after=out$"))
        page.goto("/me")
        expect(page).to_have_url(re.compile(r"/sign-in$"))

        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill("not my password at all")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("The email or the password is not right.")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/me$"))


def test_the_reset_mails_link_sets_a_new_password(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto(f"/?code={minted(mesh)}")
        reserve(page, mesh, email)
        context.clear_cookies()

        page.goto("/sign-in")
        page.get_by_role("link", name="Forgot your password?").click()
        page.get_by_label("Email").fill(email)
        page.get_by_role("button", name="Mail me a link").click()
        expect(page.get_by_role("status")).to_contain_text("is on its way")
        link = mailed(mesh, email, r"(http\S+/reset-password#token=\S+)")
        page.goto(path_of(link))
        # The token went from the fragment into the form, and out of the address bar.
        expect(page).to_have_url(re.compile(r"/reset-password$"))
        expect(page.locator("#ask")).to_be_hidden()
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_role("button", name="Set my new password").click()
        expect(page).to_have_url(re.compile(r"/sign-in\?after=reset$"))
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(NEW_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/me$"))


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto(f"/?code={minted(mesh)}")
        reserve(page, mesh, email)
        signed_out = context.request.post("/sign-out", form={"csrf": "not-the-token"}, max_redirects=0)
        forged = context.request.post("/sign-out", form={}, max_redirects=0)
        # Still signed in: neither post did anything.
        page.goto("/me")
        expect(page).to_have_url(re.compile(r"/me$"))

    assert (signed_out.status, forged.status) == (403, 403)


def test_cookies_are_http_only_and_lax_pages_carry_a_strict_csp_and_no_token(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        answer = page.goto(f"/?code={minted(mesh)}")
        assert answer is not None
        policy = answer.headers["content-security-policy"]
        reserve(page, mesh, email)
        me = page.goto("/me")
        assert me is not None
        (cookie,) = context.cookies()
        scripts = [
            context.request.get(src).text()
            for src in page.eval_on_selector_all("script[src]", "s => s.map(e => e.src)")
        ]
        stored = page.evaluate("() => [document.cookie, JSON.stringify(localStorage), JSON.stringify(sessionStorage)]")
        html = page.content()

    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
    assert me.headers["cache-control"] == "no-store"
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Lax")
    assert stored[0] == ""  # no cookie a script can read
    # An access token is a JWT (`eyJ…`): none in the page, its scripts or the browser's storage.
    assert not any(re.search(r"eyJ[\w-]{10,}\.", text) for text in [html, *scripts, *stored])
    assert cookie["value"] not in html


def test_budgets_count_each_browser_not_web_svc(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh)
    with person(browser, mesh.edge) as spender, person(browser, mesh.edge) as other:
        page = spender.new_page()
        page.goto("/")
        token = page.locator("input[name=csrf]").first.input_value()
        answers = [spender.request.post("/check-code", form={"csrf": token, "code": code}).text() for _ in range(40)]
        checker = other.new_page()
        checker.goto(f"/?code={code}")
        expect(checker.locator("#code-status")).to_have_text("✓ This code works.")

    assert "✓ This code works." in answers[0]
    assert "Too many tries from here" in answers[-1]


def test_everything_works_with_javascript_off(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    with person(browser, mesh.edge, javascript=False) as context:
        page = context.new_page()
        page.goto(f"/?code={minted(mesh)}")
        reserve(page, mesh, email)
        own_codes(page, 2)
        # The share link is a field to copy by hand; the copy button needs a script.
        expect(page.locator("button.copy").first).to_be_hidden()

        page.goto("/sign-out")
        page.get_by_role("button", name="Sign out").click()
        page.goto("/reset-password")
        page.get_by_label("Email").fill(email)
        page.get_by_role("button", name="Mail me a link").click()
        token = mailed(mesh, email, r"#token=(\S+)")
        page.get_by_label("Token from the mail").fill(token)
        page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
        page.get_by_role("button", name="Set my new password").click()
        expect(page).to_have_url(re.compile(r"/sign-in\?after=reset$"))
