"""The development chain behind `meshctl up`: eth-tester on py-evm, served over Ethereum JSON-RPC.

eth-tester is an in-process chain with funded, unlocked accounts and no server of its own, and
the JSON-RPC servers that once wrapped it (eth-testrpc) are gone; this module is that thin wrapper
(a missing feature, not a speed choice). It answers the methods chain_svc, the tests and
`meshctl chain` use, single or batched, in the wire format every node speaks (hex quantities,
camelCase keys); any other method is JSON-RPC's "method not found". Every transaction is mined at
once, as on anvil; `evm_mine` adds empty blocks.

`python -m meshctl.dev_chain --port N` serves one; `meshctl up` starts it like the SMTP sink
when `MESH_CHAIN_RPC_URL` is unset, and deploys the dev token (meshctl.chain_tools).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from typing import Any

import uvicorn
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_PARSE_ERROR = -32700
_INTERNAL_ERROR = -32603
_EXECUTION_ERROR = 3
_GAS_PRICE = 10**9


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _wire(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC's: quantities in hex, bytes in hex, camelCase keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, dict):
        return {_camel(key): _wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(item) for item in value]
    return value


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


_QUANTITY_FIELDS = {"gas", "gas_price", "value", "nonce", "max_fee_per_gas", "max_priority_fee_per_gas", "chain_id"}


def _transaction(wire: dict[str, Any]) -> dict[str, Any]:
    transaction = {}
    for key, value in wire.items():
        name = _snake(key)
        if name == "input":
            name = "data"
        transaction[name] = int(value, 16) if name in _QUANTITY_FIELDS and isinstance(value, str) else value
    return transaction


def _block(identifier: Any = "latest") -> int | str:
    if isinstance(identifier, str) and identifier.startswith("0x"):
        return int(identifier, 16)
    if identifier in ("latest", "earliest", "pending", "safe", "finalized"):
        return str(identifier)
    raise RpcError(_INVALID_PARAMS, f"not a block number or tag: {identifier!r}")


class DevChain:
    """One eth-tester chain and the JSON-RPC methods it answers."""

    def __init__(self) -> None:
        self.tester = EthereumTester(PyEVMBackend())
        self.chain_id: int = self.tester.backend.chain.chain_id
        tester = self.tester
        # eth-tester wants a sender that can pay for a call's gas, which callers may leave out.
        caller = tester.get_accounts()[0]

        def _call(wire: dict[str, Any]) -> dict[str, Any]:
            return {"from": caller, **_transaction(wire)}

        self._methods: dict[str, Callable[..., Any]] = {
            "web3_clientVersion": lambda: "invitemesh-dev-chain/eth-tester",
            "net_version": lambda: str(self.chain_id),
            "eth_chainId": lambda: self.chain_id,
            "eth_blockNumber": lambda: tester.get_block_by_number("latest")["number"],
            "eth_accounts": tester.get_accounts,
            "eth_gasPrice": lambda: _GAS_PRICE,
            "eth_maxPriorityFeePerGas": lambda: _GAS_PRICE,
            "eth_getBalance": lambda address, block="latest": tester.get_balance(address, _block(block)),
            "eth_getTransactionCount": lambda address, block="latest": tester.get_nonce(address, _block(block)),
            "eth_getCode": lambda address, block="latest": tester.get_code(address, _block(block)),
            "eth_call": lambda call, block="latest": tester.call(_call(call), _block(block)),
            "eth_estimateGas": lambda call, block="latest": tester.estimate_gas(_call(call), _block(block)),
            "eth_sendTransaction": lambda sent: tester.send_transaction(_transaction(sent)),
            "eth_sendRawTransaction": tester.send_raw_transaction,
            "eth_getTransactionReceipt": tester.get_transaction_receipt,
            "eth_getTransactionByHash": tester.get_transaction_by_hash,
            "eth_getBlockByNumber": lambda block, full=False: tester.get_block_by_number(_block(block), full),
            "eth_getBlockByHash": lambda block_hash, full=False: tester.get_block_by_hash(block_hash, full),
            "evm_mine": lambda blocks=1: tester.mine_blocks(int(blocks, 16) if isinstance(blocks, str) else blocks),
        }

    def answer(self, request: Any) -> dict[str, Any]:
        """The response to one JSON-RPC request object."""
        ident = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise RpcError(-32600, "not a JSON-RPC request")
            method = self._methods.get(request["method"])
            if method is None:
                raise RpcError(_METHOD_NOT_FOUND, f"the method {request['method']} does not exist/is not available")
            params = request.get("params") or []
            try:
                result = method(*params)
            except (TypeError, ValueError, ValidationError) as error:
                raise RpcError(_INVALID_PARAMS, str(error)) from error
            except TransactionFailed as error:
                raise RpcError(_EXECUTION_ERROR, f"execution reverted: {error}") from error
            except Exception as error:  # what py-evm refuses has no one type; the client is told
                raise RpcError(_INTERNAL_ERROR, f"{type(error).__name__}: {error}") from error
        except RpcError as error:
            return {"jsonrpc": "2.0", "id": ident, "error": {"code": error.code, "message": str(error)}}
        return {"jsonrpc": "2.0", "id": ident, "result": _wire(result)}


def app(chain: DevChain) -> Starlette:
    async def rpc(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": _PARSE_ERROR, "message": "parse error"}}
            )
        if isinstance(body, list):
            return JSONResponse([chain.answer(each) for each in body])
        return JSONResponse(chain.answer(body))

    return Starlette(routes=[Route("/", rpc, methods=["POST"])])


def main() -> None:
    parser = argparse.ArgumentParser(description="eth-tester served over JSON-RPC")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    arguments = parser.parse_args()
    uvicorn.run(app(DevChain()), host=arguments.host, port=arguments.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
