"""A signed-in browser's session behind the scenes: its access token renewed with the refresh
token once it is due, by one of the browser's requests while the others wait (a refresh token
works once: two renewals would end the session), and a session ended elsewhere sends the browser
to sign in again."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from playwright.sync_api import Browser, BrowserContext, expect

from mesh.redis import create_redis
from mesh.settings import Settings
from tests.e2e.browsers import chromium, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import call, fresh_email, mailed, ok, registered_and_verified
from tests.e2e.test_page_wallets import signs_in
from tests.e2e.test_pages import minted
from web_svc.store import WebStore

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
        signs_in(page, email)
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


def renewal_lock(mesh: Mesh, context: BrowserContext, take: bool) -> None:
    """Takes (or lets go of) the lock by which one request of the browser renews its session."""
    (redis_url,) = [part["address"] for part in mesh.stack()["parts"] if part["name"] == "redis"]
    (browser_id,) = [cookie["value"] for cookie in context.cookies() if cookie["name"] == "browser"]

    async def lock() -> None:
        async with create_redis(Settings(redis_url=redis_url)) as redis:
            store = WebStore(redis)
            await (store.renewing(browser_id, 60) if take else store.renewed(browser_id))

    # Playwright's loop runs in this thread.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, lock()).result()


def test_a_page_whose_renewal_lock_goes_without_a_renewal_renews_the_session_itself(
    mesh: Mesh, browser: Browser
) -> None:
    """Another request of the browser held the lock and let go of it without renewing: it had read
    the session before the last renewal was kept, and found it renewed already."""
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        signs_in(page, email)
        token_expired = time.monotonic() + ACCESS_TTL
        renewal_lock(mesh, context, take=True)
        page.evaluate("""() => { window.answer = fetch("/me", {cache: "no-store", redirect: "manual"})
            .then(answer => answer.status); }""")
        # Let go once the token the waiting request holds has expired (and before its wait ends):
        # only a renewal can let it through now.
        time.sleep(max(0.0, token_expired - time.monotonic()))
        renewal_lock(mesh, context, take=False)
        assert page.evaluate("() => window.answer") == 200


def test_a_session_ended_elsewhere_sends_the_browser_to_sign_in(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        signs_in(page, email)
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
