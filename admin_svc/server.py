"""admin_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import grpc
from invitemesh.admin.v1 import admin_service_pb2_grpc

from mesh.server import ServiceRuntime


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    """Methods land here as they are built; the others answer UNIMPLEMENTED (hence the
    `abstract` ignore below, which mypy flags as unused once every method exists)."""


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminService(), server)  # type: ignore[abstract]
