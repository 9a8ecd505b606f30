"""GetEmailStats on a big email log: one day's counts out of `--rows` emails (10 M by default,
spread over 100 days), with the indexes the schema has, against the same query planned without
them (sequential scans), in the same run. The log is filled straight with SQL.

    .venv/bin/python -m bench.mail_stats [--rows 10000000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import asyncpg
import uvloop
from sqlalchemy.ext.asyncio import create_async_engine

from bench.harness import backends
from mail_svc.store import MailStore
from mesh.db import DriverPool, asyncpg_url, create_engine
from mesh.services import MAIL
from mesh.settings import Settings

DAYS = 100
FIRST_DAY = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
CHUNK = 1_000_000
# Every tenth email failed, every fiftieth bounced, every hundredth was suppressed; the rest were sent.
_FILL = """
INSERT INTO mail.emails (id, idempotency_key, template, recipient, subject, message_id, masked_text, status,
                         create_time, send_time, fail_time, bounce_time)
SELECT gen_random_uuid(), 'bench-' || n, 1, 'user' || (n % 100000) || '@example.com', 's', '<' || n || '@bench>', 'm',
       CASE WHEN n % 100 = 0 THEN 6 WHEN n % 10 = 0 THEN 4 WHEN n % 50 = 0 THEN 5 ELSE 3 END,
       $1::timestamptz + (n * $2::float8) * interval '1 second',
       CASE WHEN n % 10 <> 0 AND n % 100 <> 0 THEN $1::timestamptz + (n * $2::float8 + 5) * interval '1 second' END,
       CASE WHEN n % 10 = 0 AND n % 100 <> 0 THEN $1::timestamptz + (n * $2::float8 + 60) * interval '1 second' END,
       CASE WHEN n % 50 = 0 AND n % 100 <> 0 THEN $1::timestamptz + (n * $2::float8 + 600) * interval '1 second' END
FROM generate_series($3::bigint, $4::bigint) AS n
"""


async def fill(database_url: str, rows: int) -> float:
    seconds_apart = DAYS * 86400 / rows
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        for first in range(0, rows, CHUNK):
            await connection.execute(_FILL, FIRST_DAY, seconds_apart, first, min(rows, first + CHUNK) - 1)
        await connection.execute("VACUUM ANALYZE mail.emails")
    finally:
        await connection.close()
    return time.perf_counter() - started


async def timed(store: MailStore, day: datetime.datetime, repeats: int) -> tuple[float, object]:
    times, counts = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        counts = await store.stats(day, day + datetime.timedelta(days=1))
        times.append(time.perf_counter() - started)
    return statistics.median(times), counts


async def measure(args: argparse.Namespace, settings: Settings) -> None:
    assert settings.database_url
    filled = await fill(settings.database_url, args.rows)
    driver = DriverPool(settings, MAIL.schema, "bench")
    indexed = create_engine(settings, MAIL.schema, "bench")
    scanning = create_async_engine(
        asyncpg_url(settings.database_url),
        connect_args={
            "server_settings": {"enable_indexscan": "off", "enable_indexonlyscan": "off", "enable_bitmapscan": "off"}
        },
    )
    day = FIRST_DAY + datetime.timedelta(days=DAYS // 2)
    try:
        with_indexes, counts = await timed(MailStore(indexed, driver), day, args.repeats)
        without, same = await timed(MailStore(scanning, driver), day, args.repeats)
    finally:
        for engine in (indexed, scanning):
            await engine.dispose()
        await driver.close()
    assert counts == same
    print(f"mail stats bench: {args.rows} emails over {DAYS} days (filled in {filled:.0f} s), one day's counts")
    print(f"GetEmailStats query, indexes            median {with_indexes * 1000:8.1f} ms   {counts}")
    print(f"same query, sequential scans            median {without * 1000:8.1f} ms")
    print(f"indexed / sequential                    {with_indexes / without:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with backends() as settings:
        uvloop.run(measure(args, settings))


if __name__ == "__main__":
    main()
