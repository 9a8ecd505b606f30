"""What the edge costs: CheckCode requests per second four ways, in one run.

invite_svc and ratelimit_svc run as deployed, each in a process of its own, with Envoy (the
edge's own rendered configuration) in front. Each round measures, back to back, with
`--concurrency` clients calling as fast as they can: gRPC straight to invite_svc; gRPC through
Envoy; REST/JSON through Envoy; REST/JSON through Envoy with ratelimit_svc in the path (its
CheckCode rule set high enough never to refuse). Without the rate-limit service means Envoy's
rate-limit filter turned off at run time, as its `edge.rate_limit_enabled` runtime key allows.
Each way prints its median and its ratio to direct gRPC in the same round.

    .venv/bin/python -m bench.edge [--rounds 3] [--seconds 4] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2_grpc

from bench.harness import (
    JSON,
    Call,
    HttpConnection,
    calls_per_second,
    http_pool,
    listed,
    median,
    run_rounds,
    running_services,
    signed_channel,
    turn_rate_limiting,
)
from mesh import invite_codes as codes
from mesh.clients import edge_token
from mesh.keys import load_kek
from mesh.services import INVITE, OPERATOR, RATELIMIT, SERVICES
from mesh.settings import Settings
from meshctl.edge import EdgeLimits, running_edge
from meshctl.embedded import free_port

CHECK_CODE = "/invitemesh.invite.v1.InviteService/CheckCode"
NEVER = 10**9
TARGET = 0.5
WAYS = ("direct gRPC", "gRPC via Envoy", "REST via Envoy", "REST via Envoy+RLS")


async def _rule_that_never_refuses(deployed: Settings) -> None:
    """Set as the operator sets it; the replica that stores it reads it at once."""
    rule = ratelimit_pb.RateLimitRule(
        route=CHECK_CODE, requests_per_unit=NEVER, unit=ratelimit_pb.TIME_UNIT_MINUTE, fail_closed=True
    )
    async with signed_channel(deployed.service_addresses[RATELIMIT.name], deployed, OPERATOR) as channel:
        stub = ratelimit_service_pb2_grpc.RateLimitRuleServiceStub(channel)
        await stub.UpdateRateLimitRule(ratelimit_pb.UpdateRateLimitRuleRequest(rule=rule))


def _rest_call(pool: asyncio.Queue[HttpConnection], body: bytes, *, rate_limited: bool) -> Call:
    async def call() -> None:
        connection = pool.get_nowait()
        try:
            status, headers, _ = await connection.request("POST", "/v1/invites:check", body, JSON)
        finally:
            pool.put_nowait(connection)
        # Proof of the path taken: only ratelimit_svc's answers carry the x-ratelimit headers.
        assert status == 200 and ("x-ratelimit-limit" in headers) == rate_limited, (status, headers)

    return call


def _grpc_call(channel: grpc.aio.Channel, request: pb.CheckCodeRequest) -> Call:
    stub = invite_service_pb2_grpc.InviteServiceStub(channel)

    async def call() -> None:
        await stub.CheckCode(request)

    return call


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    variables = {"MESH_INVITE_CHECKS_PER_MINUTE": str(NEVER), "MESH_RATELIMIT_RULES_CACHE": "60"}
    code = codes.display(codes.generate())
    request = pb.CheckCodeRequest(code=code)
    body = json.dumps({"code": code}).encode()
    rates: dict[str, list[float]] = {way: [] for way in WAYS}
    async with (
        running_services(settings, [INVITE.name, RATELIMIT.name], variables) as deployed,
        AsyncExitStack() as stack,
    ):
        await _rule_that_never_refuses(deployed)
        upstreams = {spec.name: [("127.0.0.1", free_port())] for spec in SERVICES}
        for name, address in deployed.service_addresses.items():
            host, port = address.rsplit(":", 1)
            upstreams[name] = [(host, int(port))]
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        token = edge_token(load_kek(settings))
        edge = stack.enter_context(running_edge(directory, upstreams, EdgeLimits(backstop_per_second=NEVER), token))
        direct = await stack.enter_async_context(grpc.aio.insecure_channel(deployed.service_addresses[INVITE.name]))
        via_envoy = await stack.enter_async_context(grpc.aio.insecure_channel(edge.address))
        pool = await stack.enter_async_context(http_pool(edge.address, args.concurrency))
        calls = {
            WAYS[0]: _grpc_call(direct, request),
            WAYS[1]: _grpc_call(via_envoy, request),
            WAYS[2]: _rest_call(pool, body, rate_limited=False),
            WAYS[3]: _rest_call(pool, body, rate_limited=True),
        }
        for _ in range(args.rounds + 1):  # the first round warms every path up and is not counted
            for way, call in calls.items():
                await asyncio.to_thread(turn_rate_limiting, edge.admin, way == WAYS[3])
                rates[way].append(await calls_per_second(call, args.seconds, args.concurrency))
    _report(args, {way: values[1:] for way, values in rates.items()})


def _report(args: argparse.Namespace, rates: dict[str, list[float]]) -> None:
    print(f"CheckCode, {args.concurrency} clients, {args.rounds} rounds of {args.seconds:g} s")
    direct = rates[WAYS[0]]
    for way, values in rates.items():
        line = f"{way:<20} requests/s median {median(values):7.0f}   rounds {listed(values)}"
        if way != WAYS[0]:
            ratios = [value / base for value, base in zip(values, direct, strict=True)]
            line += f"   ratio to direct median {median(ratios):.2f} (rounds {listed(ratios, 2)})"
            if way == WAYS[3]:
                line += f"   target >= {TARGET:.2f}"
        print(line)


def main() -> None:
    run_rounds(__doc__, (3, 4.0, 32), measure)


if __name__ == "__main__":
    main()
