"""OpenTelemetry tracing: spans for every served and every outgoing call, propagated in
gRPC metadata, exported over OTLP only when `MESH_OTLP_ENDPOINT` is set."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def configure_tracing(service: str, otlp_endpoint: str | None) -> TracerProvider:
    """Installs the process-wide tracer provider (once; later calls answer the installed one)."""
    installed = trace.get_tracer_provider()
    if isinstance(installed, TracerProvider):
        return installed
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    trace.set_tracer_provider(provider)
    return provider


def server_tracing() -> grpc.aio.ServerInterceptor:  # type: ignore[type-arg]
    return aio_server_interceptor()  # type: ignore[no-any-return,no-untyped-call]


def client_tracing() -> list[Any]:
    return list(aio_client_interceptors())  # type: ignore[no-untyped-call]
