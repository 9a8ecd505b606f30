"""OpenTelemetry tracing: spans for every served and every outgoing call, propagated in
gRPC metadata, exported over OTLP only when `MESH_OTLP_ENDPOINT` is set.

Without an exporter, no span is recorded and OpenTelemetry's gRPC instrumentation stays out of
the call path (it costs about a quarter of a millisecond per call and side): a served call still
continues its caller's trace (`traceparent`) or starts one, logs its ids (mesh.logs) and passes
them on in its own internal calls, so a request can be followed across the services' logs.
"""

from __future__ import annotations

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
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, DEFAULT_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


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
_W3C = TraceContextTextMapPropagator()
_IDS = RandomIdGenerator()


@contextmanager
def continued_trace(metadata: Iterable[tuple[str, Any]] | None) -> Iterator[None]:
    """For the duration of a served call: the caller's trace, or a new one, as the current
    span context, with a span id of its own; nothing recorded."""
    carried = {key: value for key, value in metadata or () if key == TRACEPARENT and isinstance(value, str)}
    parent = trace.get_current_span(_W3C.extract(carried)).get_span_context()
    span = trace.SpanContext(
        trace_id=parent.trace_id if parent.is_valid else _IDS.generate_trace_id(),
        span_id=_IDS.generate_span_id(),
        is_remote=False,
        trace_flags=parent.trace_flags if parent.is_valid else trace.TraceFlags(0),
    )
    token = otel_context.attach(trace.set_span_in_context(trace.NonRecordingSpan(span)))
    try:
        yield
    finally:
        otel_context.detach(token)


def trace_header() -> tuple[tuple[str, str], ...]:
    """The current trace as call metadata (`traceparent`), or nothing outside any."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return tuple(carrier.items())
