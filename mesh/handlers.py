"""Types and one helper shared by the server interceptors, which all wrap unary handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from typing import TypeAlias

    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Behavior: TypeAlias = Callable[[Any, Context], Awaitable[Any]]
    Continuation: TypeAlias = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


def with_behavior(
    handler: Handler, behavior: Behavior, request_deserializer: Callable[[bytes], Any] | None = None
) -> Handler:
    """The same unary method with another behavior (and optionally another deserializer)."""
    return grpc.unary_unary_rpc_method_handler(
        behavior,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
