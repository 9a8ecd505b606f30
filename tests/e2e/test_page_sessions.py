"""A signed-in browser's session behind the scenes: its access token renewed with the refresh
token once it is due, by one of the browser's requests while the others wait (a refresh token
works once: two renewals would end the session), and a session ended elsewhere sends the browser
to sign in again."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browsers import chromium, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import PASSWORD, call, fresh_email, mailed, ok, registered_and_verified
from tests.e2e.test_pages import minted

pytestmark = pytest.mark.e2e

ACCESS_TTL = 4


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # Access tokens due for renewal from the moment they are issued.
    with running_mesh(
        tmp_path_factory, MESH_AUTH_ACCESS_TTL=str(ACCESS_TTL), MESH_WEB_REFRESH_BEFORE=str(ACCESS_TTL)
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


# Past the HTTP cache, which would let one request of a URL through at a time.
FIVE_AT_ONCE = """() => Promise.all([...Array(5)].map(
    (_, n) => fetch(`/me?n=${n}`, {cache: "no-store", redirect: "manual"}).then(answer => answer.status)))"""


def test_concurrent_pages_renew_the_session_once_and_all_stay_signed_in(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto("/sign-in")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/me$"))
        first_token_expired = time.monotonic() + ACCESS_TTL + 1
        # Every token is due at once: each round of five pages at once renews, once.
        rounds = [page.evaluate(FIVE_AT_ONCE) for _ in range(3)]
        # Long past the first token's life, the browser is signed in still.
        time.sleep(max(0.0, first_token_expired - time.monotonic()))
        rounds.append(page.evaluate(FIVE_AT_ONCE))
        page.reload()
        expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()

    # A redirect (to /sign-in) would read as 0 here.
    assert rounds == [[200] * 5] * 4


def test_a_session_ended_elsewhere_sends_the_browser_to_sign_in(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto("/sign-in")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page).to_have_url(re.compile(r"/me$"))
        # A password reset ends every session of the account.
        ok(call(mesh.edge, "POST", "/v1/password-resets", {"email": email}))
        token = mailed(mesh, email, r"#token=(\S+)")
        ok(
            call(
                mesh.edge,
                "POST",
                "/v1/password-resets:confirm",
                {"token": token, "newPassword": "a brand new passphrase"},
            )
        )
        page.goto("/me")
        expect(page).to_have_url(re.compile(r"/sign-in$"))
