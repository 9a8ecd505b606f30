"""Signed internal calls per second against unsigned calls, on the same server in the same run.

The server runs in a process of its own, with its settings' defaults (as in deployment); this
process is the load. Rounds alternate unsigned (public CheckCode) and signed (internal
ReleaseHold, signed as auth_svc: ECDSA sign here; there, the verify in the server's signature
helper process and a Redis SET NX nonce check), and the ratio is taken per round pair, so a noisy
neighbour slows both sides of a pair alike. A second server with `MESH_SIGNATURE_HELPER=0` checks
on its event loop: the helper/in-process ratio says what the helper process buys.

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
        server_process("bench.signing", settings, {"MESH_SIGNATURE_HELPER": "1"}) as with_helper,
        server_process("bench.signing", settings, {"MESH_SIGNATURE_HELPER": "0"}) as in_process,
        open_channel(with_helper.address, settings) as plain,
        signed_channel(with_helper.address, settings, "auth_svc") as signed,
        signed_channel(in_process.address, settings, "auth_svc") as signed_in_process,
    ):
        unsigned_stub = invite_service_pb2_grpc.InviteServiceStub(plain)
        helper_stub = invite_service_pb2_grpc.InviteServiceStub(signed)
        in_process_stub = invite_service_pb2_grpc.InviteServiceStub(signed_in_process)

        async def unsigned_call() -> object:
            return await unsigned_stub.CheckCode(CHECK)

        async def helper_call() -> object:
            return await helper_stub.ReleaseHold(RELEASE)

        async def in_process_call() -> object:
            return await in_process_stub.ReleaseHold(RELEASE)

        ways = ((unsigned_call, with_helper), (helper_call, with_helper), (in_process_call, in_process))
        for way, _ in ways:  # warm up every path (the helper starts on the first signed call)
            await calls_per_second(way, 1.0, args.concurrency)
        rates: list[list[float]] = [[], [], []]
        loop_cpu: list[list[float]] = [[], [], []]
        helper_cpu: list[list[float]] = [[], [], []]
        for _ in range(args.rounds):
            for (way, server), measured, loop, helper in zip(ways, rates, loop_cpu, helper_cpu, strict=True):
                (own, children) = server.cpu_seconds()
                measured.append(await calls_per_second(way, args.seconds, args.concurrency))
                (own_after, children_after) = server.cpu_seconds()
                calls = measured[-1] * args.seconds
                loop.append((own_after - own) / calls * 1e6)
                helper.append((children_after - children) / calls * 1e6)

    print(
        f"signing bench: {args.rounds} rounds x {args.seconds:.1f} s, {args.concurrency} concurrent callers, "
        "each server in its own process; CPU µs per call of the server's process and of its helper"
    )
    names = ("unsigned public", "signed, checks in the helper", "signed, checks in process")
    for name, measured, loop, helper in zip(names, rates, loop_cpu, helper_cpu, strict=True):
        print(
            f"{name + ' calls/s':<39}median {median(measured):8.0f}   rounds {listed(measured)}   "
            f"CPU/call server {median(loop):4.0f} helper {median(helper):4.0f}"
        )
    unsigned, helper, in_process_rates = rates
    for name, signed_rates in (("helper", helper), ("in process", in_process_rates)):
        ratios = [s / u for s, u in zip(signed_rates, unsigned, strict=True)]
        label = f"ratio signed ({name})/unsigned"
        print(f"{label:<39}median {median(ratios):.2f}   rounds {listed(ratios, 2)}")
    paid = [h / p for h, p in zip(helper, in_process_rates, strict=True)]
    print(f"{'ratio helper/in process':<39}median {median(paid):.2f}   rounds {listed(paid, 2)}")


def main() -> None:
    run(__doc__, (5, 3.0, 32), INVITE, add_answering, measure)


if __name__ == "__main__":
    main()
