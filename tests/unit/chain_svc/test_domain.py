"""chain_svc's pure rules: addresses, the message a link is signed over, shards."""

from __future__ import annotations

import datetime
import uuid

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from chain_svc import domain

SITE = domain.Site("wallets.example", "https://wallets.example", 31337)
NOW = datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.UTC)


def test_an_address_is_checksummed_whatever_its_case_unless_its_mixed_case_is_wrong() -> None:
    right = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

    assert domain.checksummed(right.lower()) == right
    assert domain.checksummed("0x" + right[2:].upper()) == right
    with pytest.raises(domain.Refusal) as typo:
        domain.checksummed(right[:-1] + "D")
    assert typo.value.reason == domain.ADDRESS_INVALID
    for wrong in ("", right[2:], right[:-2], "0x" + "zz" * 20):
        with pytest.raises(domain.Refusal):
            domain.checksummed(wrong)


def test_a_challenge_signed_by_its_address_is_ours_until_it_expires() -> None:
    wallet = Account.create()
    message = domain.challenge(SITE, wallet.address, "abcdefgh12345678", NOW, 300).prepare_message()
    signature = wallet.sign_message(encode_defunct(text=message)).signature.to_0x_hex()

    assert domain.signed_for(SITE, message, signature, NOW).address == wallet.address
    with pytest.raises(domain.Refusal) as late:
        domain.signed_for(SITE, message, signature, NOW + datetime.timedelta(seconds=301))
    assert late.value.reason == domain.CHALLENGE_EXPIRED


@pytest.mark.parametrize(
    ("site", "reason"),
    [
        (domain.Site("other.example", SITE.uri, SITE.chain_id), domain.DOMAIN_MISMATCH),
        (domain.Site(SITE.domain, "https://wallets.example/elsewhere", SITE.chain_id), domain.URI_MISMATCH),
        (domain.Site(SITE.domain, SITE.uri, 1), domain.CHAIN_MISMATCH),
    ],
)
def test_a_message_for_another_site_or_chain_is_refused(site: domain.Site, reason: str) -> None:
    wallet = Account.create()
    message = domain.challenge(SITE, wallet.address, "abcdefgh12345678", NOW, 300).prepare_message()
    signature = wallet.sign_message(encode_defunct(text=message)).signature.to_0x_hex()

    with pytest.raises(domain.Refusal) as refused:
        domain.signed_for(site, message, signature, NOW)
    assert refused.value.reason == reason


def test_text_that_is_no_message_is_bad_input() -> None:
    with pytest.raises(domain.Refusal) as refused:
        domain.signed_for(SITE, "please link my wallet", "0x00", NOW)
    assert refused.value.reason == domain.MESSAGE_INVALID


def test_shards_cover_every_user_and_stay_put() -> None:
    users = [uuid.uuid4() for _ in range(2000)]
    shards = [domain.shard_of(user) for user in users]

    assert all(0 <= shard < domain.SHARDS for shard in shards)
    assert len(set(shards)) > domain.SHARDS * 0.9
    assert [domain.shard_of(user) for user in users] == shards
