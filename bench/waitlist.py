"""The waitlist at a million people waiting: a person's place (`GetMyWaitlistEntry`) and joins,
against the framework's own ceiling, on the real invite_svc (PostgreSQL, Redis, signatures).

A million confirmed entries are written straight into PostgreSQL (as a day of a launch would
leave them), then the server starts and its catch-up builds the places index in Redis from them
(timed). Each round then measures, back to back: a signed no-op RPC on the same server (the
ceiling), places of random people (each call's latency kept), and joins of new people (each
writes its entry and its mail to the outbox in one transaction, which the relay hands to a
mail_svc in a process of its own).

    .venv/bin/python -m bench.waitlist [--rounds 3] [--seconds 4] [--concurrency 64] [--people 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid

import asyncpg
import grpc
import redis.asyncio as aioredis
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc

from bench.harness import (
    calls_per_second,
    listed,
    median,
    percentile,
    run,
    running_services,
    server_process,
    signed_channel,
    timed_calls,
)
from bench.invites import add_with_no_op
from invite_svc.sealing import WaitlistLinks
from mesh.keys import load_kek
from mesh.services import INVITE
from mesh.settings import Settings

SAMPLED = 2000
PLACE_CONCURRENCY = 4
# Every join here comes from this one process.
SERVER = {"MESH_INVITE_WAITLIST_JOINS_PER_HOUR": "1000000000"}
# mail_svc takes the joins' mails from invite_svc's outbox and queues them; nothing sends them.
MAIL = {"MESH_MAIL_SENDERS": "0"}


async def seed(database_url: str, people: int) -> list[uuid.UUID]:
    """`people` confirmed entries in join order; answers a sample of their ids."""
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(
            """
            INSERT INTO invite.waitlist
                (id, seq, email, canonical_email, state, rank_key, referral_code, create_time, confirm_time, rank_time)
            SELECT gen_random_uuid(), g, 'p' || g || '@seed.example', 'p' || g || '@seed.example', 2, 2 * g,
                   'seed' || g, now() - interval '1 day', now() - interval '1 day', now() - interval '1 day'
            FROM generate_series(1, $1::bigint) AS g
            """,
            people,
        )
        await connection.execute("SELECT setval(pg_get_serial_sequence('invite.waitlist', 'seq'), $1::bigint)", people)
        await connection.execute("ANALYZE invite.waitlist")
        rows = await connection.fetch("SELECT id FROM invite.waitlist TABLESAMPLE SYSTEM (1) LIMIT $1", SAMPLED)
        return [row["id"] for row in rows]
    finally:
        await connection.close()


async def index_built(settings: Settings, people: int) -> float:
    """Seconds until the places index holds `people` and is marked caught up, so that it answers
    places (the server's catch-up builds it)."""
    client = aioredis.from_url(str(settings.redis_url))
    started = time.perf_counter()
    try:
        caught_up = "invite:{waitlist}:places-synced"
        # A loop, not an event: it is another process's work.
        while not await client.exists(caught_up) or await client.zcard("invite:{waitlist}:places") < people:  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()
    return time.perf_counter() - started


async def drained(database_url: str) -> None:
    """Waits until the joins' mails have left the outbox: their delivery is the joins' work, and
    must not run into the next measurement."""
    connection = await asyncpg.connect(database_url)
    try:
        query = "SELECT count(*) FROM invite.outbox WHERE deliver_time IS NULL AND give_up_time IS NULL"
        while await connection.fetchval(query):  # noqa: ASYNC110 - another process's work
            await asyncio.sleep(0.2)
    finally:
        await connection.close()


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    sampled = await seed(str(settings.database_url), args.people)
    links = WaitlistLinks(load_kek(settings))
    tokens = [links.token(entry_id) for entry_id in sampled]
    async with (
        running_services(settings, ["mail_svc"], MAIL) as deployed,
        server_process("bench.waitlist", deployed, SERVER) as served,
        signed_channel(served.address, settings, "admin_svc") as admin_channel,
        grpc.aio.insecure_channel(served.address) as public_channel,
    ):
        build = await index_built(settings, args.people)
        admin = invite_service_pb2_grpc.InviteServiceStub(admin_channel)
        public = invite_service_pb2_grpc.InviteServiceStub(public_channel)

        async def no_op() -> object:
            return await admin.GetReferralTree(pb.GetReferralTreeRequest())

        async def place() -> object:
            token = random.choice(tokens)  # noqa: S311 - load spread, not a secret
            return await public.GetMyWaitlistEntry(pb.GetMyWaitlistEntryRequest(token=token))

        async def join() -> object:
            return await public.JoinWaitlist(pb.JoinWaitlistRequest(email=f"{uuid.uuid4().hex}@example.com"))

        for call in (no_op, place, join):
            await calls_per_second(call, 1.0, args.concurrency)
        await drained(str(settings.database_url))
        ceilings, places, p50s, p99s, joins, no_op_cpu, join_cpu = [], [], [], [], [], [], []
        for _ in range(args.rounds):
            used = served.cpu_seconds()
            ceilings.append(await calls_per_second(no_op, args.seconds, args.concurrency))
            no_op_cpu.append((served.cpu_seconds() - used) / (ceilings[-1] * args.seconds) * 1000)
            rate, took = await timed_calls(place, args.seconds, PLACE_CONCURRENCY)
            places.append(rate)
            p50s.append(percentile(took, 0.50) * 1000)
            p99s.append(percentile(took, 0.99) * 1000)
            used = served.cpu_seconds()
            joins.append(await calls_per_second(join, args.seconds, args.concurrency))
            await drained(str(settings.database_url))
            # invite_svc's whole cost of a join: the call, and its relay handing the mail on.
            join_cpu.append((served.cpu_seconds() - used) / (joins[-1] * args.seconds) * 1000)
        answered = await public.GetMyWaitlistEntry(pb.GetMyWaitlistEntryRequest(token=tokens[0]))

    join_ratio = [j / c for j, c in zip(joins, ceilings, strict=True)]
    cpu_ratio = [n / j for n, j in zip(no_op_cpu, join_cpu, strict=True)]
    print(
        f"waitlist bench: {args.people:,} waiting, {args.rounds} rounds x {args.seconds:.1f} s each,"
        f" {args.concurrency} concurrent clients ({PLACE_CONCURRENCY} for places)"
    )
    print(f"places index built from PostgreSQL in {build:.1f} s; a sampled place: #{answered.entry.position:,}")
    print(f"no-op RPCs/s (ceiling)     median {median(ceilings):7.0f}   rounds {listed(ceilings)}")
    print(f"places/s                   median {median(places):7.0f}   rounds {listed(places)}")
    print(f"place latency p50 ms       median {median(p50s):7.2f}   rounds {listed(p50s, 2)}")
    print(f"place latency p99 ms       median {median(p99s):7.2f}   rounds {listed(p99s, 2)}   target <= 20")
    print(f"joins/s                    median {median(joins):7.0f}   rounds {listed(joins)}")
    print(
        f"joins / ceiling            median {median(join_ratio):.2f}   rounds {listed(join_ratio, 2)}   target >= 0.50"
    )
    print(f"invite_svc CPU ms per no-op median {median(no_op_cpu):6.3f}   rounds {listed(no_op_cpu, 3)}")
    print(f"invite_svc CPU ms per join  median {median(join_cpu):6.3f}   rounds {listed(join_cpu, 3)}")
    print(f"no-op CPU / join CPU        median {median(cpu_ratio):.2f}   rounds {listed(cpu_ratio, 2)}")


def main() -> None:
    run(
        __doc__,
        (3, 4.0, 64),
        INVITE,
        add_with_no_op,
        measure,
        lambda parser: parser.add_argument("--people", type=int, default=1_000_000),
    )


if __name__ == "__main__":
    main()
