"""The generated contracts, loaded once so their descriptors are in the default pool."""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from invitemesh.admin.v1 import admin_service_pb2
from invitemesh.auth.v1 import auth_service_pb2
from invitemesh.chain.v1 import chain_service_pb2
from invitemesh.invite.v1 import invite_service_pb2
from invitemesh.mail.v1 import mail_service_pb2
from invitemesh.ratelimit.v1 import ratelimit_service_pb2

_MODULES = (
    auth_service_pb2,
    invite_service_pb2,
    mail_service_pb2,
    admin_service_pb2,
    chain_service_pb2,
    ratelimit_service_pb2,
)

SERVICE_DESCRIPTORS: tuple[ServiceDescriptor, ...] = tuple(
    service for module in _MODULES for service in module.DESCRIPTOR.services_by_name.values()
)


def method_descriptor(full_method: str) -> MethodDescriptor | None:
    """The descriptor of a gRPC path such as `/invitemesh.auth.v1.AuthService/Register`."""
    service_name, _, method_name = full_method.lstrip("/").partition("/")
    try:
        service = descriptor_pool.Default().FindServiceByName(service_name)
    except KeyError:
        return None
    return service.methods_by_name.get(method_name)


def full_method_name(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def idempotent(method: MethodDescriptor) -> bool:
    """Whether a call of `method` may be sent again: its contract says it changes nothing
    (`NO_SIDE_EFFECTS`) or answers a repeated `request_id` once (`IDEMPOTENT`)."""
    return method.GetOptions().idempotency_level != descriptor_pb2.MethodOptions.IDEMPOTENCY_UNKNOWN
