"""A service process whose CheckCode takes a while: `serve()` as deployed, for the drain test."""

import asyncio
import sys
from typing import Any

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.server import ServiceRuntime, run
from mesh.services import INVITE

CALL_SECONDS = 1.5


class SlowInvite(invite_service_pb2_grpc.InviteServiceServicer):
    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        print("call started", file=sys.stderr, flush=True)
        await asyncio.sleep(CALL_SECONDS)
        return invite_service_pb2.CheckCodeResponse(valid=True)


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(SlowInvite(), server)  # type: ignore[abstract]


if __name__ == "__main__":
    run(INVITE, add_servicers)
