"""Delivery against a real SMTP relay that accepts, refuses, hangs or drops: every email ends
SENT or FAILED as the relay's answers say, none is lost and none is sent twice."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from pathlib import Path
from typing import cast

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from invitemesh.mail.v1 import mail_service_pb2 as pb

from mail_svc.domain import EmailStatus
from mail_svc.settings import MailSettings
from meshctl.probes import degraded
from tests.conftest import eventually
from tests.integration.mail_svc.conftest import Mail, mail_service, mail_trust, someone
from tests.integration.mail_svc.relay import Mode, ScriptedRelay


async def test_an_email_is_logged_then_sent_with_its_message_id(mail: Mail, relay: ScriptedRelay) -> None:
    email = await mail.send(code="482913")

    async def sent() -> bool:
        return await mail.status(email.id) is EmailStatus.SENT

    await eventually(sent, what="the email to be sent")
    (received,) = [r for r in relay.received if email.id in r.message_id]
    assert received.message_id == f"<{email.id}@tests.invitemesh>"
    assert "482913" in received.text
    row = await mail.row(email.id)
    assert row["sealed_message"] is None and row["send_time"] is not None and row["attempts"] == 1


async def _settled(mail: Mail, email_id: str, status: EmailStatus) -> None:
    async def reached() -> bool:
        return await mail.status(email_id) is status

    await eventually(reached, what=f"email {email_id} to be {status.name}")


async def _buried(mail: Mail) -> list[str]:
    dead = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await mail.server.runtime.redis.xrange(f"{mail.own.stream}.dead"),
    )
    return [fields[b"id"].decode() for _, fields in dead]


async def test_a_4xx_is_tried_again_with_backoff_and_fails_at_the_attempt_limit(
    mail: Mail, relay: ScriptedRelay
) -> None:
    relay.mode = Mode.SOFT_REFUSE
    email = await mail.send()

    await _settled(mail, email.id, EmailStatus.FAILED)

    row = await mail.row(email.id)
    assert relay.data_seen[f"<{email.id}@tests.invitemesh>"] == mail.own.max_attempts == 3
    assert row["attempts"] == 3 and row["last_error"].startswith("451")
    assert row["sealed_message"] is None and row["fail_time"] is not None
    assert email.id in await _buried(mail)
    assert relay.deliveries(f"<{email.id}@tests.invitemesh>") == 0


async def test_a_5xx_fails_at_once(mail: Mail, relay: ScriptedRelay) -> None:
    relay.mode = Mode.HARD_REFUSE
    email = await mail.send()

    await _settled(mail, email.id, EmailStatus.FAILED)

    row = await mail.row(email.id)
    assert (row["attempts"], row["last_error"][:3]) == (1, "554")
    assert relay.data_seen[f"<{email.id}@tests.invitemesh>"] == 1
    assert email.id in await _buried(mail)


async def test_a_refused_recipient_fails_at_once_and_the_connection_serves_the_next_email(
    mail: Mail, relay: ScriptedRelay
) -> None:
    relay.mode = Mode.REFUSE_RECIPIENT
    refused = await mail.send()
    await _settled(mail, refused.id, EmailStatus.FAILED)
    relay.mode = Mode.ACCEPT

    accepted = await mail.send()

    await _settled(mail, accepted.id, EmailStatus.SENT)
    assert (await mail.row(refused.id))["last_error"].startswith("550")


def _breaker_state(mail: Mail) -> float | None:
    return mail.server.metrics.registry.get_sample_value("mesh_breaker_state", {"breaker": "smtp"})


@pytest.mark.parametrize("outage", [Mode.DROP, Mode.HANG, "down"])
async def test_the_breaker_opens_while_the_relay_is_out_and_every_email_goes_out_after(
    mail: Mail, relay: ScriptedRelay, outage: Mode | str
) -> None:
    if outage == "down":
        relay.stop()
    else:
        assert isinstance(outage, Mode)
        relay.mode = outage
    emails = [await mail.send() for _ in range(6)]

    async def breaker_open() -> bool:
        return _breaker_state(mail) == 2

    await eventually(breaker_open, what="the SMTP breaker to open")
    assert await degraded(f"127.0.0.1:{mail.server.metrics_port}") == ["smtp breaker open"]  # as meshctl shows it
    # Nothing failed for it, and a waiting email has spent no attempt (one may be mid-try).
    rows = [await mail.row(email.id) for email in emails]
    assert {EmailStatus(row["status"]) for row in rows} <= {EmailStatus.PENDING, EmailStatus.SENDING}
    assert all(row["attempts"] == 0 for row in rows if row["status"] == EmailStatus.PENDING)

    if outage == "down":
        relay.start()
    relay.mode = Mode.ACCEPT
    for email in emails:
        await _settled(mail, email.id, EmailStatus.SENT)
    assert all(relay.deliveries(f"<{email.id}@tests.invitemesh>") == 1 for email in emails)
    assert _breaker_state(mail) == 0
    assert await degraded(f"127.0.0.1:{mail.server.metrics_port}") == []


async def test_the_same_idempotency_key_sends_once(mail: Mail, relay: ScriptedRelay) -> None:
    key = uuid.uuid4().hex
    to = someone()

    answers = await asyncio.gather(*(mail.send(to=to, key=key) for _ in range(5)))

    assert len({answer.id for answer in answers}) == 1
    first = answers[0]
    await _settled(mail, first.id, EmailStatus.SENT)
    # A later email is sent after anything the repeats could have queued: then count.
    later = await mail.send()
    await _settled(mail, later.id, EmailStatus.SENT)
    assert relay.deliveries(f"<{first.id}@tests.invitemesh>") == 1
    assert sum(1 for received in relay.received if received.recipient == to) == 1


def _verification(key: str, code: str) -> pb.SendEmailRequest:
    return pb.SendEmailRequest(
        template=pb.EMAIL_TEMPLATE_VERIFICATION, to=someone(), variables={"code": code}, idempotency_key=key
    )


async def test_a_batch_is_answered_in_order_and_each_of_its_emails_is_sent_once(
    mail: Mail, relay: ScriptedRelay
) -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    # The first key twice in one batch: the second use answers the first email.
    requests = [_verification(first, "111111"), _verification(second, "222222"), _verification(first, "333333")]
    batch = pb.BatchSendEmailsRequest(requests=requests)

    answered = (await mail.auth.BatchSendEmails(batch)).emails
    again = (await mail.auth.BatchSendEmails(batch)).emails

    assert [email.to for email in answered] == [requests[0].to, requests[1].to, requests[0].to]
    assert answered[2].id == answered[0].id
    assert [email.id for email in again] == [email.id for email in answered]
    for email in answered[:2]:
        await _settled(mail, email.id, EmailStatus.SENT)
    # A later email is sent after anything the repeats could have queued: then count.
    later = await mail.send()
    await _settled(mail, later.id, EmailStatus.SENT)
    assert [relay.deliveries(f"<{email.id}@tests.invitemesh>") for email in answered[:2]] == [1, 1]
    assert not [received for received in relay.received if "333333" in received.text]


async def test_the_service_stops_promptly_while_its_senders_are_busy_and_more_emails_wait(
    tmp_path: Path, migrated_database_url: str, redis_url: str, relay: ScriptedRelay
) -> None:
    trust = mail_trust(tmp_path, migrated_database_url, redis_url, relay.url, mail_senders=2)
    relay.accept_delay = 0.8  # slow but within the timeout: both senders busy, their inbox full
    async with mail_service(trust, migrated_database_url) as mail:
        emails = [await mail.send() for _ in range(20)]
        await relay.accepted_at_least(1)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 2 * trust.own(MailSettings).smtp_timeout + 5
    assert len(relay.accepted_ids()) < len(emails)


def _in(seconds: float) -> Timestamp:
    moment = Timestamp()
    moment.FromDatetime(datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds))
    return moment


async def test_an_email_whose_expiry_passes_while_the_relay_is_out_is_never_sent(
    mail: Mail, relay: ScriptedRelay
) -> None:
    """A verification code delayed by an outage past its 15 minutes is dead: no mail (issue 15.3)."""
    relay.stop()
    lasting, expiring = await mail.send(), await mail.send(expire_time=_in(1.5))

    await _settled(mail, expiring.id, EmailStatus.EXPIRED)
    relay.start()
    await _settled(mail, lasting.id, EmailStatus.SENT)

    assert relay.deliveries(f"<{expiring.id}@tests.invitemesh>") == 0
    row = await mail.row(expiring.id)
    assert row["sealed_message"] is None and row["send_time"] is None


async def test_an_email_that_arrives_expired_is_logged_expired_and_counted_not_sent(
    mail: Mail, relay: ScriptedRelay
) -> None:
    before = (await mail.admin.GetEmailStats(pb.GetEmailStatsRequest())).stats.expired

    email = await mail.send(expire_time=_in(-1))
    sent = await mail.send()

    assert EmailStatus(email.status) is EmailStatus.EXPIRED and email.HasField("expire_time")
    await _settled(mail, sent.id, EmailStatus.SENT)
    assert relay.deliveries(f"<{email.id}@tests.invitemesh>") == 0
    assert (await mail.admin.GetEmailStats(pb.GetEmailStatsRequest())).stats.expired == before + 1
