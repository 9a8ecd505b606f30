"""Holds per second at 64 concurrent signed clients, against the framework's own ceiling.

One server process runs the real invite_svc (PostgreSQL, Redis nonces, signatures). In each
round this process measures, back to back: a signed no-op RPC on that same server (the ceiling:
everything but the hold), holds spread over many codes, and holds on one hot code with 100 000
uses. Every hold is a new person, so every one takes a use.

    .venv/bin/python -m bench.invites [--rounds 3] [--seconds 4] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import random
import uuid
from typing import Any

import grpc
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from bench.harness import calls_per_second, listed, median, run, server_process, signed_channel
from invite_svc.server import InviteService, invite_service
from mesh.server import ServiceRuntime
from mesh.services import INVITE
from mesh.settings import Settings

HOT_USES = 100_000
SPREAD_CODES = 200


class WithNoOp(InviteService):
    """The real service plus one signed internal method that does nothing: the ceiling."""

    async def GetReferralTree(self, request: Any, context: Any) -> pb.GetReferralTreeResponse:
        return pb.GetReferralTreeResponse()


def add_with_no_op(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(invite_service(runtime, kind=WithNoOp), server)


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    async with (
        server_process("bench.invites", settings) as served,
        signed_channel(served.address, settings, "admin_svc") as admin_channel,
        signed_channel(served.address, settings, "auth_svc") as auth_channel,
    ):
        admin = invite_service_pb2_grpc.InviteServiceStub(admin_channel)
        auth = invite_service_pb2_grpc.InviteServiceStub(auth_channel)
        owner = pb.Owner(admin_id=str(uuid.uuid4()))
        spread = [
            c.code
            for c in (
                await admin.MintCodes(pb.MintCodesRequest(count=SPREAD_CODES, max_uses=HOT_USES, owner=owner))
            ).codes
        ]
        (hot,) = [
            c.code for c in (await admin.MintCodes(pb.MintCodesRequest(count=1, max_uses=HOT_USES, owner=owner))).codes
        ]

        async def no_op() -> object:
            return await admin.GetReferralTree(pb.GetReferralTreeRequest())

        def holding(pick: Any) -> Any:
            async def hold() -> object:
                person = f"{uuid.uuid4().hex}@example.com"
                return await auth.HoldCode(pb.HoldCodeRequest(code=pick(), email=person, request_id=uuid.uuid4().hex))

            return hold

        spread_hold = holding(lambda: random.choice(spread))  # noqa: S311 - load spread, not a secret
        hot_hold = holding(lambda: hot)
        for call in (no_op, spread_hold, hot_hold):
            await calls_per_second(call, 1.0, args.concurrency)
        ceilings, spreads, hots = [], [], []
        for _ in range(args.rounds):
            ceilings.append(await calls_per_second(no_op, args.seconds, args.concurrency))
            spreads.append(await calls_per_second(spread_hold, args.seconds, args.concurrency))
            hots.append(await calls_per_second(hot_hold, args.seconds, args.concurrency))

    spread_ratio = [s / c for s, c in zip(spreads, ceilings, strict=True)]
    hot_ratio = [h / s for h, s in zip(hots, spreads, strict=True)]
    print(
        f"invite bench: {args.rounds} rounds x {args.seconds:.1f} s each, {args.concurrency} concurrent signed clients"
    )
    print(f"no-op RPCs/s (ceiling)        median {median(ceilings):7.0f}   rounds {listed(ceilings)}")
    print(f"holds/s spread over {SPREAD_CODES} codes median {median(spreads):7.0f}   rounds {listed(spreads)}")
    print(f"holds/s on one hot code       median {median(hots):7.0f}   rounds {listed(hots)}")
    spread_line = f"median {median(spread_ratio):.2f}   rounds {listed(spread_ratio, 2)}"
    print(f"spread / ceiling              {spread_line}   target >= 0.50")
    print(
        f"hot / spread                  median {median(hot_ratio):.2f}   rounds {listed(hot_ratio, 2)}   target >= 0.80"
    )


def main() -> None:
    run(__doc__, (3, 4.0, 64), INVITE, add_with_no_op, measure)


if __name__ == "__main__":
    main()
