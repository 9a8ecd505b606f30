"""The waitlist end to end, as `meshctl up` runs it: in Chromium, a person joins, confirms from the
mailed link and moves up when a friend joins through the share link; the reserve page offers the
waitlist when a code's places are gone; an operator sets a campaign's top-up in the console and
the next people are invited by themselves; and over REST, an admin's release whose invite_svc is
killed mid-delivery mails every person invited exactly once."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.browsers import chromium, path_of, person
from tests.e2e.conftest import Mesh, running_mesh, until
from tests.e2e.test_console import admin_token, sign_in
from tests.e2e.test_edge import PASSWORD, call, fresh_email, mailed, ok, registered_and_verified
from tests.e2e.test_pages import minted

pytestmark = pytest.mark.e2e
LINK = r"(http\S+/waitlist/me#token=[A-Za-z0-9_-]+)"
INVITATION = "Your invitemesh invite is here"
CODE = r"\b([2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z])\b"
SCREENSHOTS = os.environ.get("MESH_SCREENSHOTS")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    # Every join here comes from a handful of addresses; a release's mails leave within a lease.
    with running_mesh(
        tmp_path_factory,
        MESH_INVITE_WAITLIST_JOINS_PER_HOUR="100000",
        MESH_OUTBOX_LEASE="3",
        MESH_INVITE_WAITLIST_TOP_UP_INTERVAL="1",
    ) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as running:
        yield running


def _shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"waitlist-{name}.png"), full_page=True)


def joined_and_confirmed(mesh: Mesh, email: str) -> str:
    """The token of `email`'s private link, after joining and confirming over REST."""
    ok(call(mesh.edge, "POST", "/v1/waitlist", {"email": email}))
    token = mailed(mesh, email, LINK).rpartition("#token=")[2]
    ok(call(mesh.edge, "POST", "/v1/waitlist:confirm", {"token": token}))
    return token


def _place_number(page: Page) -> int:
    return int(page.locator(".place-number").inner_text().lstrip("#").replace(",", ""))


def test_a_person_confirms_from_the_mail_and_moves_up_when_a_friend_joins_through_the_share_link(
    mesh: Mesh, browser: Browser
) -> None:
    # Five people waiting who joined just before Ada: a referral moves her past exactly them.
    for _ in range(5):
        joined_and_confirmed(mesh, fresh_email())
    ada_email = fresh_email()
    with person(browser, mesh.edge) as ada_context:
        ada = ada_context.new_page()
        ada.goto("/waitlist")
        _shot(ada, "join")
        ada.get_by_label("Email").fill(ada_email)
        ada.get_by_role("button", name="Join the waitlist").click()
        expect(ada.get_by_role("heading", name="Check your mail")).to_be_visible()
        expect(ada.get_by_text(ada_email)).to_be_visible()
        _shot(ada, "sent")

        ada.goto(path_of(mailed(mesh, ada_email, LINK)))
        expect(ada.get_by_role("heading", name="Your place in line")).to_be_visible()
        expect(ada.locator(".place-number")).to_be_visible()
        assert "#token=" not in ada.url  # the script took the token out of the address bar
        expect(ada.get_by_role("link", name="Sign in")).to_be_visible()  # a link is no session
        before = _place_number(ada)
        share = ada.get_by_label("Your share link").input_value()
        expect(ada.get_by_text("Friends counted so far: 0 of 10.")).to_be_visible()
        _shot(ada, "place")

        friend = fresh_email()
        with person(browser, mesh.edge) as friend_context:
            page = friend_context.new_page()
            page.goto(path_of(share))
            expect(page.get_by_text("A friend sent you here")).to_be_visible()
            page.get_by_label("Email").fill(friend)
            page.get_by_role("button", name="Join the waitlist").click()
            expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
            page.goto(path_of(mailed(mesh, friend, LINK)))
            expect(page.locator(".place-number")).to_be_visible()

        ada.get_by_role("button", name="Refresh my place").click()
        expect(ada.get_by_text("Friends counted so far: 1 of 10.")).to_be_visible()
        after = _place_number(ada)

    assert re.search(r"/waitlist\?ref=[A-Za-z0-9_-]+$", share)
    assert after == before - 5


def test_without_javascript_the_token_is_pasted_and_a_wrong_one_is_said_beside_its_field(
    mesh: Mesh, browser: Browser
) -> None:
    email = fresh_email()
    ok(call(mesh.edge, "POST", "/v1/waitlist", {"email": email}))
    token = mailed(mesh, email, LINK).rpartition("#token=")[2]
    with person(browser, mesh.edge, javascript=False) as context:
        page = context.new_page()
        page.goto("/waitlist/me")
        page.get_by_label("Token from the mail").fill(token[:-3] + "AAA")
        page.get_by_role("button", name="Show my place").click()
        expect(page.locator("#token-error")).to_have_text(
            "This link is not valid. Join again with your email to get a new one."
        )
        page.get_by_label("Token from the mail").fill(token)
        page.get_by_role("button", name="Show my place").click()
        expect(page.locator(".place-number")).to_be_visible()


def test_the_reserve_page_offers_the_waitlist_when_a_codes_places_are_gone(mesh: Mesh, browser: Browser) -> None:
    code = minted(mesh)
    registered_and_verified(mesh, fresh_email(), code)  # its one use
    email = fresh_email()
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        page.goto(f"/?code={code}")
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Reserve my spot").click()
        expect(page.locator("#code-error, #code-status .error").first).to_have_text("This code has been used up.")
        _shot(page, "offer")
        page.get_by_role("button", name=f"Join the waitlist as {email}").click()
        expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()
    assert mailed(mesh, email, LINK)


def test_an_operator_sets_a_campaigns_top_up_in_the_console_and_the_next_people_are_invited_as_far_as_it_has_room(
    mesh: Mesh, browser: Browser
) -> None:
    token = admin_token(mesh, "operator")
    # A database given by MESH_DATABASE_URL holds other runs' people: released first, so the
    # top-up takes these.
    if waiting := int(ok(call(mesh.edge, "GET", "/v1/admin/waitlist:stats", token=token))["stats"]["waiting"]):
        release = {"count": waiting, "requestId": uuid.uuid4().hex}
        ok(call(mesh.edge, "POST", "/v1/admin/waitlist:release", release, token=token))
    people = [fresh_email() for _ in range(3)]
    tokens = [joined_and_confirmed(mesh, email) for email in people]
    name = f"top-up-{uuid.uuid4().hex[:8]}"
    # Room for two, and closing by itself: a run cut short leaves nothing that invites for long.
    closes = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=10)).isoformat()
    made = {"campaign": {"displayName": name, "capacity": 2, "endTime": closes}}
    campaign = ok(call(mesh.edge, "POST", "/v1/admin/campaigns", made, token=token))["campaign"]
    try:
        with person(browser, mesh.edge) as context:
            page = context.new_page()
            sign_in(page, mesh, "operator")
            page.get_by_role("link", name="Campaigns", exact=True).click()
            row = page.get_by_role("row", name=re.compile(re.escape(name)))
            row.get_by_label(f"Waitlist invitations {name} keeps out").fill("2")
            row.get_by_role("button", name="Set").click()
            expect(page.get_by_role("status")).to_have_text("The waitlist top-up is set.")
            expect(page.get_by_label(f"Waitlist invitations {name} keeps out")).to_have_value("2")
            _shot(page, "campaign-top-up")
        codes = [mailed(mesh, email, CODE) for email in people[:2]]
        third = ok(call(mesh.edge, "GET", f"/v1/waitlist/me?token={tokens[2]}"))["entry"]
    finally:
        off = ok(call(mesh.edge, "PATCH", f"/v1/admin/campaigns/{campaign['id']}", {"waitlistTopUp": 0}, token=token))
    listed = ok(call(mesh.edge, "GET", f"/v1/admin/invites?campaignId={campaign['id']}", token=token))["codes"]

    assert len(set(codes)) == 2 and {code["code"] for code in listed} == set(codes)
    # Two invitations out of two places: the third waits, though the top-up asks for two out.
    assert (third["state"], int(third["position"])) == ("WAITLIST_ENTRY_STATE_WAITING", 1)
    assert not _invitations(mesh, people[2])
    assert off["campaign"].get("waitlistTopUp", 0) == 0


def _pid(mesh: Mesh, name: str) -> int:
    (found,) = [part["pid"] for part in mesh.stack()["parts"] if part["name"] == name]
    return int(found)


def _invitations(mesh: Mesh, email: str) -> list[dict[str, Any]]:
    mails = json.loads(mesh.ctl("mail", "list", "--to", email, "--json").stdout)
    return [mail for mail in mails if mail["subject"] == INVITATION]


def test_a_release_whose_invite_svc_is_killed_mid_delivery_mails_every_person_once(mesh: Mesh) -> None:
    token = admin_token(mesh, "operator")
    people = [fresh_email() for _ in range(6)]
    for email in people:
        joined_and_confirmed(mesh, email)
    waiting = int(ok(call(mesh.edge, "GET", "/v1/admin/waitlist:stats", token=token))["stats"]["waiting"])
    release = {"count": waiting, "requestId": uuid.uuid4().hex}
    mail_svc, invite_svc = _pid(mesh, "mail_svc"), _pid(mesh, "invite_svc")

    # mail_svc stops answering: the release's mails are handed to it and not yet acknowledged
    # when invite_svc dies, so the restarted invite_svc delivers them again.
    os.kill(mail_svc, signal.SIGSTOP)
    try:
        released = ok(call(mesh.edge, "POST", "/v1/admin/waitlist:release", release, token=token))["entries"]
        # The relay has leased the release's mails and is handing them to the stopped mail_svc.
        until(lambda: _outbox_count(mesh, "lease_until IS NOT NULL") > 0, "the relay delivering")
        os.kill(invite_svc, signal.SIGKILL)
    finally:
        os.kill(mail_svc, signal.SIGCONT)
    again = until(
        lambda: (
            (answer := call(mesh.edge, "POST", "/v1/admin/waitlist:release", release, token=token)).status == 200
            and answer.json()["entries"]
        ),
        "invite_svc serving again",
    )
    until(lambda: all(_invitations(mesh, email) for email in people), "an invitation to each person")
    # Every message of the release delivered: the killed relay's lease ran out and the new one
    # sent them again; what mail_svc logged is all it will ever send.
    until(lambda: _outbox_count(mesh) == 0, "invite_svc's outbox delivered")
    logged = [_logged(mesh, token, email) for email in people]

    assert [entry["email"] for entry in released if entry["email"] in people] == people
    assert [entry["id"] for entry in again] == [entry["id"] for entry in released]
    assert logged == [2] * len(people)  # the link, the invitation
    assert [len(_invitations(mesh, email)) for email in people] == [1] * len(people)


def _outbox_count(mesh: Mesh, condition: str = "true") -> int:
    """invite_svc's undelivered outbox messages that meet `condition` (SQL)."""
    (database,) = [part["address"] for part in mesh.stack()["parts"] if part["name"] == "postgres"]

    async def count() -> int:
        connection = await asyncpg.connect(database)
        try:
            query = "SELECT count(*) FROM invite.outbox WHERE deliver_time IS NULL AND give_up_time IS NULL AND "
            return int(await connection.fetchval(query + condition))
        finally:
            await connection.close()

    # Playwright's loop runs in this thread: the query gets a loop of its own in another.
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, count()).result()


def _logged(mesh: Mesh, token: str, email: str) -> int:
    return int(ok(call(mesh.edge, "GET", f"/v1/admin/emails?to={email}&pageSize=10", token=token))["totalSize"])


def test_an_operator_releases_moves_and_removes_in_the_console_and_a_viewer_only_looks(
    mesh: Mesh, browser: Browser
) -> None:
    first, second, third = (fresh_email() for _ in range(3))
    for email in (first, second, third):
        joined_and_confirmed(mesh, email)
    with person(browser, mesh.edge) as context:
        page = context.new_page()
        sign_in(page, mesh, "operator")
        page.get_by_role("link", name="Waitlist").click()
        expect(page.get_by_role("heading", name="Top referrers")).to_be_visible()
        page.get_by_label("Email starts with").fill(third)
        page.get_by_role("button", name="Filter").click()
        row = page.get_by_role("row", name=re.compile(re.escape(third)))
        place = int(row.get_by_role("cell").first.inner_text())
        row.get_by_label(f"Places up for {third}").fill("1")
        row.get_by_role("button", name="Move", exact=True).click()
        page.get_by_label("Email starts with").fill(third)
        page.get_by_role("button", name="Filter").click()
        expect(page.get_by_role("row", name=re.compile(re.escape(third))).get_by_role("cell").first).to_have_text(
            str(place - 1)
        )
        page.get_by_label("Email starts with").fill(second)
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("row", name=re.compile(re.escape(second))).get_by_role("button", name="Remove").click()
        _shot(page, "console")
        waiting = int(
            ok(call(mesh.edge, "GET", "/v1/admin/waitlist:stats", token=admin_token(mesh, "operator")))["stats"][
                "waiting"
            ]
        )
        page.get_by_label("People to invite").fill(str(waiting))
        page.get_by_role("button", name="Release").click()
        expect(
            page.get_by_text(f"Invited {waiting} {'person' if waiting == 1 else 'people'} from the waitlist.")
        ).to_be_visible()

        context.clear_cookies()
        sign_in(page, mesh, "viewer")
        page.goto("/admin/waitlist")
        expect(page.get_by_role("heading", name="People", exact=True)).to_be_visible()
        expect(page.get_by_role("button", name="Release")).to_have_count(0)

    assert mailed(mesh, first, CODE)
    assert mailed(mesh, third, CODE)
    assert not _invitations(mesh, second)
