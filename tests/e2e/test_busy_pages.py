"""A page whose form the mesh is too busy to take, in Debian's Chromium through Envoy: the page
says so and sends the form again by itself, password and all, once the mesh has room.

auth_svc here hashes slowly (256 MiB per hash) and admits no more sign-ins than its hashing
threads run at once (`MESH_AUTH_HASH_WAIT_TARGET` near zero), while sign-ins from many addresses
keep those places taken: the person's sign-in is refused for load until they stop."""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from playwright.sync_api import Browser, Page, Response, expect

from bench.harness import client_address
from tests.e2e.browsers import chromium, person
from tests.e2e.conftest import Mesh, running_mesh
from tests.e2e.test_edge import PASSWORD, fresh_email, registered_and_verified

pytestmark = pytest.mark.e2e

SLOW_HASHES = {
    "MESH_AUTH_ARGON2_MEMORY_KIB": str(256 * 1024),
    "MESH_AUTH_ARGON2_TIME_COST": "3",
    "MESH_AUTH_HASH_WAIT_TARGET": "0.001",
}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, **SLOW_HASHES) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def account(mesh: Mesh) -> str:
    email = fresh_email()
    (code,) = json.loads(mesh.ctl("invites", "mint", "--json").stdout)
    registered_and_verified(mesh, email, code["code"])
    return email


@contextmanager
def places_taken(mesh: Mesh, email: str, callers: int = 8) -> Iterator[None]:
    """Sign-ins of `email` from many addresses, each sent again as soon as it is answered."""
    stopping = threading.Event()
    host, port = mesh.edge.rsplit(":", 1)
    body = json.dumps({"email": email, "password": PASSWORD})

    def sign_in_again_and_again() -> None:
        while not stopping.is_set():
            connection = http.client.HTTPConnection(host, int(port), timeout=60, source_address=(client_address(), 0))
            try:
                connection.request("POST", "/v1/sessions", body, {"content-type": "application/json"})
                connection.getresponse().read()
            finally:
                connection.close()

    threads = [threading.Thread(target=sign_in_again_and_again, daemon=True) for _ in range(callers)]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stopping.set()
        for thread in threads:
            thread.join(60)


def test_a_sign_in_refused_for_load_is_said_and_sent_again_by_the_page(mesh: Mesh, browser: Browser) -> None:
    blocker, email = account(mesh), account(mesh)
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        answers: list[Response] = []
        page.on("response", lambda answer: answers.append(answer) if answer.request.method == "POST" else None)
        page.goto("/sign-in")
        busy = page.get_by_role("status")

        with places_taken(mesh, blocker):
            # A place may come free just as the person sends: then they are signed in, and
            # send again once signed out, until one is refused for load.
            for _ in range(5):
                page.get_by_label("Email").fill(email)
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                expect(busy.or_(page.get_by_role("heading", name="Your invites"))).to_be_visible()
                if busy.is_visible():
                    break
                sign_out(page)
            expect(busy).to_contain_text("Many people are signing up right now")
            refused = next(answer for answer in answers if answer.status == 503)
            assert refused.headers["retry-after"] == "1"
            expect(page.get_by_label("Password")).to_have_value("")  # never shown back
            assert PASSWORD not in page.content()

        # The page sends the form again by itself once the places are free.
        expect(page).to_have_url(re.compile(r"/me$"), timeout=60_000)
        assert answers[-1].status == 303


def sign_out(page: Page) -> None:
    page.get_by_role("link", name="Sign out").click()
    page.get_by_role("button", name="Sign out").click()
    page.goto("/sign-in")
