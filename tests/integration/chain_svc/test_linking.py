"""Linking a wallet with Sign-In with Ethereum against a real chain_svc, Redis, PostgreSQL and node:
what links, what every kind of forged, stale or replayed message gets, and one nonce under
concurrent links."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import siwe
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from invitemesh.chain.v1 import chain_service_pb2 as pb
from invitemesh.chain.v1 import chain_service_pb2_grpc

from chain_svc.server import add_servicers
from mesh.channels import open_channel
from mesh.errors import error_info, field_violations, retry_info
from mesh.services import CHAIN
from tests.integration.mesh.trust_fixtures import BearerIsUserId, as_user, make_trust

SITE = "https://wallets.invitemesh.test"


@dataclass
class Chain:
    user: chain_service_pb2_grpc.ChainServiceAsyncStub
    admin_svc: chain_service_pb2_grpc.ChainServiceAsyncStub
    chain_id: int

    async def challenge(self, who: str, address: str) -> str:
        answer = await self.user.CreateWalletChallenge(
            pb.CreateWalletChallengeRequest(address=address), metadata=as_user(who)
        )
        return answer.message

    async def link(self, who: str, message: str, signature: str) -> pb.Wallet:
        answer = await self.user.LinkWallet(
            pb.LinkWalletRequest(message=message, signature=signature), metadata=as_user(who)
        )
        return answer.wallet


@pytest.fixture
async def chain(tmp_path: Path, migrated_database_url: str, redis_url: str, chain_rpc_url: str) -> AsyncIterator[Chain]:
    trust = make_trust(
        tmp_path, migrated_database_url, redis_url, chain_rpc_url=chain_rpc_url, chain_siwe_uri=SITE,
        chain_pollers=False,
    )  # fmt: skip
    server = trust.server(CHAIN, add_servicers, tokens=BearerIsUserId())
    await server.start()
    target = f"127.0.0.1:{server.port}"
    async with (
        open_channel(target, trust.settings) as user,
        open_channel(target, trust.settings, "admin_svc", trust.signer("admin_svc")) as admin,
    ):
        stub = chain_service_pb2_grpc.ChainServiceStub(user)
        someone = str(uuid.uuid4())
        first = await stub.CreateWalletChallenge(
            pb.CreateWalletChallengeRequest(address=Account.create().address), metadata=as_user(someone)
        )
        chain_id = siwe.SiweMessage.from_message(first.message).chain_id
        yield Chain(stub, chain_service_pb2_grpc.ChainServiceStub(admin), chain_id)
    await server.stop(0)


def _signed(wallet: LocalAccount, message: str) -> str:
    return str(wallet.sign_message(encode_defunct(text=message)).signature.to_0x_hex())


def _changed(message: str, **changes: Any) -> str:
    """`message` with some fields changed, written out again."""
    return str(siwe.SiweMessage.from_message(message).model_copy(update=changes).prepare_message())


async def _refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(error)
    assert info is not None
    return str(info.reason)


async def test_a_wallet_links_with_its_signature_and_shows_checksummed(chain: Chain) -> None:
    me, wallet = str(uuid.uuid4()), Account.create()
    message = await chain.challenge(me, wallet.address.lower())

    parsed = siwe.SiweMessage.from_message(message)
    assert (parsed.domain, parsed.uri, parsed.address) == ("wallets.invitemesh.test", SITE, wallet.address)
    linked = await chain.link(me, message, _signed(wallet, message))

    assert (linked.user_id, linked.address, linked.chain_id) == (me, wallet.address, chain.chain_id)
    mine = (await chain.user.GetMyWallet(pb.GetMyWalletRequest(), metadata=as_user(me))).wallet
    assert mine.address == wallet.address
    assert not mine.HasField("latest_snapshot")
    seen_by_admins = (await chain.admin_svc.GetWallet(pb.GetWalletRequest(user_id=me))).wallet
    assert seen_by_admins.address == wallet.address


async def test_a_used_challenge_is_refused_when_replayed(chain: Chain) -> None:
    me, wallet = str(uuid.uuid4()), Account.create()
    message = await chain.challenge(me, wallet.address)
    signature = _signed(wallet, message)
    await chain.link(me, message, signature)

    replayed = await _refused(chain.link(me, message, signature))

    assert replayed.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _reason(replayed) == "WALLET_CHALLENGE_USED"


@pytest.mark.parametrize(
    ("changes", "reason", "code"),
    [
        ({"domain": "evil.example"}, "WALLET_DOMAIN_MISMATCH", grpc.StatusCode.PERMISSION_DENIED),
        ({"uri": "https://evil.example"}, "WALLET_URI_MISMATCH", grpc.StatusCode.PERMISSION_DENIED),
        ({"chain_id": 1}, "WALLET_CHAIN_MISMATCH", grpc.StatusCode.PERMISSION_DENIED),
        ({"statement": "Send me everything."}, "WALLET_MESSAGE_INVALID", grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"expiration_time": siwe.ISO8601Datetime("2026-01-01T00:00:00Z")},
            "WALLET_CHALLENGE_EXPIRED",
            grpc.StatusCode.FAILED_PRECONDITION,
        ),
    ],
)
async def test_a_message_not_ours_or_expired_is_refused_even_when_signed(
    chain: Chain, changes: dict[str, Any], reason: str, code: grpc.StatusCode
) -> None:
    me, wallet = str(uuid.uuid4()), Account.create()
    ours = await chain.challenge(me, wallet.address)
    theirs = _changed(ours, **changes)

    refused = await _refused(chain.link(me, theirs, _signed(wallet, theirs)))

    assert (refused.code(), _reason(refused)) == (code, reason)
    # The refusal spent nothing: the challenge as issued still links.
    await chain.link(me, ours, _signed(wallet, ours))


async def test_a_signature_by_another_key_or_over_a_tampered_message_is_refused(chain: Chain) -> None:
    me, wallet = str(uuid.uuid4()), Account.create()
    message = await chain.challenge(me, wallet.address)
    later = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=30)).isoformat()
    tampered = _changed(message, issued_at=siwe.ISO8601Datetime(later.replace("+00:00", "Z")))

    by_another_key = await _refused(chain.link(me, message, _signed(Account.create(), message)))
    over_another_text = await _refused(chain.link(me, tampered, _signed(wallet, message)))
    garbage = await _refused(chain.link(me, message, "0x1234"))

    for refused in (by_another_key, over_another_text, garbage):
        assert (refused.code(), _reason(refused)) == (grpc.StatusCode.PERMISSION_DENIED, "WALLET_SIGNATURE_INVALID")
    await chain.link(me, message, _signed(wallet, message))


async def test_of_twenty_concurrent_links_of_one_challenge_exactly_one_links(chain: Chain) -> None:
    me, wallet = str(uuid.uuid4()), Account.create()
    message = await chain.challenge(me, wallet.address)
    signature = _signed(wallet, message)

    outcomes = await asyncio.gather(*(chain.link(me, message, signature) for _ in range(20)), return_exceptions=True)

    linked = [outcome for outcome in outcomes if isinstance(outcome, pb.Wallet)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, grpc.aio.AioRpcError)]
    assert len(linked) == 1
    assert len(refused) == 19
    assert {_reason(error) for error in refused} == {"WALLET_CHALLENGE_USED"}


async def test_another_users_challenge_is_unknown_to_me_and_stays_theirs(chain: Chain) -> None:
    owner, thief, wallet = str(uuid.uuid4()), str(uuid.uuid4()), Account.create()
    message = await chain.challenge(owner, wallet.address)
    signature = _signed(wallet, message)

    stolen = await _refused(chain.link(thief, message, signature))

    assert _reason(stolen) == "WALLET_CHALLENGE_UNKNOWN"
    assert (await chain.link(owner, message, signature)).user_id == owner


async def test_an_address_is_one_users_and_the_refusal_names_nobody(chain: Chain) -> None:
    first, second, wallet = str(uuid.uuid4()), str(uuid.uuid4()), Account.create()
    message = await chain.challenge(first, wallet.address)
    await chain.link(first, message, _signed(wallet, message))

    again = await chain.challenge(second, wallet.address)
    taken = await _refused(chain.link(second, again, _signed(wallet, again)))

    assert (taken.code(), _reason(taken)) == (grpc.StatusCode.ALREADY_EXISTS, "WALLET_ADDRESS_TAKEN")
    assert first not in (taken.details() or "")
    assert first not in str(error_info(taken))


async def test_relinking_replaces_the_wallet_and_unlinking_removes_it(chain: Chain) -> None:
    me, old, new = str(uuid.uuid4()), Account.create(), Account.create()
    for wallet in (old, new):
        message = await chain.challenge(me, wallet.address)
        await chain.link(me, message, _signed(wallet, message))

    assert (await chain.user.GetMyWallet(pb.GetMyWalletRequest(), metadata=as_user(me))).wallet.address == new.address
    # The old address is free again for anyone.
    someone = str(uuid.uuid4())
    message = await chain.challenge(someone, old.address)
    await chain.link(someone, message, _signed(old, message))

    await chain.user.UnlinkWallet(pb.UnlinkWalletRequest(), metadata=as_user(me))

    gone = await _refused(chain.user.GetMyWallet(pb.GetMyWalletRequest(), metadata=as_user(me)))
    assert (gone.code(), _reason(gone)) == (grpc.StatusCode.NOT_FOUND, "WALLET_NOT_FOUND")


@pytest.mark.parametrize("address", ["", "0x123", "0x" + "g" * 40, "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"])
async def test_a_malformed_address_is_bad_input(chain: Chain, address: str) -> None:
    refused = await _refused(chain.challenge(str(uuid.uuid4()), address))

    assert (refused.code(), _reason(refused)) == (grpc.StatusCode.INVALID_ARGUMENT, "WALLET_ADDRESS_INVALID")
    assert [violation.field for violation in field_violations(refused)] == ["address"]


async def test_a_user_asking_for_too_many_challenges_is_told_when_to_ask_again(
    tmp_path: Path, migrated_database_url: str, redis_url: str, chain_rpc_url: str
) -> None:
    trust = make_trust(
        tmp_path, migrated_database_url, redis_url, chain_rpc_url=chain_rpc_url, chain_challenges_per_hour=3,
        chain_pollers=False,
    )  # fmt: skip
    server = trust.server(CHAIN, add_servicers, tokens=BearerIsUserId())
    await server.start()
    me, someone_else = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        async with open_channel(f"127.0.0.1:{server.port}", trust.settings) as channel:
            chain = Chain(
                chain_service_pb2_grpc.ChainServiceStub(channel), chain_service_pb2_grpc.ChainServiceStub(channel), 0
            )
            for _ in range(3):
                await chain.challenge(me, Account.create().address)
            limited = await _refused(chain.challenge(me, Account.create().address))
            assert await chain.challenge(someone_else, Account.create().address)
    finally:
        await server.stop(0)

    assert (limited.code(), _reason(limited)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    retry = retry_info(limited)
    assert retry is not None and 0 < retry.retry_delay.seconds <= 3600
