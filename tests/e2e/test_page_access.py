"""Every page at 1280 and 375 px wide: no axe-core violation of level serious or critical, a
label on every field, nothing wider than the screen, and the main flows done with the keyboard
alone. With `MESH_SCREENSHOTS=<dir>` (`make screenshots`) each page is also saved there as a PNG,
for people who review the look."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browsers import chromium, path_of, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_console import ADMIN_PASSWORD, new_admin, sign_in
from tests.e2e.test_edge import PASSWORD, fresh_email, mailed, registered_and_verified
from tests.e2e.test_pages import minted
from tests.e2e.test_waitlist import LINK as WAITLIST_LINK

pytestmark = pytest.mark.e2e

WIDTHS = (1280, 375)
SERIOUS = ("serious", "critical")
SCREENSHOTS = os.environ.get("MESH_SCREENSHOTS")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


@pytest.fixture(scope="module")
def member(mesh: Mesh) -> str:
    """The email of an account with codes of its own (password PASSWORD)."""
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh, quota=2))
    return email


def _anonymous(page: Page, mesh: Mesh, member: str) -> None:
    del page, mesh, member


def _with_a_code(page: Page, mesh: Mesh, member: str) -> None:
    page.goto(f"/?code={minted(mesh)}")
    expect(page.locator("#code-status")).to_have_text("✓ This code works.")


def _with_errors(page: Page, mesh: Mesh, member: str) -> None:
    page.goto("/?code=ABCD-EFGH-J")
    page.get_by_label("Email").fill("not an email")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Reserve my spot").click()
    # Every field's problem at once, each beside its field.
    for field in ("Invite code", "Email", "Password"):
        expect(page.get_by_label(field, exact=True)).to_have_attribute("aria-invalid", "true")


def _pending(page: Page, mesh: Mesh, member: str) -> None:
    page.goto(f"/?code={minted(mesh)}")
    page.get_by_label("Email").fill(fresh_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Reserve my spot").click()
    expect(page).to_have_url(re.compile(r"/verify$"))


def _signed_in(page: Page, mesh: Mesh, member: str) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(member)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/me$"))


def _joined_the_waitlist(page: Page, mesh: Mesh, member: str) -> None:
    page.goto("/waitlist")
    page.get_by_label("Email").fill(email := fresh_email())
    page.get_by_role("button", name="Join the waitlist").click()
    expect(page.get_by_text(email)).to_be_visible()


def _waiting(page: Page, mesh: Mesh, member: str) -> None:
    page.goto("/waitlist")
    page.get_by_label("Email").fill(email := fresh_email())
    page.get_by_role("button", name="Join the waitlist").click()
    page.goto(path_of(mailed(mesh, email, WAITLIST_LINK)))
    expect(page.locator(".place-number")).to_be_visible()


def _code_used_up(page: Page, mesh: Mesh, member: str) -> None:
    code = minted(mesh)
    registered_and_verified(mesh, fresh_email(), code)
    page.goto(f"/?code={code}")
    page.get_by_label("Email").fill(fresh_email())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Reserve my spot").click()
    expect(page.get_by_role("heading", name="Take a place on the waitlist instead")).to_be_visible()


Setup = Callable[[Page, Mesh, str], None]
PAGES: list[tuple[str, Setup, str]] = [
    ("reserve", _anonymous, "/"),
    ("reserve-with-code", _with_a_code, ""),
    ("reserve-with-errors", _with_errors, ""),
    ("verify", _anonymous, "/verify"),
    ("verify-pending", _pending, ""),
    ("sign-in", _anonymous, "/sign-in"),
    ("reset-password", _anonymous, "/reset-password"),
    ("sign-out", _signed_in, "/sign-out"),
    ("me", _signed_in, "/me"),
    ("not-found", _anonymous, "/no/such/page"),
    ("waitlist", _anonymous, "/waitlist?ref=abc123"),
    ("waitlist-sent", _joined_the_waitlist, ""),
    ("waitlist-token", _anonymous, "/waitlist/me"),
    ("waitlist-place", _waiting, ""),
    ("reserve-waitlist-offer", _code_used_up, ""),
]


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("name", "setup", "path"), PAGES, ids=[name for name, _, _ in PAGES])
def test_each_page_is_usable_by_everyone_at_each_width(
    mesh: Mesh, browser: Browser, member: str, name: str, setup: Setup, path: str, width: int
) -> None:
    with person(browser, mesh.edge, width=width) as context:
        page = context.new_page()
        setup(page, mesh, member)
        if path:
            page.goto(path)
        problems = access_problems(page, name, width)

    assert problems == NONE


@pytest.mark.parametrize("width", WIDTHS)
def test_each_console_page_is_usable_by_everyone_at_each_width(mesh: Mesh, browser: Browser, width: int) -> None:
    campaign = f"a11y-{uuid.uuid4().hex[:8]}"
    (code,) = json.loads(mesh.ctl("invites", "mint", "--campaign", campaign, "--json").stdout)
    searched = [
        ("console-code", f"/admin/codes?code={code['code']}"),
        ("console-codes-found", f"/admin/codes?campaign={code['campaignId']}"),
    ]
    found = {}
    with person(browser, mesh.edge, width=width) as context:
        page = context.new_page()
        sign_in(page, mesh, "owner")
        for name, path in [*CONSOLE_PAGES, *searched]:
            page.goto(path)
            found[name] = access_problems(page, name, width)
        context.clear_cookies()
        page.goto("/admin/sign-in")
        found["console-sign-in"] = access_problems(page, "console-sign-in", width)
        email, _ = new_admin(mesh, "viewer")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(re.compile(r"/admin/sign-in/code$"))
        found["console-sign-in-code"] = access_problems(page, "console-sign-in-code", width)

    assert {name: problems for name, problems in found.items() if problems != NONE} == {}


NONE = {"serious": [], "unlabelled": [], "overflow": 0}
CONSOLE_PAGES = [
    ("console-dashboard", "/admin"),
    ("console-codes", "/admin/codes"),
    ("console-campaigns", "/admin/campaigns"),
    ("console-users", f"/admin/users?user_id={uuid.uuid4()}"),
    ("console-waitlist", "/admin/waitlist"),
    ("console-mail", "/admin/mail"),
    ("console-rate-limits", "/admin/rate-limits"),
    ("console-audit", "/admin/audit"),
    ("console-passkeys", "/admin/passkeys"),
]


def access_problems(page: Page, name: str, width: int) -> dict[str, object]:
    """What keeps someone from using `page`: axe-core's serious and critical violations, fields
    without a label, and how far it spills past the screen's width (saved as a PNG too, with
    MESH_SCREENSHOTS)."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}-{width}.png"), full_page=True)
    violations = Axe().run(page).response["violations"]
    unlabelled = page.eval_on_selector_all(
        "input:not([type=hidden]), select, textarea",
        "fields => fields.filter(f => f.labels.length === 0 && !f.getAttribute('aria-label')).map(f => f.name)",
    )
    overflow = page.evaluate("() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
    return {
        "serious": [(v["id"], v["impact"]) for v in violations if v["impact"] in SERIOUS],
        "unlabelled": unlabelled,
        "overflow": max(0, overflow),
    }


def _tab_to(page: Page, selector: str, presses: int = 25) -> None:
    """Tab until `selector` has the focus (it must be reachable in order), and see the focus."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("s => document.activeElement.matches(s)", selector):
            outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
            assert outline != "none", f"{selector} shows no focus"
            return
    raise AssertionError(f"{selector} not reached in {presses} tabs")


@pytest.mark.parametrize("width", WIDTHS)
def test_reserving_verifying_and_signing_out_with_the_keyboard_alone(mesh: Mesh, browser: Browser, width: int) -> None:
    email = fresh_email()
    with person(browser, mesh.edge, width=width) as context:
        page = context.new_page()
        page.goto("/")
        _tab_to(page, "#code")
        page.keyboard.type(minted(mesh))
        expect(page.locator("#code-status")).to_have_text("✓ This code works.")
        _tab_to(page, "#email")
        page.keyboard.type(email)
        _tab_to(page, "#password")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/verify$"))
        _tab_to(page, "#code")
        page.keyboard.type(mailed(mesh, email, r"\b(\d{6})\b"))
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/me$"))
        _tab_to(page, "a[href='/sign-out']")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/sign-out$"))
        _tab_to(page, "main button[type=submit]")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/sign-in\?after=out$"))


@pytest.mark.parametrize("width", WIDTHS)
def test_an_operator_signs_in_and_disables_a_code_with_the_keyboard_alone(
    mesh: Mesh, browser: Browser, width: int
) -> None:
    code = minted(mesh)
    email, totp = new_admin(mesh, "operator")
    with person(browser, mesh.edge, width=width) as context:
        page = context.new_page()
        page.goto("/admin/sign-in")
        _tab_to(page, "#email")
        page.keyboard.type(email)
        _tab_to(page, "#password")
        page.keyboard.type(ADMIN_PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/admin/sign-in/code$"))
        _tab_to(page, "#code")
        page.keyboard.type(totp.now())
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/admin$"))
        _tab_to(page, "a[href='/admin/codes']")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/admin/codes$"))
        _tab_to(page, "#code")
        page.keyboard.type(code)
        page.keyboard.press("Enter")
        expect(page.locator(".facts")).to_contain_text("active")
        _tab_to(page, "button.danger")
        page.keyboard.press("Enter")
        expect(page.locator(".facts")).to_contain_text("disabled")
