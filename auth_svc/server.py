"""auth_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import grpc
from invitemesh.auth.v1 import auth_service_pb2_grpc

from mesh.server import ServiceRuntime


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    """Methods land here as they are built; the others answer UNIMPLEMENTED (hence the
    `abstract` ignore below, which mypy flags as unused once every method exists)."""


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthService(), server)  # type: ignore[abstract]
