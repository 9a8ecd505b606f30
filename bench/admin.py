"""admin_svc: sign-ins (both steps) against the rate this machine hashes passwords at, and page
latency of ListInvites, ListEmails and ListAuditLogEntries over a big table each.

In one run, with invite_svc, mail_svc and admin_svc each in a process of its own (as deployed):
`--codes` codes minted through MintCodes, `--emails` emails and `--entries` audit entries written
straight with SQL (the listings read them, nothing checks them). Each round: argon2id hashes per
second with admin_svc's parameters, one thread per core, in this process; then `--concurrency`
clients signing in back to back (CreateSession, then VerifySessionMfa with the TOTP code of now,
each admin once: a code signs in once); each step alone, to show what each costs (CreateSession
back to back, and `--second-steps` VerifySessionMfa calls for admins whose first step is done);
then, one call at a time, pages of 50 of each listing
through admin_svc: the first page, and pages that start anywhere in the table (with the page
token a client that paged that far would hold, made with the same KEK-derived key the owning
service uses). ListCampaigns over a handful of campaigns is the baseline each listing's latency
is a ratio to.

    .venv/bin/python -m bench.admin [--rounds 3] [--seconds 5] [--concurrency 16]
                                    [--codes 1000000] [--emails 1000000] [--entries 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pyotp
import uvloop
from argon2 import PasswordHasher, Type
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.admin.v1 import admin_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.mesh.v1 import access_pb2

from admin_svc.settings import AdminSettings
from bench.harness import (
    backends,
    calls_per_second,
    hashes_per_second,
    listed,
    median,
    running_services,
    signed_channel,
)
from bench.mail_stats import fill as fill_emails
from mesh.channels import open_channel
from mesh.cursors import PageTokens
from mesh.keys import load_kek
from mesh.sealing import derive_key
from mesh.settings import Settings

PASSWORD = "a long passphrase for the benchmark"  # noqa: S105 (the benchmark admins' own)
PAGE = 50
SERVICES = ("invite_svc", "mail_svc", "admin_svc")
TARGET_MS = 25.0
_AUDIT_FILL = """
INSERT INTO admin.audit_log (sequence, id, actor, action, target, request_json, request_id, create_time,
                             previous_digest, digest, key_id, signature, outcome)
SELECT n, gen_random_uuid(), 'admin:' || gen_random_uuid(), 'DisableInvite', 'CODE-' || n, '{"code":"X"}', '',
       now() - (n * interval '1 second'), sha256(n::text::bytea), sha256((n + 1)::text::bytea), 'kid',
       '\\x00'::bytea, 2
FROM generate_series((SELECT coalesce(max(sequence), 0) + 1 FROM admin.audit_log),
                     (SELECT coalesce(max(sequence), 0) FROM admin.audit_log) + $1::bigint) AS n
"""


def _hasher() -> PasswordHasher:
    """admin_svc's hasher: the service reads the same `MESH_ADMIN_ARGON2_*`."""
    own = AdminSettings()
    return PasswordHasher(own.argon2_time_cost, own.argon2_memory_kib, own.argon2_parallelism, type=Type.ID)


async def mint(settings: Settings, count: int) -> None:
    async with signed_channel(settings.service_addresses["invite_svc"], settings, "admin_svc") as channel:
        stub = invite_service_pb2_grpc.InviteServiceStub(channel)
        owner = invite_pb.Owner(admin_id=str(uuid.uuid4()))

        async def batch(size: int) -> None:
            request = invite_pb.MintCodesRequest(count=size, max_uses=1, owner=owner, request_id=uuid.uuid4().hex)
            await stub.MintCodes(request, timeout=600)

        sizes = [min(10_000, count - first) for first in range(0, count, 10_000)]
        for pair in range(0, len(sizes), 2):
            await asyncio.gather(*(batch(size) for size in sizes[pair : pair + 2]))


async def fill_audit(database_url: str, entries: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(_AUDIT_FILL, entries)
        await connection.execute("VACUUM ANALYZE admin.audit_log")
        await connection.execute("VACUUM ANALYZE invite.codes")
    finally:
        await connection.close()


async def admins(stub: admin_service_pb2_grpc.AdminServiceAsyncStub, count: int) -> list[tuple[str, pyotp.TOTP]]:
    """`count` viewers made through CreateAdmin, as meshctl makes them, four at a time."""
    made: list[tuple[str, pyotp.TOTP]] = []

    async def make() -> None:
        email = f"bench.{uuid.uuid4().hex[:12]}@bench.example"
        request = pb.CreateAdminRequest(email=email, password=PASSWORD, role=access_pb2.ADMIN_ROLE_VIEWER)
        created = await stub.CreateAdmin(request)
        totp = pyotp.parse_uri(created.totp_uri)
        assert isinstance(totp, pyotp.TOTP)
        made.append((email, totp))

    for _ in range(count // 4):
        await asyncio.gather(*(make() for _ in range(4)))
    return made


async def positions(database_url: str, count: int) -> dict[str, list[list[str]]]:
    """Where pages of each listing may start: rows anywhere in each table."""
    connection = await asyncpg.connect(database_url)
    try:
        codes = await connection.fetch(
            "SELECT create_time, id FROM invite.codes TABLESAMPLE SYSTEM (1) LIMIT $1", count
        )
        emails = await connection.fetch(
            "SELECT create_time, id FROM mail.emails TABLESAMPLE SYSTEM (1) LIMIT $1", count
        )
        entries = await connection.fetch("SELECT sequence FROM admin.audit_log TABLESAMPLE SYSTEM (5) LIMIT $1", count)
    finally:
        await connection.close()
    return {
        "ListInvites": [[row["create_time"].isoformat(), str(row["id"])] for row in codes],
        "ListEmails": [[row["create_time"].isoformat(), str(row["id"])] for row in emails],
        "ListAuditLogEntries": [[str(row["sequence"])] for row in entries],
    }


def deep_tokens(settings: Settings, where: dict[str, list[list[str]]]) -> dict[str, list[str]]:
    """The page tokens the owning services would have given a client that paged that far."""
    kek = load_kek(settings)
    made = {
        "ListInvites": (PageTokens(derive_key(kek, "invite page-token v1")), "codes None None None"),
        "ListEmails": (PageTokens(derive_key(kek, "mail page-token v1")), "None||None|None"),
        "ListAuditLogEntries": (PageTokens(derive_key(kek, "admin page-token v1")), "audit-log"),
    }
    return {name: [tokens.issue(position, query) for position in where[name]] for name, (tokens, query) in made.items()}


async def latencies(call: Callable[[], Awaitable[object]], count: int) -> list[float]:
    taken = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        taken.append((time.perf_counter() - started) * 1000)
    return taken


async def page_latencies(
    page: Callable[[str], Awaitable[object]], deep: list[str], count: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of `count` first pages, then of `count` pages from the `deep` tokens, one call
    at a time."""
    turns = itertools.cycle(random.sample(deep, len(deep)) or [""])
    return await latencies(lambda: page(""), count), await latencies(lambda: page(next(turns)), count)


async def _drain(call: Callable[[], Awaitable[object]], count: int) -> None:
    for _ in range(count):
        await call()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    variables = {
        "MESH_MAIL_SENDERS": "0",
        "MESH_ADMIN_LOGIN_FAILURES_PER_CLIENT": str(10**9),
    }
    async with running_services(settings, SERVICES, variables) as deployed:
        database_url = deployed.database_url
        assert database_url is not None
        started = time.perf_counter()
        await mint(deployed, args.codes)
        await fill_emails(database_url, args.emails)
        await fill_audit(database_url, args.entries)
        print(
            f"admin bench: {args.codes} codes, {args.emails} emails, {args.entries} audit entries "
            f"(filled in {time.perf_counter() - started:.0f} s)"
        )
        address = deployed.service_addresses["admin_svc"]
        async with (
            signed_channel(address, deployed, "meshctl") as operator,
            open_channel(address, deployed) as public,
        ):
            signing_in = admin_service_pb2_grpc.AdminServiceStub(public)
            made = await admins(admin_service_pb2_grpc.AdminServiceStub(operator), args.admins)
            pool, everyone = iter(made), itertools.cycle(made)

            async def sign_in() -> str:
                email, totp = next(pool)
                first = await signing_in.CreateSession(pb.CreateSessionRequest(email=email, password=PASSWORD))
                second = await signing_in.VerifySessionMfa(
                    pb.VerifySessionMfaRequest(mfa_token=first.mfa_token, totp_code=totp.now())
                )
                return second.access_token

            bearer = (("authorization", f"Bearer {await sign_in()}"),)
            tokens = deep_tokens(deployed, await positions(database_url, args.pages))
            lists: dict[str, Callable[[str], Awaitable[object]]] = {
                "ListCampaigns": lambda token: signing_in.ListCampaigns(
                    pb.ListCampaignsRequest(page_size=PAGE, page_token=token), metadata=bearer
                ),
                "ListInvites": lambda token: signing_in.ListInvites(
                    pb.ListInvitesRequest(page_size=PAGE, page_token=token), metadata=bearer
                ),
                "ListEmails": lambda token: signing_in.ListEmails(
                    pb.ListEmailsRequest(page_size=PAGE, page_token=token), metadata=bearer
                ),
                "ListAuditLogEntries": lambda token: signing_in.ListAuditLogEntries(
                    pb.ListAuditLogEntriesRequest(page_size=PAGE, page_token=token), metadata=bearer
                ),
            }

            async def first_step() -> None:
                # Spends nothing an admin has: the MFA token just lapses.
                email, _ = next(everyone)
                await signing_in.CreateSession(pb.CreateSessionRequest(email=email, password=PASSWORD))

            async def second_steps(count: int) -> float:
                """VerifySessionMfa alone, per second, for `count` admins whose first step is done."""
                ready = []
                for _ in range(count):
                    email, totp = next(pool)
                    first = await signing_in.CreateSession(pb.CreateSessionRequest(email=email, password=PASSWORD))
                    ready.append((first.mfa_token, totp.now()))
                steps = iter(ready)

                async def second_step() -> None:
                    token, code = next(steps)
                    await signing_in.VerifySessionMfa(pb.VerifySessionMfaRequest(mfa_token=token, totp_code=code))

                each = count // args.concurrency
                started = time.perf_counter()
                await asyncio.gather(*(_drain(second_step, each) for _ in range(args.concurrency)))
                return float(each * args.concurrency / (time.perf_counter() - started))

            rates: dict[str, list[float]] = {"hash": [], "sign-in": [], "first step": [], "second step": []}
            taken: dict[str, list[float]] = {f"{name} {where}": [] for name in lists for where in ("first", "deep")}
            for _ in range(args.rounds):
                rates["hash"].append(await asyncio.to_thread(hashes_per_second, _hasher(), args.seconds))
                rates["sign-in"].append(await calls_per_second(sign_in, args.seconds, args.concurrency))
                rates["first step"].append(await calls_per_second(first_step, args.seconds, args.concurrency))
                rates["second step"].append(await second_steps(args.second_steps))
                for name, page in lists.items():
                    first, deep = await page_latencies(page, tokens.get(name, [""]), args.pages)
                    taken[f"{name} first"] += first
                    taken[f"{name} deep"] += deep
    _report(args, rates, taken)


def _report(args: argparse.Namespace, rates: dict[str, list[float]], taken: dict[str, list[float]]) -> None:
    hashes, signed = rates["hash"], rates["sign-in"]
    ratios = [one / other for one, other in zip(signed, hashes, strict=True)]
    print(f"argon2id hashes/s median {median(hashes):.1f} (rounds {listed(hashes, 1)})")
    first, second = rates["first step"], rates["second step"]
    firsts = [one / other for one, other in zip(first, hashes, strict=True)]
    print(
        f"CreateSession alone/s median {median(first):.1f}; ratio to hash rate median {median(firsts):.2f} "
        f"(rounds {listed(firsts, 2)})"
    )
    print(
        f"VerifySessionMfa alone/s median {median(second):.0f} (rounds {listed(second)}): "
        f"{1000 / median(second):.1f} ms of the machine per second step"
    )
    bound = [1 / (1 / one + 1 / other) / hashed for one, other, hashed in zip(first, second, hashes, strict=True)]
    print(f"both steps as the sum of each alone, ratio to hash rate median {median(bound):.2f}")
    print(
        f"admin sign-ins/s (both steps) at {args.concurrency} clients median {median(signed):.1f}; "
        f"ratio to hash rate median {median(ratios):.2f} (rounds {listed(ratios, 2)})   target >= 0.80"
    )
    baseline = median(taken["ListCampaigns first"])
    for name, values in taken.items():
        if name.startswith("ListCampaigns"):
            continue
        print(
            f"{name:<26} page of {PAGE}: median {median(values):6.1f} ms  p99 {p99(values):6.1f} ms  "
            f"median / ListCampaigns {median(values) / baseline:5.2f}   target p99 <= {TARGET_MS:.0f} ms"
        )
    print(f"ListCampaigns (baseline)   page of {PAGE}: median {baseline:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--emails", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--admins", type=int, default=2000, help="each signs in once")
    parser.add_argument("--second-steps", type=int, default=160, help="VerifySessionMfa calls timed per round")
    parser.add_argument("--pages", type=int, default=200, help="pages per listing, first and deep, per round")
    args = parser.parse_args()
    with backends() as settings:
        uvloop.run(measure(args, settings))


if __name__ == "__main__":
    main()
