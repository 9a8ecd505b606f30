"""With MESH_OTLP_ENDPOINT set, a service exports its spans over OTLP/gRPC; a real OTLP
receiver (the collector's gRPC TraceService) takes them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any, cast

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import eventually

SLOW_SERVICE = Path(__file__).with_name("slow_invite_service.py")


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []

    async def Export(self, request: Any, context: Any) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((service, span.name) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


async def _service(
    database_url: str, redis_url: str, state_dir: Path, **env: str
) -> tuple[asyncio.subprocess.Process, int]:
    """The slow invite service as deployed (`serve()`, JSON logs on stderr), and its port."""
    service = await asyncio.create_subprocess_exec(
        sys.executable, str(SLOW_SERVICE),
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "MESH_DATABASE_URL": database_url,
            "MESH_REDIS_URL": redis_url,
            "MESH_STATE_DIR": str(state_dir),
            "PYTHONPATH": str(Path.cwd()),
            **env,
        },
    )  # fmt: skip
    try:
        serving = await _logged(service, "serving")
    except BaseException:
        service.kill()
        await service.wait()
        raise
    return service, int(serving["port"])


async def _logged(service: asyncio.subprocess.Process, event: str) -> dict[str, Any]:
    assert service.stderr is not None
    while True:
        line = await asyncio.wait_for(service.stderr.readline(), 30)
        assert line, f"the service exited before logging {event!r}"
        if line.startswith(b"{") and (logged := json.loads(line))["event"] == event:
            return cast(dict[str, Any], logged)


async def _stopped(service: asyncio.subprocess.Process) -> None:
    if service.returncode is None:
        service.kill()
        await service.wait()


async def test_spans_reach_the_otlp_endpoint(migrated_database_url: str, redis_url: str, tmp_path: Path) -> None:
    receiver = Receiver()
    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)  # type: ignore[no-untyped-call]
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    service, port = await _service(
        migrated_database_url, redis_url, tmp_path, MESH_OTLP_ENDPOINT=f"http://127.0.0.1:{collector_port}"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await invite_service_pb2_grpc.InviteServiceStub(channel).CheckCode(
                invite_service_pb2.CheckCodeRequest(code="X")
            )
        service.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.wait(), 30) == 0

        async def exported() -> bool:
            return ("invite_svc", "/invitemesh.invite.v1.InviteService/CheckCode") in receiver.spans

        await eventually(exported, what="the CheckCode span at the collector")
    finally:
        await _stopped(service)
        await collector.stop(0)


async def test_without_an_exporter_a_call_logs_the_trace_it_came_with(
    migrated_database_url: str, redis_url: str, tmp_path: Path
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    service, port = await _service(migrated_database_url, redis_url, tmp_path, MESH_LOG_LEVEL="INFO")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await invite_service_pb2_grpc.InviteServiceStub(channel).CheckCode(
                invite_service_pb2.CheckCodeRequest(code="X"),
                metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
            )
        logged = await _logged(service, "rpc")
    finally:
        await _stopped(service)

    assert logged["method"] == "/invitemesh.invite.v1.InviteService/CheckCode"
    assert logged["trace_id"] == trace_id
    assert logged["span_id"] != parent_id
