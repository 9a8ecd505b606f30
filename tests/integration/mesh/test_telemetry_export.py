"""With MESH_OTLP_ENDPOINT set, a service exports its spans over OTLP/gRPC; a real OTLP
receiver (the collector's gRPC TraceService) takes them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

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


async def test_spans_reach_the_otlp_endpoint(migrated_database_url: str, redis_url: str, tmp_path: Path) -> None:
    receiver = Receiver()
    collector = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)  # type: ignore[no-untyped-call]
    collector_port = collector.add_insecure_port("127.0.0.1:0")
    await collector.start()
    service = await asyncio.create_subprocess_exec(
        sys.executable, str(SLOW_SERVICE),
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "MESH_DATABASE_URL": migrated_database_url,
            "MESH_REDIS_URL": redis_url,
            "MESH_STATE_DIR": str(tmp_path),
            "MESH_OTLP_ENDPOINT": f"http://127.0.0.1:{collector_port}",
            "PYTHONPATH": str(Path.cwd()),
        },
    )  # fmt: skip
    try:
        assert service.stderr is not None
        port = None
        while port is None:
            line = await asyncio.wait_for(service.stderr.readline(), 30)
            assert line, "the service exited before serving"
            if b'"serving"' in line:
                port = json.loads(line)["port"]
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
        if service.returncode is None:
            service.kill()
            await service.wait()
        await collector.stop(0)
