"""OpenTelemetry tracing: spans for every served and every outgoing call, propagated in
gRPC metadata, exported over OTLP only when `MESH_OTLP_ENDPOINT` is set.

Without an exporter, spans are not recorded: a call still gets a trace id, passes it on and logs
it (mesh.logs), so a request can be followed across services' logs, but nobody pays for spans
that nothing would read."""

from __future__ import annotations

from typing import Any

import grpc
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
