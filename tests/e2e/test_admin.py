"""An operator's day through the real Envoy over REST, against the whole stack as `meshctl up`
runs it: the first owner made with meshctl, a sign-in with a TOTP code computed here, a batch of
codes, a real registration looked up, the referral tree, a code disabled, a user suspended, the
mail log, a rate limit the edge applies, and the audit log checked by `meshctl audit verify`."""

from __future__ import annotations

import asyncio
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pyotp
import pytest

from tests.e2e.conftest import Mesh, loopback_client, running_mesh, until
from tests.e2e.test_edge import PASSWORD, call, fresh_email, ok, registered_and_verified

pytestmark = pytest.mark.e2e
ADMIN_PASSWORD = "the operators' own long passphrase"
CHECK_CODE = "/invitemesh.invite.v1.InviteService/CheckCode"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory, MESH_RATELIMIT_RULES_CACHE="0.5") as mesh:
        yield mesh


def fresh_chain(mesh: Mesh) -> None:
    """The audit chain is the database's, and one given by MESH_DATABASE_URL holds entries signed
    by other runs' keys: this mesh starts a chain of its own."""
    (database,) = [part["address"] for part in mesh.stack()["parts"] if part["name"] == "postgres"]

    async def truncate() -> None:
        connection = await asyncpg.connect(database)
        try:
            await connection.execute("TRUNCATE admin.audit_log")
        finally:
            await connection.close()

    asyncio.run(truncate())


def _check_code(mesh: Mesh, code: str, client: str) -> int:
    host, port = mesh.edge.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30, source_address=(client, 0))
    try:
        connection.request(
            "POST", "/v1/invites:check", json.dumps({"code": code}), {"content-type": "application/json"}
        )
        answer = connection.getresponse()
        answer.read()
        return answer.status
    finally:
        connection.close()


def test_an_operators_day_over_rest(mesh: Mesh) -> None:
    fresh_chain(mesh)
    owner_email = f"owner.{uuid.uuid4().hex[:8]}@example.com"
    created = mesh.ctl("admins", "create", owner_email, "--role", "owner", "--json", input=ADMIN_PASSWORD + "\n")
    bootstrapped = json.loads(created.stdout)
    listed = json.loads(mesh.ctl("admins", "list", "--json").stdout)
    totp = pyotp.parse_uri(bootstrapped["totpUri"])
    assert isinstance(totp, pyotp.TOTP)
    edge = mesh.edge

    mfa = ok(call(edge, "POST", "/v1/admin/sessions", {"email": owner_email, "password": ADMIN_PASSWORD}))
    session = ok(call(edge, "POST", "/v1/admin/sessions:mfa", {"mfaToken": mfa["mfaToken"], "totpCode": totp.now()}))
    token = session["accessToken"]
    batch = ok(call(edge, "POST", "/v1/admin/invite-batches", {"count": 2, "maxUses": "1"}, token=token))["codes"]
    code = batch[0]["code"]
    email = fresh_email()
    person = registered_and_verified(mesh, email, code)
    me = ok(call(edge, "GET", "/v1/users/me", token=person["accessToken"]))["user"]

    def redeemed() -> dict[str, Any] | None:
        # A hold at first; confirmed with the user's id through auth_svc's outbox.
        found = ok(call(edge, "GET", f"/v1/admin/invites/{code}", token=token))
        return found if any(r.get("userId") for r in found.get("redemptions", [])) else None

    looked_up = until(redeemed, "the code's confirmed redemption")
    own = until(
        lambda: ok(call(edge, "GET", "/v1/users/me/invites", token=person["accessToken"])).get("codes"),
        "the person's own codes",
    )
    friend = registered_and_verified(mesh, fresh_email(), own[0]["code"])
    friend_me = ok(call(edge, "GET", "/v1/users/me", token=friend["accessToken"]))["user"]
    tree = until(
        lambda: ok(call(edge, "GET", f"/v1/admin/users/{me['id']}/referrals?depth=2", token=token)).get("children"),
        "the referral tree",
    )
    disabled = ok(call(edge, "POST", f"/v1/admin/invites/{code}:disable", {}, token=token))["code"]
    checked = ok(call(edge, "POST", "/v1/invites:check", {"code": code}))
    suspended = ok(call(edge, "POST", f"/v1/admin/users/{me['id']}:suspend", {"reason": "e2e"}, token=token))
    signing_in = call(edge, "POST", "/v1/sessions", {"email": email, "password": PASSWORD})
    emails = ok(call(edge, "GET", f"/v1/admin/emails?to={email}&pageSize=10", token=token))
    stats = ok(call(edge, "GET", "/v1/admin/emails:stats", token=token))["stats"]

    assert bootstrapped["admin"]["email"] == owner_email and bootstrapped["admin"]["role"] == "ADMIN_ROLE_OWNER"
    assert bootstrapped["admin"] in listed
    assert session["admin"]["id"] == bootstrapped["admin"]["id"]
    assert {c["owner"]["adminId"] for c in batch} == {bootstrapped["admin"]["id"]}
    assert [r["userId"] for r in looked_up["redemptions"]] == [me["id"]]
    assert [node["userId"] for node in tree] == [friend_me["id"]]
    assert disabled["state"] == "CODE_STATE_DISABLED" and checked == {"valid": False, "reason": "INVITE_CODE_DISABLED"}
    assert suspended["user"]["state"] == "USER_STATE_SUSPENDED"
    assert (signing_in.status, signing_in.reason()) == (403, "USER_SUSPENDED")
    assert int(emails["totalSize"]) == len(emails["emails"]) >= 1 and emails["emails"][0]["to"] == email
    assert int(stats["created"]) >= 2

    rules = [r for r in ok(call(edge, "GET", "/v1/admin/rate-limits", token=token))["rules"] if not r.get("default")]
    tight = {"route": CHECK_CODE, "requestsPerUnit": 2, "unit": "TIME_UNIT_MINUTE", "failClosed": True}
    try:
        others = [rule for rule in rules if rule["route"] != CHECK_CODE]
        ok(call(edge, "PUT", "/v1/admin/rate-limits", {"rules": [*others, tight]}, token=token))

        def third_check_refused() -> bool:
            client = loopback_client()
            return [_check_code(mesh, code, client) for _ in range(3)] == [200, 200, 429]

        until(third_check_refused, "the edge applying the new rule", within=30)
    finally:
        ok(call(edge, "PUT", "/v1/admin/rate-limits", {"rules": rules}, token=token))

    entries = ok(call(edge, "GET", "/v1/admin/audit-log?pageSize=100", token=token))["entries"]
    actions = [entry["action"] for entry in reversed(entries)]
    verified = mesh.ctl("audit", "verify")

    assert actions == [
        "CreateAdmin",
        "VerifySessionMfa",
        "CreateInviteBatch",
        "DisableInvite",
        "SuspendUser",
        "UpdateRateLimits",
        "UpdateRateLimits",
    ]
    assert {entry["outcome"] for entry in entries} == {"AUDIT_OUTCOME_SUCCEEDED"}
    assert verified.stdout.startswith("audit log verified: 7 entries")
