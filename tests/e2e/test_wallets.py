"""A wallet linked, polled and seen through the real Envoy over REST, against the stack as
`meshctl up` runs it with its development chain: the person signs the challenge with their key,
`meshctl chain fund` and `mine` move ether, the snapshot shows it, an admin sees the wallet, and
the person unlinks it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from tests.e2e.conftest import Mesh, running_mesh, until
from tests.e2e.test_console import admin_token
from tests.e2e.test_edge import call, fresh_email, ok, registered_and_verified

pytestmark = pytest.mark.e2e
CONFIRMATIONS = 1


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(
        tmp_path_factory, MESH_CHAIN_POLL_INTERVAL="0.5", MESH_CHAIN_CONFIRMATIONS=str(CONFIRMATIONS)
    ) as mesh:
        yield mesh


def test_a_person_links_a_wallet_sees_its_balance_and_unlinks_it(mesh: Mesh) -> None:
    (minted,) = json.loads(mesh.ctl("invites", "mint", "--json").stdout)
    token = registered_and_verified(mesh, fresh_email(), minted["code"])["accessToken"]
    me = ok(call(mesh.edge, "GET", "/v1/users/me", token=token))["user"]
    wallet = Account.create()

    challenge = ok(call(mesh.edge, "POST", "/v1/wallets:challenge", {"address": wallet.address.lower()}, token=token))
    signature = wallet.sign_message(encode_defunct(text=challenge["message"])).signature.to_0x_hex()
    linked = ok(
        call(
            mesh.edge,
            "POST",
            "/v1/wallets:link",
            {"message": challenge["message"], "signature": signature},
            token=token,
        )
    )["wallet"]
    assert (linked["address"], linked["userId"]) == (wallet.address, me["id"])

    funded = mesh.ctl("chain", "fund", wallet.address, "2.5")
    assert wallet.address in funded.stdout
    mesh.ctl("chain", "mine", str(CONFIRMATIONS))

    def funded_snapshot() -> dict[str, Any] | None:
        shown = ok(call(mesh.edge, "GET", "/v1/users/me/wallet", token=token))["wallet"]
        snapshot = shown.get("latestSnapshot", {})
        return snapshot if snapshot.get("balanceWei") == str(25 * 10**17) else None

    snapshot = until(funded_snapshot, "the funding in the wallet's snapshot")
    (chain,) = [part for part in mesh.stack()["parts"] if part["name"] == "chain"]
    if chain["embedded"]:
        # meshctl deployed its dev token and told chain_svc to poll it.
        assert [token["contractAddress"] for token in snapshot["tokenBalances"]] == [chain["details"]["token"]]

    seen = ok(call(mesh.edge, "GET", f"/v1/admin/users/{me['id']}/wallet", token=admin_token(mesh, "viewer")))["wallet"]
    assert seen["address"] == wallet.address

    assert call(mesh.edge, "DELETE", "/v1/users/me/wallet", token=token).status == 200
    gone = call(mesh.edge, "GET", "/v1/users/me/wallet", token=token)
    assert (gone.status, gone.reason()) == (404, "WALLET_NOT_FOUND")


def test_a_link_signed_by_another_key_is_a_403_over_rest(mesh: Mesh) -> None:
    (minted,) = json.loads(mesh.ctl("invites", "mint", "--json").stdout)
    token = registered_and_verified(mesh, fresh_email(), minted["code"])["accessToken"]
    wallet = Account.create()
    challenge = ok(call(mesh.edge, "POST", "/v1/wallets:challenge", {"address": wallet.address}, token=token))
    forged = Account.create().sign_message(encode_defunct(text=challenge["message"])).signature.to_0x_hex()

    refused = call(
        mesh.edge, "POST", "/v1/wallets:link", {"message": challenge["message"], "signature": forged}, token=token
    )

    assert (refused.status, refused.reason()) == (403, "WALLET_SIGNATURE_INVALID")


def test_meshctl_status_reports_the_chain(mesh: Mesh) -> None:
    status = json.loads(mesh.ctl("status", "--json").stdout)
    (chain,) = [part for part in status["parts"] if part["name"] == "chain"]
    (chain_svc,) = [part for part in status["parts"] if part["name"] == "chain_svc"]
    assert chain["healthy"], chain
    assert (chain_svc["healthy"], chain_svc["notes"]) == (True, []), chain_svc
