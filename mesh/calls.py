"""What happens around every served call: a request id (and, unless OpenTelemetry does it, the
trace) in the log context, who the client is (mesh.clients), domain errors turned into
`google.rpc.Status`, and the RPC metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from grpc_status import rpc_status

from mesh.clients import EdgeRecognition, current_client
from mesh.errors import Internal, MeshError, Unimplemented
from mesh.handlers import with_behavior
from mesh.metrics import Metrics
from mesh.telemetry import continued_trace

if TYPE_CHECKING:
    from mesh.handlers import Behavior, Context, Continuation, Handler

log = structlog.get_logger("mesh.calls")
REQUEST_ID_HEADER = "x-request-id"


class CallInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    def __init__(self, metrics: Metrics, edge: EdgeRecognition, continues_traces: bool = False) -> None:
        """`continues_traces`: put the caller's trace in the call context here (mesh.telemetry),
        where no OpenTelemetry interceptor does."""
        self._metrics = metrics
        self._edge = edge
        self._continues_traces = continues_traces

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behavior: Behavior = handler.unary_unary  # type: ignore[assignment]

        async def observed(request: Any, context: Context) -> Any:
            request_id = _request_id(context)
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            reason: str | None = None
            traced = continued_trace(context.invocation_metadata()) if self._continues_traces else nullcontext()
            client = current_client.set(self._edge.client_of(context))
            with traced, structlog.contextvars.bound_contextvars(request_id=request_id, method=method):
                try:
                    return await behavior(request, context)
                except MeshError as error:
                    code, reason = error.code, error.reason
                    await _abort(context, error)
                except NotImplementedError:
                    code, reason = grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_IMPLEMENTED"
                    await _abort(context, Unimplemented(reason, f"{method} is not implemented yet"))
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except asyncio.CancelledError:
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception:
                    code, reason = grpc.StatusCode.INTERNAL, "INTERNAL"
                    log.exception("rpc failed")
                    await _abort(context, Internal(reason, "internal error"))
                finally:
                    current_client.reset(client)
                    elapsed = time.perf_counter() - started
                    self._metrics.rpcs.labels(method, code.name).inc()
                    self._metrics.rpc_latency.labels(method).observe(elapsed)
                    # One line per call, a refusal's reason in it.
                    refused = {"reason": reason} if reason else {}
                    log.info("rpc", status=code.name, duration_ms=round(elapsed * 1000, 2), **refused)

        return with_behavior(handler, observed)


def _request_id(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and 0 < len(value) <= 128:
            return value
    return uuid.uuid4().hex


async def _abort(context: Context, error: MeshError) -> None:
    status = rpc_status.to_status(error.to_status())
    await context.abort(status.code, status.details, (*status.trailing_metadata, *error.headers()))
