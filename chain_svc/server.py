"""chain_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import grpc
from invitemesh.chain.v1 import chain_service_pb2_grpc

from mesh.server import ServiceRuntime


class ChainService(chain_service_pb2_grpc.ChainServiceServicer):
    """Methods land here as they are built; the others answer UNIMPLEMENTED (hence the
    `abstract` ignore below, which mypy flags as unused once every method exists)."""


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    chain_service_pb2_grpc.add_ChainServiceServicer_to_server(ChainService(), server)  # type: ignore[abstract]
