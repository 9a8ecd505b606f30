"""Signed internal calls per second against unsigned calls, on the same server in the same run.

The server runs in a process of its own, with its settings' defaults (as in deployment); this
process is the load. Rounds alternate unsigned (public CheckCode) and signed (internal
ReleaseHold, signed as auth_svc: ECDSA sign here; there, the verify in the server's signature
helper process and a Redis SET NX nonce check), and the ratio is taken per round pair, so a noisy
neighbour slows both sides of a pair alike. `MESH_SIGNATURE_HELPER=0` measures the verify on the
server's event loop instead.

    .venv/bin/python -m bench.signing [--rounds 5] [--seconds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
from typing import Any

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from bench.harness import calls_per_second, listed, median, run, server_process, signed_channel
from mesh.channels import open_channel
from mesh.server import ServiceRuntime
from mesh.services import INVITE
from mesh.settings import Settings

CHECK = invite_service_pb2.CheckCodeRequest(code="ABCD-EFGH-J")
RELEASE = invite_service_pb2.ReleaseHoldRequest(hold_id="0b7d5a8e-4f5c-4d8e-9a57-3e2f1c0d9b6a")


class Answering(invite_service_pb2_grpc.InviteServiceServicer):
    """Answers at once, so the bench measures the mesh around the handler, not the handler."""

    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        return invite_service_pb2.CheckCodeResponse(valid=True)

    async def ReleaseHold(self, request: Any, context: Any) -> invite_service_pb2.ReleaseHoldResponse:
        return invite_service_pb2.ReleaseHoldResponse()


def add_answering(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(Answering(), server)  # type: ignore[abstract]


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    async with (
        server_process("bench.signing", settings) as target,
        open_channel(target, settings) as plain,
        signed_channel(target, settings, "auth_svc") as signed,
    ):
        unsigned_stub = invite_service_pb2_grpc.InviteServiceStub(plain)
        signed_stub = invite_service_pb2_grpc.InviteServiceStub(signed)

        async def unsigned_call() -> object:
            return await unsigned_stub.CheckCode(CHECK)

        async def signed_call() -> object:
            return await signed_stub.ReleaseHold(RELEASE)

        await calls_per_second(unsigned_call, 1.0, args.concurrency)  # warm up both paths
        await calls_per_second(signed_call, 1.0, args.concurrency)
        unsigned, signed_rates = [], []
        for _ in range(args.rounds):
            unsigned.append(await calls_per_second(unsigned_call, args.seconds, args.concurrency))
            signed_rates.append(await calls_per_second(signed_call, args.seconds, args.concurrency))

    ratios = [s / u for s, u in zip(signed_rates, unsigned, strict=True)]
    print(
        f"signing bench: {args.rounds} rounds x {args.seconds:.1f} s, {args.concurrency} concurrent callers, "
        "server in its own process"
    )
    print(f"unsigned public calls/s   median {median(unsigned):8.0f}   rounds {listed(unsigned)}")
    print(f"signed internal calls/s   median {median(signed_rates):8.0f}   rounds {listed(signed_rates)}")
    print(f"ratio signed/unsigned     median {median(ratios):.2f}   rounds {listed(ratios, 2)}   target >= 0.80")


def main() -> None:
    run(__doc__, (5, 3.0, 32), INVITE, add_answering, measure)


if __name__ == "__main__":
    main()
