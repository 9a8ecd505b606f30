"""Signed internal calls per second against unsigned calls, on the same server in the same run.

The server runs in a process of its own (as in deployment); this process is the load. Rounds
alternate unsigned (public CheckCode) and signed (internal ReleaseHold, signed as auth_svc: ECDSA
sign here, verify plus a Redis SET NX nonce check there), and the ratio is taken per round pair,
so a noisy neighbour slows both sides of a pair alike.

    .venv/bin/python -m bench.signing [--rounds 5] [--seconds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from invitemesh.invite.v1 import invite_service_pb2, invite_service_pb2_grpc

from mesh.channels import open_channel
from mesh.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from mesh.keys import Keystore, TrustStore, load_kek
from mesh.server import MeshServer, ServiceRuntime
from mesh.services import INVITE, SERVICES
from mesh.settings import Settings
from mesh.signing import CallSigner

CHECK = invite_service_pb2.CheckCodeRequest(code="ABCD-EFGH-J")
RELEASE = invite_service_pb2.ReleaseHoldRequest(hold_id="0b7d5a8e-4f5c-4d8e-9a57-3e2f1c0d9b6a")


class Answering(invite_service_pb2_grpc.InviteServiceServicer):
    """Answers at once, so the bench measures the mesh around the handler, not the handler."""

    async def CheckCode(self, request: Any, context: Any) -> invite_service_pb2.CheckCodeResponse:
        return invite_service_pb2.CheckCodeResponse(valid=True)

    async def ReleaseHold(self, request: Any, context: Any) -> invite_service_pb2.ReleaseHoldResponse:
        return invite_service_pb2.ReleaseHoldResponse()


async def _serve(settings: Settings) -> None:
    def add(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
        invite_service_pb2_grpc.add_InviteServiceServicer_to_server(Answering(), server)  # type: ignore[abstract]

    server = MeshServer(INVITE, add, settings)
    await server.start()
    print(json.dumps({"port": server.port}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await server.stop(0)


async def _round(call: Callable[[], Awaitable[object]], seconds: float, concurrency: int) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            await call()
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done / (time.perf_counter() - started)


async def _measure(args: argparse.Namespace, settings: Settings) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.signing",
        "--serve",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, **_env(settings)},
    )
    assert server.stdout is not None and server.stdin is not None
    port = json.loads(await server.stdout.readline())["port"]
    keystore = Keystore(settings.resolved_keys_dir, load_kek(settings))
    signer = CallSigner("auth_svc", keystore, TrustStore(keystore.trust_path, settings.trust_reload_interval))
    target = f"127.0.0.1:{port}"
    async with open_channel(target, settings) as plain, open_channel(target, settings, "auth_svc", signer) as signed:
        unsigned_stub = invite_service_pb2_grpc.InviteServiceStub(plain)
        signed_stub = invite_service_pb2_grpc.InviteServiceStub(signed)

        async def unsigned_call() -> object:
            return await unsigned_stub.CheckCode(CHECK)

        async def signed_call() -> object:
            return await signed_stub.ReleaseHold(RELEASE)

        await _round(unsigned_call, 1.0, args.concurrency)  # warm up both paths
        await _round(signed_call, 1.0, args.concurrency)
        unsigned, signed_rates = [], []
        for _ in range(args.rounds):
            unsigned.append(await _round(unsigned_call, args.seconds, args.concurrency))
            signed_rates.append(await _round(signed_call, args.seconds, args.concurrency))
    server.stdin.close()
    await server.wait()

    ratios = [s / u for s, u in zip(signed_rates, unsigned, strict=True)]
    print(
        f"signing bench: {args.rounds} rounds x {args.seconds:.1f} s, {args.concurrency} concurrent callers, "
        "server in its own process"
    )
    print(f"unsigned public calls/s   median {statistics.median(unsigned):8.0f}   rounds {_list(unsigned)}")
    print(f"signed internal calls/s   median {statistics.median(signed_rates):8.0f}   rounds {_list(signed_rates)}")
    print(
        f"ratio signed/unsigned     median {statistics.median(ratios):.2f}   rounds {_list(ratios, 2)}   target >= 0.80"
    )


def _list(values: list[float], digits: int = 0) -> str:
    return " ".join(f"{value:.{digits}f}" for value in values)


def _env(settings: Settings) -> dict[str, str]:
    return {
        "MESH_STATE_DIR": str(settings.state_dir),
        "MESH_DATABASE_URL": settings.database_url or "",
        "MESH_REDIS_URL": settings.redis_url or "",
        "MESH_LOG_LEVEL": "WARNING",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        from mesh.logs import configure_logging

        settings = Settings()
        configure_logging("bench", settings.log_level)
        asyncio.run(_serve(settings))
        return

    with tempfile.TemporaryDirectory() as state:
        state_dir = Path(state)
        postgres = redis = None
        database_url, redis_url = os.environ.get("MESH_DATABASE_URL"), os.environ.get("MESH_REDIS_URL")
        if not database_url:
            postgres = EmbeddedPostgres(state_dir / "postgres", free_port())
            postgres.start()
            database_url = postgres.url
        if not redis_url:
            redis = EmbeddedRedis(state_dir / "redis", free_port())
            redis.start()
            redis_url = redis.url
        try:
            settings = Settings(
                state_dir=state_dir, database_url=database_url, redis_url=redis_url, log_level="WARNING"
            )
            Keystore(settings.resolved_keys_dir, load_kek(settings, create=True)).ensure([s.name for s in SERVICES])
            asyncio.run(_measure(args, settings))
        finally:
            if redis is not None:
                redis.stop()
            if postgres is not None:
                postgres.stop()


if __name__ == "__main__":
    main()
