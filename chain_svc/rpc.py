"""What chain_svc asks an Ethereum node over JSON-RPC: the chain id, the head and a block's hash
through web3's AsyncWeb3, and for many addresses at one block their balance, transaction count
and ERC-20 balances, in batches of `MESH_CHAIN_RPC_BATCH` addresses posted here as JSON-RPC
batches and decoded here (three hex quantities).

The batches are this module's own, not web3's, because bench/chain.py said so: against anvil,
whose batched reads reach some 30 000 addresses a second, web3's `batch_requests()` held one
chain_svc to 860 (its request and result formatters cost about 0.4 ms a request), and its
provider's `make_batch_request` to 9 000, 40 % of the time going to encoding each request
alone. Up to `MESH_CHAIN_RPC_IN_FLIGHT` batches are under way at once: the node reads one while
this process decodes the last (one at a time left each side idle half the time: 0.62 of the
development chain's ceiling, against 0.94 with two).

Every request passes one circuit breaker (`chain_rpc`): a node that is down or keeps timing out
is left alone for a while instead of being hammered by every poll, and `meshctl status` shows the
breaker's state.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
from eth_typing import BlockNumber, ChecksumAddress
from hexbytes import HexBytes
from prometheus_client import Gauge
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception, Web3RPCError
from web3.providers.rpc import AsyncHTTPProvider

from mesh.breakers import AsyncBreaker

T = TypeVar("T")
_BALANCE_OF = "0x70a08231" + "0" * 24  # balanceOf(address), then the address in its 32-byte word
_BREAKER_FAILURES = 5
_BREAKER_RESET = 15.0
_JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Account:
    balance_wei: int
    nonce: int
    token_balances: dict[str, int]


def _counts(error: BaseException) -> bool:
    """Failures of the node itself (unreachable, slow, answering errors), not of our request."""
    return isinstance(error, OSError | TimeoutError | Web3Exception | aiohttp.ClientError)


class ChainReader:
    def __init__(self, rpc_url: str, timeout: float, batch: int, in_flight: int, states: Gauge | None = None) -> None:
        self._provider = AsyncHTTPProvider(
            rpc_url,
            request_kwargs={"timeout": timeout},
            # Retries are the poller's (with backoff), not web3's own.
            exception_retry_configuration=None,
        )
        self._web3 = AsyncWeb3(self._provider)
        self._url = rpc_url
        self._session: aiohttp.ClientSession | None = None
        """For the batched reads (the module's docstring says why not web3's)."""
        self._timeout = timeout
        self.batch = batch
        """Addresses a caller asks `accounts` about at once."""
        self._in_flight = asyncio.Semaphore(in_flight)
        self._chain_id: int | None = None
        self.breaker = AsyncBreaker("chain_rpc", _BREAKER_FAILURES, _BREAKER_RESET, _counts, states)

    async def _ask(self, request: Callable[[], Awaitable[T]]) -> T:
        async with self.breaker.guard():
            return await asyncio.wait_for(request(), self._timeout)

    async def chain_id(self) -> int:
        if self._chain_id is None:
            self._chain_id = await self._ask(lambda: self._web3.eth.chain_id)
        return self._chain_id

    async def head(self) -> int:
        return int(await self._ask(lambda: self._web3.eth.block_number))

    async def block_hash(self, number: int) -> str:
        block = await self._ask(lambda: self._web3.eth.get_block(BlockNumber(number)))
        return HexBytes(block["hash"]).to_0x_hex()

    async def accounts(
        self, addresses: Sequence[ChecksumAddress], block: int, tokens: Sequence[ChecksumAddress]
    ) -> list[Account]:
        """Each address's account at `block`, in order: one batch, sent once fewer than
        `in_flight` others are under way."""
        async with self._in_flight:
            return await self._ask(functools.partial(self._batch_of, addresses, block, tokens))

    async def _batch_of(
        self, addresses: Sequence[ChecksumAddress], block: int, tokens: Sequence[ChecksumAddress]
    ) -> list[Account]:
        at = hex(block)
        asked: list[dict[str, Any]] = []
        for address in addresses:
            asked.append({"method": "eth_getBalance", "params": [address, at]})
            asked.append({"method": "eth_getTransactionCount", "params": [address, at]})
            for token in tokens:
                asked.append({"method": "eth_call", "params": [{"to": token, "data": _balance_of(address)}, at]})
        body = json.dumps([{"jsonrpc": "2.0", "id": n, **request} for n, request in enumerate(asked)])
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        async with self._session.post(self._url, data=body, headers=_JSON) as answer:
            answer.raise_for_status()
            answers = await answer.json(content_type=None)
        if not isinstance(answers, list) or len(answers) != len(asked):
            raise Web3RPCError(f"the node answered a batch of {len(asked)} with {str(answers)[:200]}")
        values = [_result(each) for each in sorted(answers, key=lambda each: int(each.get("id", -1)))]
        per_address = 2 + len(tokens)
        return [
            Account(
                balance_wei=int(values[i], 16),
                nonce=int(values[i + 1], 16),
                token_balances={token: int(values[i + 2 + j], 16) for j, token in enumerate(tokens)},
            )
            for i in range(0, len(values), per_address)
        ]

    async def close(self) -> None:
        await self._provider.disconnect()
        if self._session is not None:
            await self._session.close()


def _balance_of(address: str) -> str:
    return _BALANCE_OF + address.removeprefix("0x")


def _result(answer: Any) -> str:
    if "error" in answer or not isinstance(answer.get("result"), str):
        raise Web3RPCError(f"the node refused a read: {str(answer.get('error'))[:200]}")
    return str(answer["result"]) if answer["result"] != "0x" else "0x0"
