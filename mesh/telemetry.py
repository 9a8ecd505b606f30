"""OpenTelemetry tracing: spans for every served and every outgoing call, propagated in
gRPC metadata, exported over OTLP only when `MESH_OTLP_ENDPOINT` is set.

Without an exporter, no span is recorded and OpenTelemetry's gRPC instrumentation stays out of
the call path (it costs about a quarter of a millisecond per call and side): a served call still
continues its caller's trace (`traceparent`) or starts one, logs its ids (mesh.logs) and passes
them on in its own internal calls, so a request can be followed across the services' logs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON


def configure_tracing(service: str, exporter: SpanExporter | None) -> TracerProvider:
    """Installs the process-wide tracer provider (once; later calls answer the installed one)."""
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        return installed
    resource = Resource.create({"service.name": service})
    provider = TracerProvider(resource=resource, sampler=ALWAYS_OFF if exporter is None else DEFAULT_ON)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def otlp_exporter(endpoint: str | None) -> SpanExporter | None:
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def server_tracing() -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
    return aio_server_interceptor()  # type: ignore[no-any-return,no-untyped-call]


def client_tracing() -> list[Any]:
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]


TRACEPARENT = "traceparent"


@contextmanager
def continued_trace(metadata: Iterable[tuple[str, Any]] | None) -> Iterator[None]:
    """For the duration of a served call: the caller's trace, or a new one, as the current
    span context, with a span id of its own; nothing recorded."""
    parent = _parent(metadata)
    span = trace.SpanContext(
        trace_id=parent.trace_id if parent else _nonzero_bits(128),
        span_id=_nonzero_bits(64),
        is_remote=False,
        trace_flags=parent.trace_flags if parent else trace.TraceFlags(0),
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span)))
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_header() -> tuple[tuple[str, str], ...]:
    """The current trace as call metadata (`traceparent`), or nothing outside any."""
    current = trace.get_current_span().get_span_context()
    if not current.is_valid:
        return ()
    return ((TRACEPARENT, f"00-{current.trace_id:032x}-{current.span_id:016x}-{current.trace_flags:02x}"),)


def _parent(metadata: Iterable[tuple[str, Any]] | None) -> trace.SpanContext | None:
    for key, value in metadata or ():
        if key != TRACEPARENT or not isinstance(value, str):
            continue
        parts = value.split("-")
        if len(parts) != 4 or [len(part) for part in parts] != [2, 32, 16, 2] or parts[0] == "ff":
            return None
        try:
            trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
        except ValueError:
            return None
        if not trace_id or not span_id:
            return None
        return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 1))
    return None


def _nonzero_bits(bits: int) -> int:
    # Trace ids are no secrets: OpenTelemetry's own generator draws them the same way.
    while not (value := random.getrandbits(bits)):
        pass
    return value
