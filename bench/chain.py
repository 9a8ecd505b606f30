"""Wallets polled per second by one chain_svc, against the node's raw batched JSON-RPC ceiling.

In one run, against one node (the development chain `meshctl up` runs, in a process of its own,
or the node `MESH_CHAIN_RPC_URL` names, such as anvil) with the dev token deployed:

- the ceiling: this process posts JSON-RPC batches by hand (aiohttp, nothing else), `--in-flight`
  of them under way at once as a poller has, each asking for `--batch` addresses' balance,
  transaction count and token balance at one block; addresses read per second;
- chain_svc: `--wallets` wallets linked (written straight into its table), then one
  `python -m chain_svc` polling with no pause between rounds; addresses polled per second (from
  the snapshots it wrote, `poll_count`) and the time of each full round (every wallet once).

The ratio is chain_svc's rate over the ceiling's, both medians of `--rounds`.

    .venv/bin/python -m bench.chain [--wallets 10000] [--rounds 3] [--batch 200]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import asyncpg
import uvloop
from eth_account import Account

from bench.harness import backends, listed, median, running_services
from chain_svc.domain import shard_of
from mesh.settings import Settings
from meshctl.chain_tools import deploy_dev_token
from meshctl.embedded import EmbeddedChain, free_port

_BALANCE_OF = "0x70a08231" + "0" * 24
BENCH_CHAIN_ID = 7_770_001
"""Marks the wallets this benchmark links (a database given by MESH_DATABASE_URL may hold others,
which chain_svc polls too and which are left alone)."""


@contextmanager
def node() -> Iterator[str]:
    """The node's JSON-RPC URL: `MESH_CHAIN_RPC_URL`, or a development chain started here."""
    if url := os.environ.get("MESH_CHAIN_RPC_URL"):
        yield url
        return
    chain = EmbeddedChain(free_port())
    chain.start()
    try:
        yield chain.url
    finally:
        chain.stop()


def _batch(addresses: list[str], block: str, token: str) -> list[dict[str, object]]:
    asked: list[dict[str, object]] = []
    for address in addresses:
        asked.append({"method": "eth_getBalance", "params": [address, block]})
        asked.append({"method": "eth_getTransactionCount", "params": [address, block]})
        asked.append({"method": "eth_call", "params": [{"to": token, "data": _BALANCE_OF + address[2:]}, block]})
    return [{"jsonrpc": "2.0", "id": n, **request} for n, request in enumerate(asked)]


async def ceiling(url: str, addresses: list[str], token: str, batch: int, in_flight: int) -> float:
    """Addresses read per second by hand-made batches, `in_flight` of them under way at once."""
    async with aiohttp.ClientSession() as session:
        async with session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}) as answer:
            block = (await answer.json())["result"]
        sending = asyncio.Semaphore(in_flight)

        async def read(part: list[str]) -> None:
            async with sending, session.post(url, json=_batch(part, block, token)) as answer:
                read = await answer.json()
                assert all("result" in each for each in read), read[:2]

        started = time.perf_counter()
        await asyncio.gather(*(read(addresses[i : i + batch]) for i in range(0, len(addresses), batch)))
        return len(addresses) / (time.perf_counter() - started)


async def link_wallets(database_url: str, addresses: list[str]) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute("DELETE FROM chain.wallets WHERE chain_id = $1", BENCH_CHAIN_ID)
        users = [uuid.uuid4() for _ in addresses]
        await connection.copy_records_to_table(
            "wallets",
            schema_name="chain",
            columns=["user_id", "address", "chain_id", "shard"],
            records=[
                (user, address, BENCH_CHAIN_ID, shard_of(user)) for user, address in zip(users, addresses, strict=True)
            ],
        )
    finally:
        await connection.close()


async def rounds_of_chain_svc(
    settings: Settings, url: str, token: str, wallets: int, rounds: int, batch: int, in_flight: int
) -> list[float]:
    """Seconds of each full round of one chain_svc polling without pause."""
    variables = {
        "MESH_CHAIN_RPC_URL": url,
        "MESH_CHAIN_TOKENS": json.dumps([token]),
        "MESH_CHAIN_CONFIRMATIONS": "0",
        "MESH_CHAIN_POLL_INTERVAL": "0.001",
        "MESH_CHAIN_LEASE_TTL": "5",
        "MESH_CHAIN_RPC_BATCH": str(batch),
        "MESH_CHAIN_RPC_IN_FLIGHT": str(in_flight),
        "MESH_LOG_LEVEL": "WARNING",
    }
    assert settings.database_url is not None
    connection = await asyncpg.connect(settings.database_url)
    try:
        async with running_services(settings, ["chain_svc"], variables):
            # The first round warms up (connections, caches) and is not counted.
            ended = [await _round_done(connection, 1)]
            for n in range(rounds):
                ended.append(await _round_done(connection, n + 2))
    finally:
        await connection.close()
    assert wallets == await _count(settings.database_url)
    return [later - earlier for earlier, later in itertools.pairwise(ended)]


async def _round_done(connection: asyncpg.Connection, polls: int) -> float:
    """When every wallet has been polled `polls` times."""
    least = "SELECT min(poll_count) FROM chain.wallets WHERE chain_id = $1"
    while await connection.fetchval(least, BENCH_CHAIN_ID) < polls:  # noqa: ASYNC110 - a database to watch
        await asyncio.sleep(0.05)
    return time.perf_counter()


async def _count(database_url: str) -> int:
    connection = await asyncpg.connect(database_url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM chain.wallets WHERE chain_id = $1", BENCH_CHAIN_ID))
    finally:
        await connection.close()


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    with node() as url:
        token = await asyncio.to_thread(deploy_dev_token, url)
        addresses = [Account.create().address for _ in range(args.wallets)]
        assert settings.database_url is not None
        await link_wallets(settings.database_url, addresses)
        ceilings = [await ceiling(url, addresses, token, args.batch, args.in_flight) for _ in range(args.rounds)]
        seconds = await rounds_of_chain_svc(settings, url, token, args.wallets, args.rounds, args.batch, args.in_flight)
    rates = [args.wallets / each for each in seconds]
    print(f"node: {url}, {args.wallets} wallets, batches of {args.batch}, {args.in_flight} in flight, 1 token")
    print(f"raw batched JSON-RPC (ceiling): addresses/s {listed(ceilings)}, median {median(ceilings):.0f}")
    print(f"chain_svc, 1 replica:           addresses/s {listed(rates)}, median {median(rates):.0f}")
    print(f"full round of {args.wallets} wallets: seconds {listed(seconds, 2)}, median {median(seconds):.2f}")
    print(f"ratio chain_svc/ceiling: {median(rates) / median(ceilings):.2f} (target >= 0.70)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wallets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=2, help="batches under way at once, for both")
    args = parser.parse_args()
    with backends() as settings:
        uvloop.run(measure(args, settings))


if __name__ == "__main__":
    main()
