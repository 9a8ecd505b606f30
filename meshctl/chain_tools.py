"""What `meshctl` does on a development chain, over its JSON-RPC (the embedded one or anvil):
deploy the dev token, fund an address, mine blocks. The chain's first account pays; both chains
unlock their funded accounts."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from eth_typing import ChecksumAddress
from web3 import Web3
from web3.types import Wei

DEV_TOKEN = json.loads((Path(__file__).parent / "contracts" / "DevToken.json").read_text())
DEV_TOKEN_SUPPLY = 10**9 * 10**18
TIMEOUT = 30.0


def connect(rpc_url: str) -> Web3:
    return Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": TIMEOUT}))


def _payer(chain: Web3) -> ChecksumAddress:
    return chain.eth.accounts[0]


def deploy_dev_token(rpc_url: str) -> ChecksumAddress:
    """Deploys DevToken (meshctl/contracts) with its whole supply on the first account."""
    chain = connect(rpc_url)
    contract = chain.eth.contract(abi=DEV_TOKEN["abi"], bytecode=DEV_TOKEN["bytecode"])
    sent = contract.constructor(DEV_TOKEN_SUPPLY).transact({"from": _payer(chain)})
    receipt = chain.eth.wait_for_transaction_receipt(sent, timeout=TIMEOUT)
    if receipt["status"] != 1 or receipt["contractAddress"] is None:
        raise RuntimeError("the dev token's deployment failed")
    return receipt["contractAddress"]


def fund(rpc_url: str, address: str, ether: Decimal) -> str:
    """Sends `ether` from the first account to `address`; answers the transaction hash."""
    chain = connect(rpc_url)
    sent = chain.eth.send_transaction(
        {"from": _payer(chain), "to": Web3.to_checksum_address(address), "value": Wei(int(ether * 10**18))}
    )
    chain.eth.wait_for_transaction_receipt(sent, timeout=TIMEOUT)
    return sent.to_0x_hex()


def send_tokens(rpc_url: str, token: str, address: str, amount: int) -> str:
    """Sends `amount` of `token`'s smallest unit from the first account to `address`."""
    chain = connect(rpc_url)
    contract = chain.eth.contract(address=Web3.to_checksum_address(token), abi=DEV_TOKEN["abi"])
    sent = contract.functions.transfer(Web3.to_checksum_address(address), amount).transact({"from": _payer(chain)})
    chain.eth.wait_for_transaction_receipt(sent, timeout=TIMEOUT)
    return sent.to_0x_hex()


def mine(rpc_url: str, blocks: int = 1) -> int:
    """Mines `blocks` empty blocks; answers the new head's number."""
    chain = connect(rpc_url)
    for _ in range(blocks):
        chain.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    return chain.eth.block_number
