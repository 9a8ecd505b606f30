"""A wallet on the pages, in Debian's Chromium through Envoy: a person links one from /me with the
wallet in their browser (an EIP-1193 provider this test puts in the page, signing with a real key
in Python, as a wallet extension would), sees its balance once `meshctl chain` funds it, and
unlinks it; a browser without a wallet is told what it needs; an admin sees the wallet in the
console's user view. Both views pass the accessibility checks of test_page_access (and are saved
as PNGs with MESH_SCREENSHOTS, `make screenshots`)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.e2e.browsers import chromium, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_console import sign_in as admin_signs_in
from tests.e2e.test_edge import PASSWORD, call, fresh_email, ok, registered_and_verified
from tests.e2e.test_page_access import access_problems
from tests.e2e.test_pages import minted

pytestmark = pytest.mark.e2e

CLEAN = {"serious": [], "unlabelled": [], "overflow": 0}
WALLET_PROVIDER = """
window.ethereum = {
  isTestWallet: true,
  request: async ({method, params}) => {
    if (method === "eth_requestAccounts") return [window.testWalletAddress];
    if (method === "personal_sign") return await window.testWalletSign(params[0], params[1]);
    throw Object.assign(new Error("unsupported " + method), {code: 4200});
  },
};
"""


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_CHAIN_POLL_INTERVAL="0.5", MESH_CHAIN_CONFIRMATIONS="0") as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def with_wallet(context: BrowserContext, wallet: LocalAccount) -> list[str]:
    """Puts a wallet into every page of `context`; answers the messages it was asked to sign."""
    signed: list[str] = []

    def sign(hex_message: str, address: str) -> str:
        assert address == wallet.address
        signed.append(bytes.fromhex(hex_message.removeprefix("0x")).decode())
        return str(wallet.sign_message(encode_defunct(hexstr=hex_message)).signature.to_0x_hex())

    context.expose_function("testWalletSign", sign)
    context.add_init_script(f"window.testWalletAddress = {json.dumps(wallet.address)};" + WALLET_PROVIDER)
    return signed


def signs_in(page: Page, email: str) -> None:
    page.goto("/sign-in")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/me$"))


def test_a_person_links_a_wallet_from_me_sees_its_balance_and_unlinks_it(mesh: Mesh, browser: Browser) -> None:
    email, wallet = fresh_email(), Account.create()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        signed = with_wallet(context, wallet)
        page = context.new_page()
        signs_in(page, email)
        expect(page.get_by_text("To link one, open this page in a browser with a wallet")).to_be_hidden()

        page.get_by_role("button", name="Link a wallet").click()

        expect(page.locator(".address")).to_have_text(wallet.address)
        assert len(signed) == 1 and wallet.address in signed[0]
        assert "Link this wallet to your invitemesh account." in signed[0]
        mesh.ctl("chain", "fund", wallet.address, "1.5")
        mesh.ctl("chain", "mine", "1")
        deadline = time.monotonic() + 60
        while page.locator(".balance").count() == 0 or page.locator(".balance").inner_text() != "1.5 ETH":
            assert time.monotonic() < deadline, page.locator("#wallet-heading + *").inner_text()
            time.sleep(0.5)
            page.reload()
        for width in (1280, 375):
            page.set_viewport_size({"width": width, "height": 900})
            assert access_problems(page, "me-wallet", width) == CLEAN
        page.set_viewport_size({"width": 1280, "height": 900})

        page.get_by_role("button", name="Unlink this wallet").click()

        expect(page).to_have_url(re.compile(r"/me$"))
        expect(page.locator(".address")).to_have_count(0)
        expect(page.get_by_role("button", name="Link a wallet")).to_be_visible()


def test_a_wallet_signing_with_another_key_is_told_and_nothing_is_linked(mesh: Mesh, browser: Browser) -> None:
    email, wallet, impostor = fresh_email(), Account.create(), Account.create()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        context.expose_function(
            "testWalletSign",
            lambda hex_message, _: impostor.sign_message(encode_defunct(hexstr=hex_message)).signature.to_0x_hex(),
        )
        context.add_init_script(f"window.testWalletAddress = {json.dumps(wallet.address)};" + WALLET_PROVIDER)
        page = context.new_page()
        signs_in(page, email)

        page.get_by_role("button", name="Link a wallet").click()

        expect(page.locator("#wallet-status")).to_have_text(
            "The wallet's signature does not match its address. Please try again."
        )
        page.reload()
        expect(page.locator(".address")).to_have_count(0)


def test_without_a_wallet_the_page_says_what_is_needed(mesh: Mesh, browser: Browser) -> None:
    email = fresh_email()
    registered_and_verified(mesh, email, minted(mesh))
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        signs_in(page, email)

        expect(page.get_by_text("To link one, open this page in a browser with a wallet")).to_be_visible()
        expect(page.get_by_role("button", name="Link a wallet")).to_be_hidden()


def test_an_admin_sees_a_users_wallet_in_the_console(mesh: Mesh, browser: Browser) -> None:
    session = registered_and_verified(mesh, fresh_email(), minted(mesh))
    token = session["accessToken"]
    user_id = ok(call(mesh.edge, "GET", "/v1/users/me", token=token))["user"]["id"]
    wallet = Account.create()
    challenge = ok(call(mesh.edge, "POST", "/v1/wallets:challenge", {"address": wallet.address}, token=token))
    signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature.to_0x_hex()
    ok(
        call(
            mesh.edge,
            "POST",
            "/v1/wallets:link",
            {"message": challenge["message"], "signature": signature},
            token=token,
        )
    )
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        admin_signs_in(page, mesh, "viewer")

        page.goto(f"/admin/users?user_id={user_id}")

        expect(page.locator(".address")).to_have_text(wallet.address)
        assert access_problems(page, "console-user-wallet", 1280) == CLEAN
        page.goto(f"/admin/users?user_id={registered_user_without_wallet(mesh)}")
        expect(page.get_by_text("No wallet linked.")).to_be_visible()


def registered_user_without_wallet(mesh: Mesh) -> str:
    session = registered_and_verified(mesh, fresh_email(), minted(mesh))
    return str(ok(call(mesh.edge, "GET", "/v1/users/me", token=session["accessToken"]))["user"]["id"])
