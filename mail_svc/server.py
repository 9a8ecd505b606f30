"""mail_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import grpc
from invitemesh.mail.v1 import mail_service_pb2_grpc

from mesh.server import ServiceRuntime


class MailService(mail_service_pb2_grpc.MailServiceServicer):
    """Methods land here as they are built; the others answer UNIMPLEMENTED (hence the
    `abstract` ignore below, which mypy flags as unused once every method exists)."""


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    mail_service_pb2_grpc.add_MailServiceServicer_to_server(MailService(), server)  # type: ignore[abstract]
