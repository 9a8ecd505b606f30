"""invite_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import grpc
from invitemesh.invite.v1 import invite_service_pb2_grpc

from mesh.server import ServiceRuntime


class InviteService(invite_service_pb2_grpc.InviteServiceServicer):
    """Methods land here as they are built; the others answer UNIMPLEMENTED (hence the
    `abstract` ignore below, which mypy flags as unused once every method exists)."""


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(InviteService(), server)  # type: ignore[abstract]
