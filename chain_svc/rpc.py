"""What chain_svc asks an Ethereum node, over JSON-RPC with web3's AsyncWeb3: the chain id, the
head, a block's hash, and for many addresses at one block their balance, transaction count and
ERC-20 balances.

The reads of many addresses go in batches of `MESH_CHAIN_RPC_BATCH` addresses through the
provider's `make_batch_request`, decoded here (three hex quantities), not through web3's
`batch_requests()`: its request and result formatters cost about 0.4 ms a request, which held one
chain_svc to 860 addresses a second against anvil's ceiling of 30 000 (bench/chain.py), where the
provider's batch alone reached 16 000. Up to `MESH_CHAIN_RPC_IN_FLIGHT` batches are sent at once:
the node reads one while this process decodes the last, where one at a time left each side idle
half the time (0.62 of the development chain's ceiling, against 0.94 with two).

Every request passes one circuit breaker (`chain_rpc`): a node that is down or keeps timing out
is left alone for a while instead of being hammered by every poll, and `meshctl status` shows the
breaker's state.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from eth_typing import BlockNumber, ChecksumAddress
from hexbytes import HexBytes
from prometheus_client import Gauge
from web3 import AsyncWeb3
from web3.exceptions import Web3Exception, Web3RPCError
from web3.providers.rpc import AsyncHTTPProvider
from web3.types import RPCEndpoint

from mesh.breakers import AsyncBreaker

T = TypeVar("T")
_BALANCE_OF = bytes.fromhex("70a08231")  # balanceOf(address)
_BREAKER_FAILURES = 5
_BREAKER_RESET = 15.0


@dataclass(frozen=True)
class Account:
    balance_wei: int
    nonce: int
    token_balances: dict[str, int]


def _counts(error: BaseException) -> bool:
    """Failures of the node itself (unreachable, slow, answering errors), not of our request."""
    return isinstance(error, OSError | TimeoutError | Web3Exception | ConnectionError) or type(
        error
    ).__module__.startswith("aiohttp")


class ChainReader:
    def __init__(self, rpc_url: str, timeout: float, batch: int, in_flight: int, states: Gauge | None = None) -> None:
        self._provider = AsyncHTTPProvider(
            rpc_url,
            request_kwargs={"timeout": timeout},
            # Retries are the poller's (with backoff), not web3's own.
            exception_retry_configuration=None,
        )
        self._web3 = AsyncWeb3(self._provider)
        self._timeout = timeout
        self._batch = batch
        self._in_flight = in_flight
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
        """Each address's account at `block`, in order."""
        in_flight = asyncio.Semaphore(self._in_flight)

        async def batch(part: Sequence[ChecksumAddress]) -> list[Account]:
            async with in_flight:
                return await self._ask(functools.partial(self._batch_of, part, block, tokens))

        parts = [addresses[start : start + self._batch] for start in range(0, len(addresses), self._batch)]
        return [account for read in await asyncio.gather(*(batch(part) for part in parts)) for account in read]

    async def _batch_of(
        self, addresses: Sequence[ChecksumAddress], block: int, tokens: Sequence[ChecksumAddress]
    ) -> list[Account]:
        at = hex(block)
        asked: list[tuple[RPCEndpoint, Any]] = []
        for address in addresses:
            asked.append((RPCEndpoint("eth_getBalance"), [address, at]))
            asked.append((RPCEndpoint("eth_getTransactionCount"), [address, at]))
            for token in tokens:
                asked.append((RPCEndpoint("eth_call"), [{"to": token, "data": _balance_of(address)}, at]))
        answers = await self._provider.make_batch_request(asked)
        if not isinstance(answers, list) or len(answers) != len(asked):
            raise Web3RPCError(f"the node answered a batch of {len(asked)} with {str(answers)[:200]}")
        values = [_result(answer) for answer in answers]  # in the order asked: the provider sorts by id
        per_address = 2 + len(tokens)
        return [
            Account(
                balance_wei=int(values[i], 16),
                nonce=int(values[i + 1], 16),
                token_balances={token: int(values[i + 2 + j] or "0x0", 16) for j, token in enumerate(tokens)},
            )
            for i in range(0, len(values), per_address)
        ]

    async def close(self) -> None:
        await self._provider.disconnect()


def _balance_of(address: str) -> str:
    return "0x" + _BALANCE_OF.hex() + "0" * 24 + address.removeprefix("0x")


def _result(answer: Any) -> str:
    if "error" in answer or not isinstance(answer.get("result"), str):
        raise Web3RPCError(f"the node refused a read: {str(answer.get('error'))[:200]}")
    return str(answer["result"]) if answer["result"] != "0x" else "0x0"
