"""chain_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from invitemesh.chain.v1 import chain_service_pb2 as pb
from invitemesh.chain.v1 import chain_service_pb2_grpc

from chain_svc import domain
from chain_svc.challenges import Challenges
from chain_svc.linking import Linking
from chain_svc.polling import Poller, replica_name
from chain_svc.rpc import ChainReader
from chain_svc.settings import ChainSettings
from chain_svc.store import Wallet, WalletStore
from mesh.access import current_principal
from mesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from mesh.leases import ShardLeases
from mesh.limits import FixedWindowLimit
from mesh.server import ServiceRuntime
from mesh.timestamps import optional_timestamp

MAX_MESSAGE = 2048
MAX_SIGNATURE = 200
_REFUSAL_KINDS: dict[str, type[MeshError]] = {
    domain.NOT_FOUND: NotFound,
    domain.ADDRESS_TAKEN: AlreadyExists,
    domain.SIGNATURE_INVALID: PermissionDenied,
    domain.DOMAIN_MISMATCH: PermissionDenied,
    domain.URI_MISMATCH: PermissionDenied,
    domain.CHAIN_MISMATCH: PermissionDenied,
    domain.CHAIN_UNAVAILABLE: Unavailable,
}
_FIELDS = {domain.ADDRESS_INVALID: "address", domain.MESSAGE_INVALID: "message"}


class ChainService(chain_service_pb2_grpc.ChainServiceServicer):
    def __init__(self, linking: Linking, store: WalletStore) -> None:
        self._linking = linking
        self._store = store

    async def CreateWalletChallenge(
        self, request: pb.CreateWalletChallengeRequest, context: Any
    ) -> pb.CreateWalletChallengeResponse:
        with _refusals():
            message, expiry = await self._linking.challenge(_me(), request.address)
        return pb.CreateWalletChallengeResponse(message=message, expire_time=optional_timestamp(expiry))

    async def LinkWallet(self, request: pb.LinkWalletRequest, context: Any) -> pb.LinkWalletResponse:
        violations = []
        if not 0 < len(request.message) <= MAX_MESSAGE:
            violations.append(FieldViolation("message", f"the signed message, 1 to {MAX_MESSAGE} characters"))
        if not 0 < len(request.signature) <= MAX_SIGNATURE:
            violations.append(FieldViolation("signature", "the signature, 0x-prefixed hex"))
        if violations:
            raise InvalidArgument(violations)
        with _refusals():
            wallet = await self._linking.link(_me(), request.message, request.signature)
        return pb.LinkWalletResponse(wallet=wallet_message(wallet))

    async def GetMyWallet(self, request: pb.GetMyWalletRequest, context: Any) -> pb.GetMyWalletResponse:
        with _refusals():
            return pb.GetMyWalletResponse(wallet=wallet_message(await self._store.wallet_of(_me())))

    async def UnlinkWallet(self, request: pb.UnlinkWalletRequest, context: Any) -> pb.UnlinkWalletResponse:
        with _refusals():
            await self._store.unlink(_me())
        return pb.UnlinkWalletResponse()

    async def GetWallet(self, request: pb.GetWalletRequest, context: Any) -> pb.GetWalletResponse:
        try:
            user_id = uuid.UUID(request.user_id)
        except ValueError:
            raise InvalidArgument([FieldViolation("user_id", "a user id (UUID)")]) from None
        with _refusals():
            return pb.GetWalletResponse(wallet=wallet_message(await self._store.wallet_of(user_id)))


def wallet_message(wallet: Wallet) -> pb.Wallet:
    shown = pb.Wallet(
        user_id=str(wallet.user_id),
        address=wallet.address,
        chain_id=wallet.chain_id,
        link_time=optional_timestamp(wallet.link_time),
    )
    if (snapshot := wallet.snapshot) is not None:
        shown.latest_snapshot.CopyFrom(
            pb.WalletSnapshot(
                block_number=snapshot.block_number,
                block_hash=snapshot.block_hash,
                balance_wei=str(snapshot.balance_wei),
                nonce=snapshot.nonce,
                token_balances=[
                    pb.TokenBalance(contract_address=token, balance=str(balance))
                    for token, balance in sorted(snapshot.token_balances.items())
                ],
                read_time=optional_timestamp(snapshot.read_time),
            )
        )
    return shown


def _me() -> uuid.UUID:
    return uuid.UUID(current_principal.get().id)


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turns a domain Refusal into the gRPC status its reason calls for."""
    try:
        yield
    except domain.Refusal as refusal:
        if field := _FIELDS.get(refusal.reason):
            raise InvalidArgument([FieldViolation(field, str(refusal))], reason=refusal.reason) from None
        raise _REFUSAL_KINDS.get(refusal.reason, FailedPrecondition)(refusal.reason, str(refusal)) from None


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: ChainSettings | None = None) -> None:
    own = own or ChainSettings()
    store = WalletStore(runtime.engine, runtime.driver)
    if not runtime.settings.chain_rpc_url:
        raise RuntimeError("MESH_CHAIN_RPC_URL is not set")
    reader = ChainReader(
        runtime.settings.chain_rpc_url, own.rpc_timeout, own.rpc_batch, own.rpc_in_flight, runtime.metrics.breaker_state
    )
    runtime.watched["chain_rpc"] = reader.head
    runtime.closing.append(reader.close)
    challenges = Challenges(runtime.redis, runtime.keys, own.challenge_ttl)
    budget = FixedWindowLimit(runtime.counters, runtime.keys, "challenges", own.challenges_per_hour, 3600)
    if own.pollers:
        leases = ShardLeases(runtime.redis, runtime.keys, "poll", domain.SHARDS, own.lease_ttl, replica_name())
        runtime.workers.append(Poller(store, reader, leases, own, runtime.metrics))
    chain_service_pb2_grpc.add_ChainServiceServicer_to_server(
        ChainService(Linking(store, challenges, reader, own, budget), store), server
    )
