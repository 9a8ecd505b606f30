"""chain_svc's pure rules: addresses, the Sign-In with Ethereum (EIP-4361) message a link is
signed over and what makes a signed one ours, and which shard of the polling work a user is in."""

from __future__ import annotations

import datetime
import uuid
import warnings
from dataclasses import dataclass

from eth_typing import ChecksumAddress
from web3 import Web3

with warnings.catch_warnings():
    # siwe's grammars define RFC 5234's core rules again, which abnf warns of at import.
    warnings.simplefilter("ignore")
    import siwe

SHARDS = 256
"""The polling work is cut into this many shards by user id; replicas hold shards, not users, so
a replica joining or dying moves whole shards. Fixed: a stored wallet keeps its shard."""
STATEMENT = "Link this wallet to your invitemesh account."

ADDRESS_INVALID = "WALLET_ADDRESS_INVALID"
MESSAGE_INVALID = "WALLET_MESSAGE_INVALID"
SIGNATURE_INVALID = "WALLET_SIGNATURE_INVALID"
DOMAIN_MISMATCH = "WALLET_DOMAIN_MISMATCH"
URI_MISMATCH = "WALLET_URI_MISMATCH"
CHAIN_MISMATCH = "WALLET_CHAIN_MISMATCH"
CHALLENGE_EXPIRED = "WALLET_CHALLENGE_EXPIRED"
CHALLENGE_UNKNOWN = "WALLET_CHALLENGE_UNKNOWN"
CHALLENGE_USED = "WALLET_CHALLENGE_USED"
ADDRESS_TAKEN = "WALLET_ADDRESS_TAKEN"
NOT_FOUND = "WALLET_NOT_FOUND"
CHAIN_UNAVAILABLE = "CHAIN_UNAVAILABLE"


class Refusal(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def shard_of(user_id: uuid.UUID) -> int:
    return user_id.int % SHARDS


def checksummed(address: str) -> ChecksumAddress:
    """`address` in EIP-55 form. All lower or all upper case is taken as it is; mixed case must
    carry a right checksum, since a wrong one is a typo."""
    mixed_case = address[2:] not in (address[2:].lower(), address[2:].upper())
    if (
        not address.startswith("0x")
        or not Web3.is_address(address)
        or (mixed_case and not Web3.is_checksum_address(address))
    ):
        raise Refusal(ADDRESS_INVALID, "a 0x-prefixed 20-byte hex address, with a right EIP-55 checksum if mixed case")
    return Web3.to_checksum_address(address)


@dataclass(frozen=True)
class Site:
    """What a link must be signed for."""

    domain: str
    uri: str
    chain_id: int


def new_nonce() -> str:
    return str(siwe.generate_nonce())


def challenge(site: Site, address: ChecksumAddress, nonce: str, now: datetime.datetime, ttl: float) -> siwe.SiweMessage:
    return siwe.SiweMessage(
        domain=site.domain,
        address=address,
        statement=STATEMENT,
        uri=site.uri,
        version="1",
        chain_id=site.chain_id,
        nonce=nonce,
        issued_at=_iso(now),
        expiration_time=_iso(now + datetime.timedelta(seconds=ttl)),
    )


def expiry_of(message: siwe.SiweMessage) -> datetime.datetime:
    assert message.expiration_time is not None
    return datetime.datetime.fromisoformat(message.expiration_time)


def signed_for(site: Site, text: str, signature: str, now: datetime.datetime) -> siwe.SiweMessage:
    """The message `text` if it is one of ours, unexpired, and `signature` recovers to its address;
    otherwise a refusal that says which. The nonce is the caller's to spend."""
    try:
        message = siwe.SiweMessage.from_message(text)
    except Exception as error:  # siwe raises parser and pydantic errors of many kinds
        raise Refusal(MESSAGE_INVALID, "not a Sign-In with Ethereum message") from error
    if message.domain != site.domain or message.scheme not in (None, "http", "https"):
        raise Refusal(DOMAIN_MISMATCH, "the message is for another site")
    if message.uri != site.uri:
        raise Refusal(URI_MISMATCH, "the message names another URI")
    if message.chain_id != site.chain_id:
        raise Refusal(CHAIN_MISMATCH, f"the message is for another chain; sign for chain {site.chain_id}")
    if message.expiration_time is None or message.statement != STATEMENT:
        raise Refusal(MESSAGE_INVALID, "not a message this service issued")
    try:
        message.verify(signature, domain=site.domain, timestamp=now)
    except siwe.ExpiredMessage as error:
        raise Refusal(CHALLENGE_EXPIRED, "the challenge has expired; ask for a new one") from error
    except siwe.VerificationError as error:
        raise Refusal(SIGNATURE_INVALID, "the signature is not the address's over this message") from error
    return message


def _iso(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
