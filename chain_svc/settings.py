"""chain_svc's own settings, `MESH_CHAIN_*` (the node itself is `MESH_CHAIN_RPC_URL`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from eth_typing import ChecksumAddress
from pydantic import Field, field_validator
from web3 import Web3

from mesh.settings import MeshSettings


class ChainSettings(MeshSettings, env_prefix="MESH_CHAIN_"):
    siwe_uri: str = "http://localhost:8080"
    """the site wallets sign in to: a Sign-In with Ethereum message names it as its URI, and its
    host (with port) as its domain; a message for anything else is refused"""
    chain_id: int | None = Field(default=None, gt=0)
    """the chain a link must be signed for; unset, the node's own (`eth_chainId`)"""
    challenge_ttl: float = Field(default=300.0, gt=0, le=3600)
    """seconds a wallet challenge may be signed and sent back in"""
    challenges_per_hour: int = Field(default=20, gt=0)
    """wallet challenges a user may ask for in an hour (each holds a nonce in Redis until it lapses)"""
    tokens: list[ChecksumAddress] = Field(default_factory=list)
    """JSON list of ERC-20 contract addresses whose balances each snapshot reads"""
    confirmations: int = Field(default=2, ge=0, le=1000)
    """blocks behind the head a snapshot is read at, so that a reorg does not leave data from an
    abandoned block"""
    poll_interval: float = Field(default=10.0, gt=0)
    """seconds between two snapshots of a wallet"""
    lease_ttl: float = Field(default=10.0, ge=1)
    """seconds a replica's hold on its shards of the wallets lasts unrenewed: a replica that dies
    loses its shards to the others within that (renewed three times in it)"""
    rpc_batch: int = Field(default=200, ge=1, le=10_000)
    """addresses read in one batched JSON-RPC request"""
    rpc_in_flight: int = Field(default=2, ge=1, le=64)
    """batched JSON-RPC requests a poller has sent at once"""
    rpc_timeout: float = Field(default=10.0, gt=0)
    """seconds a JSON-RPC request may take"""
    pollers: bool = True
    """`0`: this replica links wallets but polls none"""

    @property
    def siwe_domain(self) -> str:
        return urlsplit(self.siwe_uri).netloc

    @field_validator("siwe_uri")
    @classmethod
    def _uri(cls, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"an http or https URL with a host, not {uri!r}")
        return uri

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, tokens: list[str]) -> list[ChecksumAddress]:
        if any(not Web3.is_address(token) for token in tokens):
            raise ValueError("every token is a 0x-prefixed 20-byte contract address")
        return [Web3.to_checksum_address(token) for token in tokens]
