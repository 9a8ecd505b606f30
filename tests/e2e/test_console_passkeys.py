"""An admin registers a passkey in the console and signs in with it instead of a TOTP code, in
Chromium with a virtual authenticator (the DevTools protocol's WebAuthn domain). Passkeys need a
domain: this browser opens the console at http://localhost on the edge's port, the origin
`meshctl up` gives admin_svc."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from tests.e2e.browsers import chromium
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_admin import fresh_chain
from tests.e2e.test_console import ADMIN_PASSWORD, new_admin

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory) as mesh:
        fresh_chain(mesh)
        yield mesh


@pytest.fixture
def console(mesh: Mesh) -> Iterator[BrowserContext]:
    with chromium() as browser:
        yield _on_localhost(browser, mesh)


def _on_localhost(browser: Browser, mesh: Mesh) -> BrowserContext:
    port = mesh.edge.rsplit(":", 1)[1]
    context = browser.new_context(base_url=f"http://localhost:{port}")
    context.set_default_timeout(15_000)
    return context


def test_an_admin_adds_a_passkey_and_signs_in_with_it_instead_of_a_code(mesh: Mesh, console: BrowserContext) -> None:
    email, totp = new_admin(mesh, "viewer")
    page = console.new_page()
    devtools = console.new_cdp_session(page)
    devtools.send("WebAuthn.enable")
    added = devtools.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )

    def password_step() -> None:
        page.goto("/admin/sign-in")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Continue").click()
        expect(page).to_have_url(re.compile(r"/admin/sign-in/code$"))

    password_step()
    page.get_by_label("Code from your app").fill(totp.now())
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Passkeys").click()
    expect(page.get_by_text("You have no passkey yet.")).to_be_visible()
    page.get_by_label("Name").fill("the test's authenticator")
    page.get_by_role("button", name="Add a passkey").click()
    expect(page.locator(".passkeys")).to_contain_text("the test's authenticator")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/admin/sign-in$"))

    password_step()
    page.get_by_role("button", name="Use a passkey").click()
    expect(page).to_have_url(re.compile(r"/admin$"))
    expect(page.get_by_text(email)).to_be_visible()
    page.get_by_role("link", name="Passkeys").click()
    expect(page.locator(".passkeys")).to_contain_text("last used")
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("row").filter(has_text="CreatePasskey").first).to_contain_text("succeeded")
    (credential,) = devtools.send("WebAuthn.getCredentials", {"authenticatorId": added["authenticatorId"]})[
        "credentials"
    ]
    assert credential["signCount"] >= 1
