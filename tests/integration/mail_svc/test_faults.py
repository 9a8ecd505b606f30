"""Faults lose no email and send none twice: a failed XADD, a Redis that comes back without its
data, and a sender process killed with SIGKILL halfway through a batch."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis.asyncio as aioredis

from mail_svc.domain import EmailStatus
from meshctl.embedded import EmbeddedRedis
from tests.conftest import eventually
from tests.integration.mail_svc.conftest import Mail, mail_service, mail_trust
from tests.integration.mail_svc.relay import ScriptedRelay
from tests.integration.mesh.trust_fixtures import Trust


async def _all_sent(mail: Mail, email_ids: list[str], within: float = 30.0) -> None:
    async def sent() -> bool:
        return all([await mail.status(email_id) is EmailStatus.SENT for email_id in email_ids])

    await eventually(sent, within=within, what="every email to be sent")


def _message_id(email_id: str) -> str:
    return f"<{email_id}@tests.invitemesh>"


async def test_an_email_whose_xadd_failed_is_enqueued_by_the_sweeper(mail: Mail, relay: ScriptedRelay) -> None:
    redis, stream = mail.server.runtime.redis, mail.own.stream
    await redis.set(stream, "not a stream")  # every XADD to it fails with WRONGTYPE

    email = await mail.send()

    assert EmailStatus(email.status) is EmailStatus.PENDING
    await redis.delete(stream)
    await _all_sent(mail, [email.id])
    assert relay.deliveries(_message_id(email.id)) == 1


async def test_redis_coming_back_without_its_data_loses_no_email(
    tmp_path: Path, migrated_database_url: str, own_redis: EmbeddedRedis, relay: ScriptedRelay
) -> None:
    trust = mail_trust(tmp_path, migrated_database_url, own_redis.url, relay.url)
    async with mail_service(trust, migrated_database_url) as mail:
        relay.stop()  # the emails wait in the stream
        emails = [await mail.send() for _ in range(5)]
        before = aioredis.Redis.from_url(own_redis.url)
        await before.set("test:lost-with-the-data", 1)
        await before.aclose()

        own_redis.stop()
        for leftover in own_redis.data_dir.rglob("*.aof*"):
            if leftover.is_file():
                leftover.unlink()
        own_redis.start()
        # The service recreates its stream at once, so a key only this test wrote shows the loss.
        fresh = aioredis.Redis.from_url(own_redis.url)
        assert await fresh.exists("test:lost-with-the-data") == 0
        await fresh.aclose()
        relay.start()

        await _all_sent(mail, [email.id for email in emails])
    assert all(relay.deliveries(_message_id(email.id)) == 1 for email in emails)


def _worker_env(trust: Trust) -> dict[str, str]:
    """The in-process service's settings, for a sender process of its own (4 senders, quiet)."""
    return {**os.environ, **trust.environment(), "MESH_MAIL_SENDERS": "4", "MESH_LOG_LEVEL": "WARNING"}


@contextmanager
def _sender_process(trust: Trust) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-m", "mail_svc.worker"], env=_worker_env(trust))
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=20)


async def test_a_sender_killed_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight(
    tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay
) -> None:
    trust = mail_trust(tmp_path, migrated_database_url, redis_url, relay.url, mail_senders=0, mail_smtp_timeout=0.5)
    relay.accept_delay = 0.02  # keeps emails in flight when the kill comes
    async with mail_service(trust, migrated_database_url) as mail:
        emails = [await mail.send() for _ in range(120)]
        with _sender_process(trust) as first:
            await relay.accepted_at_least(30)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        confirmed_before = {email.id for email in emails if await mail.status(email.id) is EmailStatus.SENT}
        assert len(confirmed_before) < len(emails)

        with _sender_process(trust):
            await _all_sent(mail, [email.id for email in emails], within=60)

    accepted = relay.accepted_ids()
    assert all(accepted[_message_id(email.id)] >= 1 for email in emails), "an email was lost"
    repeated = [email.id for email in emails if accepted[_message_id(email.id)] > 1]
    assert len(repeated) <= 4, "more emails repeated than the killed sender had in flight"
    assert not set(repeated) & confirmed_before, "an email recorded as sent was sent again"


async def test_a_stopping_sender_finishes_what_it_has_in_hand(
    tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay
) -> None:
    trust = mail_trust(tmp_path, migrated_database_url, redis_url, relay.url, mail_senders=0)
    relay.accept_delay = 0.05
    async with mail_service(trust, migrated_database_url) as mail:
        emails = [await mail.send() for _ in range(20)]
        with _sender_process(trust) as sender:
            await relay.accepted_at_least(2)
            sender.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(sender.wait, 20) == 0
        rows = [await mail.row(email.id) for email in emails]
    assert all(row["status"] in (EmailStatus.PENDING, EmailStatus.SENT) for row in rows), "a send was cut off"
