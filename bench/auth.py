"""Registration, sign-in and refresh rates against the rate this machine hashes passwords at, and
what checking every access token against the revoked sessions costs.

In one run, each round: argon2id hashes per second with the configured parameters, one thread
per core, in this process (the physical limit of registration and login, which hash or check one
password each); then, with auth_svc, invite_svc and mail_svc each in a process of its own (mail
only logs and queues), `--concurrency` gRPC clients calling back to back: Register (distinct
emails on one hot invite code), Login (existing active accounts), Refresh (each client rotating
its own session), and GetMe with an access token, against that auth_svc and against a second one
that is the same but for the revocation check (`--serve`: its verifier takes no session for
revoked). Registrations and logins print their ratio to the hash rate, GetMe with the check its
ratio to GetMe without.

    .venv/bin/python -m bench.auth [--rounds 3] [--seconds 5] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import grpc
from argon2 import PasswordHasher, Type
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from auth_svc.server import add_servicers as add_auth
from auth_svc.settings import AuthSettings
from bench.harness import (
    Call,
    calls_per_second,
    hashes_per_second,
    listed,
    median,
    run,
    running_services,
    server_process,
    signed_channel,
)
from mesh.channels import open_channel
from mesh.emails import canonical_email
from mesh.revocations import RevokedSessions
from mesh.server import ServiceRuntime
from mesh.services import AUTH
from mesh.settings import Settings

PASSWORD = "a long passphrase for the benchmark"  # noqa: S105 (the benchmark accounts' own)
ACCOUNTS = 64
SERVICES = ("invite_svc", "mail_svc", "auth_svc")


def _hasher() -> PasswordHasher:
    """auth_svc's hasher: the services read the same `MESH_AUTH_ARGON2_*`."""
    own = AuthSettings()
    return PasswordHasher(
        time_cost=own.argon2_time_cost,
        memory_cost=own.argon2_memory_kib,
        parallelism=own.argon2_parallelism,
        type=Type.ID,
    )


@asynccontextmanager
async def auth_services(settings: Settings) -> AsyncIterator[Settings]:
    """The three services, each `python -m <service>` in its own process, as deployed."""
    variables = {
        "MESH_MAIL_SENDERS": "0",
        "MESH_AUTH_REGISTRATIONS_PER_HOUR": str(10**9),
        "MESH_AUTH_EMAILS_PER_HOUR": str(10**9),
        "MESH_AUTH_LOGIN_FAILURES_PER_CLIENT": str(10**9),
    }
    async with running_services(settings, SERVICES, variables) as deployed:
        yield deployed


async def hot_code(settings: Settings) -> str:
    async with signed_channel(settings.service_addresses["invite_svc"], settings, "admin_svc") as channel:
        request = invite_pb.MintCodesRequest(
            count=1, max_uses=10**9, owner=invite_pb.Owner(admin_id=str(uuid.uuid4())), request_id=uuid.uuid4().hex
        )
        minted = await invite_service_pb2_grpc.InviteServiceStub(channel).MintCodes(request)
    return minted.codes[0].code


async def active_accounts(settings: Settings, count: int) -> list[str]:
    """Accounts ready to sign in, written straight to the auth schema (one shared hash)."""
    password_hash = _hasher().hash(PASSWORD)
    emails = [f"signin.{uuid.uuid4().hex[:12]}@bench.example" for _ in range(count)]
    connection = await asyncpg.connect(settings.database_url)
    try:
        await connection.executemany(
            "INSERT INTO auth.users (id, email, canonical_email, password_hash, state, verify_time)"
            " VALUES ($1, $2, $3, $4, 2, now())",
            [(uuid.uuid4(), email, canonical_email(email), password_hash) for email in emails],
        )
    finally:
        await connection.close()
    return emails


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    rates: dict[str, list[float]] = {
        "hash": [],
        "register": [],
        "login": [],
        "refresh": [],
        "me": [],
        "me unchecked": [],
    }
    async with auth_services(settings) as deployed, server_process("bench.auth", deployed) as unchecked_server:
        code = await hot_code(deployed)
        accounts = itertools.cycle(await active_accounts(deployed, ACCOUNTS))
        serial = itertools.count()
        async with (
            open_channel(deployed.service_addresses["auth_svc"], deployed) as channel,
            open_channel(unchecked_server.address, deployed) as unchecked_channel,
        ):
            auth = auth_service_pb2_grpc.AuthServiceStub(channel)

            async def register() -> None:
                email = f"new.{next(serial)}.{uuid.uuid4().hex[:6]}@bench.example"
                await auth.Register(pb.RegisterRequest(email=email, password=PASSWORD, invite_code=code))

            async def login() -> str:
                answer = await auth.Login(pb.LoginRequest(email=next(accounts), password=PASSWORD))
                return answer.session.refresh_token

            sessions = [await login() for _ in range(args.concurrency)]
            turn = itertools.count()

            async def refresh() -> None:
                mine = next(turn) % len(sessions)
                token, sessions[mine] = sessions[mine], ""
                while not token:  # another caller holds this session right now: take another
                    mine = next(turn) % len(sessions)
                    token, sessions[mine] = sessions[mine], ""
                answer = await auth.Refresh(pb.RefreshRequest(refresh_token=token))
                sessions[mine] = answer.session.refresh_token

            signed_in = await auth.Login(pb.LoginRequest(email=next(accounts), password=PASSWORD))
            bearer = (("authorization", f"Bearer {signed_in.session.access_token}"),)

            def me(stub: auth_service_pb2_grpc.AuthServiceAsyncStub) -> Call:
                async def call() -> None:
                    await stub.GetMe(pb.GetMeRequest(), metadata=bearer)

                return call

            checked_me, unchecked_me = me(auth), me(auth_service_pb2_grpc.AuthServiceStub(unchecked_channel))
            await calls_per_second(register, 2, args.concurrency)  # warm up every path
            await calls_per_second(login, 2, args.concurrency)
            await calls_per_second(checked_me, 1, args.concurrency)
            await calls_per_second(unchecked_me, 1, args.concurrency)
            for _ in range(args.rounds):
                rates["hash"].append(await asyncio.to_thread(hashes_per_second, _hasher(), args.seconds))
                rates["register"].append(await calls_per_second(register, args.seconds, args.concurrency))
                rates["login"].append(await calls_per_second(login, args.seconds, args.concurrency))
                rates["refresh"].append(await calls_per_second(refresh, args.seconds, args.concurrency))
                rates["me"].append(await calls_per_second(checked_me, args.seconds, args.concurrency))
                rates["me unchecked"].append(await calls_per_second(unchecked_me, args.seconds, args.concurrency))
    _report(args.concurrency, rates)


def _report(concurrency: int, rates: dict[str, list[float]]) -> None:
    hashes, own = rates["hash"], AuthSettings()
    print(
        f"argon2id m={own.argon2_memory_kib} KiB t={own.argon2_time_cost} "
        f"p={own.argon2_parallelism}, {os.cpu_count()} threads: hashes/s median {median(hashes):.1f} "
        f"(rounds {listed(hashes, 1)})"
    )
    for name in ("register", "login"):
        ratios = [rate / hashed for rate, hashed in zip(rates[name], hashes, strict=True)]
        print(
            f"{name}/s at {concurrency} clients median {median(rates[name]):.1f}; "
            f"ratio to hash rate median {median(ratios):.2f} (rounds {listed(ratios, 2)})"
        )
    print(
        f"refresh/s at {concurrency} clients median {median(rates['refresh']):.0f} (rounds {listed(rates['refresh'])})"
    )
    checked, unchecked = rates["me"], rates["me unchecked"]
    ratios = [one / other for one, other in zip(checked, unchecked, strict=True)]
    print(
        f"GetMe/s at {concurrency} clients median {median(checked):.0f} with the revocation check, "
        f"{median(unchecked):.0f} without; ratio median {median(ratios):.2f} (rounds {listed(ratios, 2)})"
    )


async def _never_revoked(self: RevokedSessions, session: str) -> bool:
    return False


def add_auth_without_revocation_check(server: grpc.aio.Server, runtime: ServiceRuntime) -> None:
    """auth_svc as deployed but for its verifier, which takes no session for revoked: the
    baseline of the check's cost. Only ever in the benchmark's own `--serve` process."""
    RevokedSessions.revoked = _never_revoked  # type: ignore[method-assign]
    add_auth(server, runtime)


def main() -> None:
    run(__doc__, (3, 5.0, 16), AUTH, add_auth_without_revocation_check, measure)


if __name__ == "__main__":
    main()
