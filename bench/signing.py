"""Signed internal calls per second against unsigned calls, on the same server in the same run.

The server runs in a process of its own, with its settings' defaults (as in deployment); this
process is the load. Rounds alternate unsigned (public CheckCode) and signed (internal
ReleaseHold, signed as auth_svc: ECDSA sign here; there, the verify and a Redis SET NX nonce
check), and the ratio is taken per round pair, so a noisy neighbour slows both sides of a pair
alike. The server's CPU per call says what a signed call costs it.

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
        server_process("bench.signing", settings) as server,
        open_channel(server.address, settings) as plain,
        signed_channel(server.address, settings, "auth_svc") as signed,
    ):
        unsigned_stub = invite_service_pb2_grpc.InviteServiceStub(plain)
        signed_stub = invite_service_pb2_grpc.InviteServiceStub(signed)

        async def unsigned_call() -> object:
            return await unsigned_stub.CheckCode(CHECK)

        async def signed_call() -> object:
            return await signed_stub.ReleaseHold(RELEASE)

        ways = (unsigned_call, signed_call)
        for way in ways:  # warm up both paths
            await calls_per_second(way, 1.0, args.concurrency)
        rates: list[list[float]] = [[], []]
        cpu: list[list[float]] = [[], []]
        for _ in range(args.rounds):
            for way, measured, spent in zip(ways, rates, cpu, strict=True):
                before = server.cpu_seconds()
                measured.append(await calls_per_second(way, args.seconds, args.concurrency))
                spent.append((server.cpu_seconds() - before) / (measured[-1] * args.seconds) * 1e6)

    print(
        f"signing bench: {args.rounds} rounds x {args.seconds:.1f} s, {args.concurrency} concurrent callers, "
        "server in its own process"
    )
    for name, measured, spent in zip(("unsigned public", "signed internal"), rates, cpu, strict=True):
        print(
            f"{name + ' calls/s':<26}median {median(measured):8.0f}   rounds {listed(measured)}   "
            f"server CPU µs/call median {median(spent):.0f}"
        )
    ratios = [s / u for s, u in zip(rates[1], rates[0], strict=True)]
    print(f"{'ratio signed/unsigned':<26}median {median(ratios):.2f}   rounds {listed(ratios, 2)}   target >= 0.80")


def main() -> None:
    run(__doc__, (5, 3.0, 32), INVITE, add_answering, measure)


if __name__ == "__main__":
    main()
