"""Keeps every linked wallet's snapshot fresh: each replica polls the wallets of the shards it
holds (mesh.leases) every `MESH_CHAIN_POLL_INTERVAL` seconds.

A round reads the head, goes `MESH_CHAIN_CONFIRMATIONS` blocks back, and reads every due
wallet's balance, transaction count and token balances at that one block, in JSON-RPC batches. A
shard taken over from another replica is polled at once. A round that fails (node down, slow,
breaker open) leaves its shards due, to be tried again after a backoff that doubles up to
`_BACKOFF_CAP` (with jitter), or until the breaker lets a trial through; nothing is lost, since a
wallet keeps its last snapshot until a round succeeds, and nothing is doubled, since a stale
holder's writes are fenced off (chain_svc.store).
`mesh_chain_snapshots` and `mesh_chain_poll_rounds_failed` count both outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import socket
import time
import uuid

import structlog
from eth_typing import ChecksumAddress, HexAddress, HexStr
from prometheus_client import Counter

from chain_svc.rpc import ChainReader
from chain_svc.settings import ChainSettings
from chain_svc.store import Polled, Snapshot, WalletStore
from mesh.breakers import BreakerOpen
from mesh.leases import Held, ShardLeases
from mesh.metrics import Metrics

log = structlog.get_logger("chain_svc.polling")
_BACKOFF_CAP = 300.0


class Poller:
    """A mesh.jobs Worker: polls while the service runs, gives its shards back when it stops."""

    def __init__(
        self,
        store: WalletStore,
        reader: ChainReader,
        leases: ShardLeases,
        own: ChainSettings,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._reader = reader
        self._leases = leases
        self._tokens = own.tokens
        self._confirmations = own.confirmations
        self._interval = own.poll_interval
        self._held: dict[int, int] = {}
        """shard → the fence it is held under"""
        self._due: dict[int, float] = {}
        """shard → when (monotonic) it is next polled"""
        self._renewed_at = float("-inf")
        self._failures = 0
        self._woken = asyncio.Event()
        self._stopping = asyncio.Event()
        self._polled = Counter(
            "mesh_chain_snapshots", "Wallet snapshots this replica wrote.", registry=metrics.registry
        )
        self._failed_rounds = Counter(
            "mesh_chain_poll_rounds_failed", "Polling rounds that failed, to be tried again.", registry=metrics.registry
        )

    async def run(self) -> None:
        renewing = asyncio.create_task(self._keep_leases())
        try:
            await self._poll_while_running()
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(Exception):
                await self._leases.release()

    async def stop(self) -> None:
        self._stopping.set()
        self._woken.set()

    async def _keep_leases(self) -> None:
        while not self._stopping.is_set():
            try:
                held = await self._leases.renew()
                self._renewed_at = time.monotonic()
                self._take(held)
            except Exception as error:  # Redis unreachable: keep what is held only while its lease lasts
                log.warning("shard leases not renewed", error=type(error).__name__)
                if time.monotonic() - self._renewed_at > self._leases.ttl:
                    self._take([])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._leases.ttl / 3)

    def _take(self, held: list[Held]) -> None:
        now = time.monotonic()
        fresh = {each.shard: each.fence for each in held}
        for shard in set(self._held) - set(fresh):
            self._due.pop(shard, None)
        for shard, fence in fresh.items():
            if self._held.get(shard) != fence:
                self._due[shard] = now  # taken over (or taken again): poll it at once
                self._woken.set()
        self._held = fresh

    async def _poll_while_running(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            due = [shard for shard, at in self._due.items() if at <= now]
            if due:
                await self._round(due)
                continue
            wait = min(self._due.values(), default=now + self._interval) - now
            self._woken.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), max(wait, 0.0))

    async def _round(self, shards: list[int]) -> None:
        started = time.monotonic()
        try:
            written = await self._poll(shards)
        except Exception as error:  # the node (or the database) failed this round; it is tried again
            self._failures += 1
            self._failed_rounds.inc()
            delay = self._backoff(error)
            log.warning("poll round failed", shards=len(shards), retry_in=round(delay, 1), error=type(error).__name__)
            for shard in shards:
                if shard in self._due:
                    self._due[shard] = time.monotonic() + delay
            return
        self._failures = 0
        self._polled.inc(written)
        for shard in shards:
            if shard in self._due:
                self._due[shard] = started + self._interval

    def _backoff(self, error: Exception) -> float:
        if isinstance(error, BreakerOpen):
            return max(self._reader.breaker.seconds_until_trial(), self._interval)
        ceiling = min(_BACKOFF_CAP, self._interval * 2 ** min(self._failures - 1, 16))
        return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret

    async def _poll(self, shards: list[int]) -> int:
        wallets = await self._store.in_shards(shards)
        if not wallets:
            return 0
        head = await self._reader.head()
        block = max(head - self._confirmations, 0)
        block_hash = await self._reader.block_hash(block)
        size = self._reader.batch
        # Each batch is written as soon as it is read, while the next ones are read.
        written = await asyncio.gather(
            *(self._poll_batch(wallets[i : i + size], block, block_hash) for i in range(0, len(wallets), size))
        )
        return sum(written)

    async def _poll_batch(self, wallets: list[tuple[uuid.UUID, str, int]], block: int, block_hash: str) -> int:
        read_time = datetime.datetime.now(datetime.UTC)
        # Stored checksummed (chain_svc.domain.checksummed): no keccak per address and round.
        accounts = await self._reader.accounts(
            [ChecksumAddress(HexAddress(HexStr(address))) for _, address, _ in wallets], block, self._tokens
        )
        fences = self._held  # read after the reads: a shard lost meanwhile is not written
        polled = [
            Polled(
                user_id=user_id,
                address=address,
                fence=fences[shard],
                snapshot=Snapshot(
                    block_number=block,
                    block_hash=block_hash,
                    balance_wei=account.balance_wei,
                    nonce=account.nonce,
                    token_balances=account.token_balances,
                    read_time=read_time,
                ),
            )
            for (user_id, address, shard), account in zip(wallets, accounts, strict=True)
            if shard in fences
        ]
        return await self._store.keep(polled, self._leases.holder)


def replica_name() -> str:
    """Names this poller in leases and snapshots: unique per process, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
