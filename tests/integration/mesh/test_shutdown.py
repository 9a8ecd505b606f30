"""SIGTERM lets in-flight calls finish and refuses new ones."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

SLOW_SERVICE = Path(__file__).with_name("slow_invite_service.py")


async def _line_with(stream: asyncio.StreamReader, text: str) -> str:
    async with asyncio.timeout(30):
        while line := (await stream.readline()).decode():
            if text in line:
                return line
    raise AssertionError(f"the service exited before logging {text!r}")


async def test_sigterm_drains_the_in_flight_call(migrated_database_url: str, redis_url: str) -> None:
    service = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SLOW_SERVICE),
        stderr=asyncio.subprocess.PIPE,
        env={
            **os.environ,
            "MESH_DATABASE_URL": migrated_database_url,
            "MESH_REDIS_URL": redis_url,
            "MESH_GRPC_PORT": "0",
            "MESH_GRACE_PERIOD": "10",
            "PYTHONPATH": str(Path.cwd()),
        },
    )
    try:
        await _drain_while_calling(service)
    finally:
        if service.returncode is None:
            service.kill()
            await service.wait()


async def _drain_while_calling(service: asyncio.subprocess.Process) -> None:
    assert service.stderr is not None
    port = json.loads(await _line_with(service.stderr, '"serving"'))["port"]
    address = f"127.0.0.1:{port}"

    async with grpc.aio.insecure_channel(address) as channel:
        in_flight = asyncio.ensure_future(
            invite_service_pb2_grpc.InviteServiceStub(channel).CheckCode(invite_service_pb2.CheckCodeRequest(code="X"))
        )
        await _line_with(service.stderr, "call started")
        service.send_signal(signal.SIGTERM)
        await _line_with(service.stderr, '"draining"')

        async with grpc.aio.insecure_channel(address) as late_channel:
            late = invite_service_pb2_grpc.InviteServiceStub(late_channel).CheckCode(
                invite_service_pb2.CheckCodeRequest(code="X"), timeout=5
            )
            try:
                await late
                raise AssertionError("a call after SIGTERM was served")
            except grpc.aio.AioRpcError as refused:
                # grpc core refuses the connection or cancels the call, depending on timing.
                assert refused.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

        answer = await in_flight
        assert answer.valid is True

    assert await asyncio.wait_for(service.wait(), 30) == 0
