"""mail_svc's methods over real gRPC: bad input refused with field violations, the email log read
with keyset pages and masked bodies, a day's stats in a time zone, and signed delivery events
that suppress an address."""

from __future__ import annotations

import datetime
import json
import random
import time
import uuid
import zoneinfo
from typing import cast

import asyncpg
import grpc
import pytest
from invitemesh.mail.v1 import mail_service_pb2 as pb

from mail_svc.domain import EmailStatus
from mail_svc.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, TOLERANCE, signature
from mesh.errors import error_info, field_violations
from tests.conftest import eventually
from tests.integration.mail_svc.conftest import WEBHOOK_SECRET, Mail, someone
from tests.integration.mail_svc.relay import ScriptedRelay


async def _refusal(call: object) -> tuple[grpc.StatusCode, str, list[str]]:
    """The refusal's code, reason and the fields its violations name."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    info = error_info(raised.value)
    return raised.value.code(), info.reason if info else "", [v.field for v in field_violations(raised.value)]


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"template": pb.EMAIL_TEMPLATE_UNSPECIFIED}, "template"),
        ({"to": "not an address"}, "to"),
        ({"to": "ada@"}, "to"),
        ({"to": "zoë@example.com"}, "to"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"variables": {}}, "variables[code]"),
        ({"variables": {"code": "123456", "colour": "red"}}, "variables[colour]"),
        ({"variables": {"code": "<script>"}}, "variables[code]"),
        (
            {"template": pb.EMAIL_TEMPLATE_PASSWORD_RESET, "variables": {"reset_url": "javascript:alert(1)"}},
            "variables[reset_url]",
        ),
    ],
)
async def test_bad_input_is_refused_with_the_field_named_and_nothing_is_logged(
    mail: Mail, request_fields: dict[str, object], field: str
) -> None:
    request = pb.SendEmailRequest(
        template=pb.EMAIL_TEMPLATE_VERIFICATION, to=someone(), variables={"code": "123456"}, idempotency_key="k"
    )
    key = uuid.uuid4().hex
    request.idempotency_key = key
    for name, value in request_fields.items():
        if name == "variables":
            request.ClearField("variables")
            request.variables.update(cast(dict[str, str], value))
        else:
            setattr(request, name, value)

    code, reason, violations = await _refusal(mail.auth.SendEmail(request))

    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert field in violations
    connection = await asyncpg.connect(mail.database_url)
    try:
        assert await connection.fetchval("SELECT count(*) FROM mail.emails WHERE idempotency_key = $1", key) == 0
    finally:
        await connection.close()


async def test_a_batch_with_one_bad_request_is_refused_whole_naming_it_and_logs_nothing(mail: Mail) -> None:
    keys = [uuid.uuid4().hex for _ in range(3)]
    requests = [
        pb.SendEmailRequest(
            template=pb.EMAIL_TEMPLATE_VERIFICATION, to=someone(), variables={"code": "123456"}, idempotency_key=key
        )
        for key in keys
    ]
    requests[1].to = "not an address"

    refused = await _refusal(mail.auth.BatchSendEmails(pb.BatchSendEmailsRequest(requests=requests)))
    too_many = await _refusal(mail.auth.BatchSendEmails(pb.BatchSendEmailsRequest(requests=requests[:1] * 101)))
    empty = await _refusal(mail.auth.BatchSendEmails(pb.BatchSendEmailsRequest()))

    assert refused == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT", ["requests[1].to"])
    assert too_many[2] == empty[2] == ["requests"]
    connection = await asyncpg.connect(mail.database_url)
    try:
        logged = "SELECT count(*) FROM mail.emails WHERE idempotency_key = ANY($1)"
        assert await connection.fetchval(logged, keys) == 0
    finally:
        await connection.close()


async def test_an_internationalised_domain_is_sent_in_ascii(mail: Mail) -> None:
    email = await mail.send(to="Ada@Bücher.example")

    assert email.to == "Ada@xn--bcher-kva.example"


async def test_only_the_declared_services_may_send(mail: Mail) -> None:
    request = pb.SendEmailRequest(
        template=pb.EMAIL_TEMPLATE_VERIFICATION, to=someone(), variables={"code": "123456"}, idempotency_key="k"
    )
    assert (await _refusal(mail.anyone.SendEmail(request)))[:2] == (
        grpc.StatusCode.UNAUTHENTICATED,
        "CALL_SIGNATURE_MISSING",
    )


async def test_the_log_masks_secrets_and_the_message_carries_them(mail: Mail, relay: ScriptedRelay) -> None:
    codes = await mail.send(template=pb.EMAIL_TEMPLATE_INVITE_CODES, variables={"codes": "ABCD-EFGH-J\nKLMN-PQRS-T"})
    reset = await mail.send(
        template=pb.EMAIL_TEMPLATE_PASSWORD_RESET,
        variables={"reset_url": "https://app.example/reset?token=s3cr3t-t0k3n"},
    )

    for email, secrets_ in ((codes, ("ABCD-EFGH-J", "KLMN-PQRS-T")), (reset, ("s3cr3t-t0k3n",))):
        listed = (await mail.admin.ListEmails(pb.ListEmailsRequest(to=email.to))).emails
        assert [e.id for e in listed] == [email.id]
        assert "••••••" in listed[0].masked_text_body
        assert not any(secret in listed[0].masked_text_body or secret in email.masked_text_body for secret in secrets_)


async def _insert_log(
    database_url: str,
    to: str,
    times: list[datetime.datetime],
    send_time: datetime.datetime | None = None,
    fail_time: datetime.datetime | None = None,
) -> list[str]:
    """Sent emails straight into the log (fast), created at `times`."""
    connection = await asyncpg.connect(database_url)
    ids = [uuid.uuid4() for _ in times]
    try:
        await connection.executemany(
            """INSERT INTO mail.emails (id, idempotency_key, template, recipient, subject, message_id, masked_text,
                                        status, create_time, send_time, fail_time)
               VALUES ($1, $2, 1, $3, 'subject', $4, 'masked', 3, $5, $6, $7)""",
            [
                (email_id, uuid.uuid4().hex, to, f"<{email_id}@tests>", moment, send_time, fail_time)
                for email_id, moment in zip(ids, times, strict=True)
            ],
        )
    finally:
        await connection.close()
    return [str(email_id) for email_id in ids]


async def test_pages_skip_and_repeat_nothing_while_emails_are_logged_between_them(mail: Mail) -> None:
    to = someone()
    base = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    # 1000 rows, many sharing a timestamp so the id breaks ties.
    times = [base + datetime.timedelta(milliseconds=random.randrange(300)) for _ in range(1000)]
    original = set(await _insert_log(mail.database_url, to, times))

    seen: list[str] = []
    token = ""
    while True:
        page = await mail.admin.ListEmails(pb.ListEmailsRequest(to=to, page_size=37, page_token=token))
        seen += [email.id for email in page.emails]
        # Newer and same-instant emails logged between pages must not shift what comes next.
        await _insert_log(mail.database_url, to, [datetime.datetime.now(datetime.UTC), random.choice(times)])
        token = page.next_page_token
        if not token:
            break

    from_original = [email_id for email_id in seen if email_id in original]
    assert len(from_original) == len(set(from_original)) == 1000
    assert len(seen) == len(set(seen))


async def test_a_page_token_is_tamper_proof_and_bound_to_its_filter(mail: Mail) -> None:
    to = someone()
    await _insert_log(mail.database_url, to, [datetime.datetime.now(datetime.UTC)] * 3)
    token = (await mail.admin.ListEmails(pb.ListEmailsRequest(to=to, page_size=1))).next_page_token
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]

    for request in (
        pb.ListEmailsRequest(to=to, page_size=1, page_token=tampered),
        pb.ListEmailsRequest(to=someone(), page_size=1, page_token=token),
        pb.ListEmailsRequest(page_size=1, page_token="not-a-token"),
    ):
        code, _, violations = await _refusal(mail.admin.ListEmails(request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in violations


async def _a_day_without_emails(database_url: str) -> datetime.date:
    """A past day with no email created, sent, failed or bounced within two days of it: runs
    against the same database left theirs on other days, and any next to this one would count."""
    connection = await asyncpg.connect(database_url)
    try:
        while True:
            day = datetime.date(1990 + random.randrange(30), 3, 1 + random.randrange(27))
            start = datetime.datetime.combine(day - datetime.timedelta(days=2), datetime.time(), datetime.UTC)
            end = start + datetime.timedelta(days=5)
            near = await connection.fetchval(
                """SELECT count(*) FROM mail.emails WHERE create_time BETWEEN $1 AND $2 OR send_time BETWEEN $1 AND $2
                   OR fail_time BETWEEN $1 AND $2 OR bounce_time BETWEEN $1 AND $2""",
                start,
                end,
            )
            if near == 0:
                return day
    finally:
        await connection.close()


async def test_a_days_stats_count_that_local_day_only(mail: Mail) -> None:
    zone = zoneinfo.ZoneInfo("America/New_York")
    day = await _a_day_without_emails(mail.database_url)
    midnight = datetime.datetime.combine(day, datetime.time(), zone)
    inside = [midnight + datetime.timedelta(minutes=1), midnight + datetime.timedelta(hours=23, minutes=59)]
    outside = [midnight - datetime.timedelta(minutes=1), midnight + datetime.timedelta(hours=24)]
    to = someone()
    await _insert_log(mail.database_url, to, inside + outside, send_time=inside[0])
    await _insert_log(mail.database_url, to, [inside[1]], fail_time=inside[1])

    stats = (await mail.admin.GetEmailStats(pb.GetEmailStatsRequest(day=day.isoformat(), time_zone=zone.key))).stats

    assert (stats.day, stats.created, stats.sent, stats.failed, stats.bounced) == (day.isoformat(), 3, 4, 1, 0)
    utc = (await mail.admin.GetEmailStats(pb.GetEmailStatsRequest(day=day.isoformat()))).stats
    assert utc.created != stats.created or utc.sent != stats.sent
    for request, field in (
        (pb.GetEmailStatsRequest(day="03/01/1999"), "day"),
        (pb.GetEmailStatsRequest(time_zone="Mars/Olympus"), "time_zone"),
    ):
        assert field in (await _refusal(mail.admin.GetEmailStats(request)))[2]


SignedEvent = tuple[pb.ReportDeliveryEventRequest, tuple[tuple[str, str], ...]]


def _signed(event: dict[str, str], secret: str = WEBHOOK_SECRET, skew: float = 0) -> SignedEvent:
    body = json.dumps(event).encode()
    timestamp = str(int(time.time() + skew))
    metadata = ((TIMESTAMP_HEADER, timestamp), (SIGNATURE_HEADER, signature(secret.encode(), timestamp, body)))
    request = pb.ReportDeliveryEventRequest()
    request.body.content_type = "application/json"
    request.body.data = body
    return request, metadata


async def _send_signed(mail: Mail, signed: SignedEvent) -> object:
    request, metadata = signed
    return await mail.anyone.ReportDeliveryEvent(request, metadata=metadata)


async def _report(mail: Mail, event: dict[str, str], secret: str = WEBHOOK_SECRET, skew: float = 0) -> object:
    return await _send_signed(mail, _signed(event, secret, skew))


async def test_a_hard_bounce_suppresses_the_address_and_a_later_email_to_it_is_not_sent(
    mail: Mail, relay: ScriptedRelay
) -> None:
    to = someone()
    first = await mail.send(to=to)

    async def sent() -> bool:
        return await mail.status(first.id) is EmailStatus.SENT

    await eventually(sent, what="the first email to be sent")

    bounce = {"event": "bounced", "message_id": f"<{first.id}@tests.invitemesh>", "recipient": to, "bounce": "hard"}
    await _report(mail, bounce)

    row = await mail.row(first.id)
    assert (row["status"], row["bounce_time"] is not None) == (EmailStatus.BOUNCED, True)
    later = await mail.send(to=to.upper())
    assert EmailStatus(later.status) is EmailStatus.SUPPRESSED
    assert (await mail.row(later.id))["sealed_message"] is None


async def test_a_soft_bounce_suppresses_nothing_and_a_complaint_does(mail: Mail) -> None:
    soft, complaining = someone(), someone()
    await _report(mail, {"event": "bounced", "message_id": "<x@y>", "recipient": soft, "bounce": "soft"})
    await _report(mail, {"event": "complained", "message_id": "<x@y>", "recipient": complaining})

    assert EmailStatus((await mail.send(to=soft)).status) is EmailStatus.PENDING
    assert EmailStatus((await mail.send(to=complaining)).status) is EmailStatus.SUPPRESSED


@pytest.mark.parametrize(
    ("secret", "skew", "event", "expected"),
    [
        (
            "another secret",
            0,
            {"event": "delivered", "message_id": "<a@b>", "recipient": "a@b.example"},
            "MAIL_EVENT_SIGNATURE_INVALID",
        ),
        (
            WEBHOOK_SECRET,
            -(TOLERANCE + 2),
            {"event": "delivered", "message_id": "<a@b>", "recipient": "a@b.example"},
            "MAIL_EVENT_STALE",
        ),
        (
            WEBHOOK_SECRET,
            TOLERANCE + 2,
            {"event": "delivered", "message_id": "<a@b>", "recipient": "a@b.example"},
            "MAIL_EVENT_STALE",
        ),
        (
            WEBHOOK_SECRET,
            0,
            {"event": "bounced", "message_id": "<a@b>", "recipient": "a@b.example"},
            "MAIL_EVENT_MALFORMED",
        ),
        (
            WEBHOOK_SECRET,
            0,
            {"event": "exploded", "message_id": "<a@b>", "recipient": "a@b.example"},
            "MAIL_EVENT_MALFORMED",
        ),
    ],
)
async def test_delivery_events_are_refused_when_forged_stale_or_malformed(
    mail: Mail, secret: str, skew: float, event: dict[str, str], expected: str
) -> None:
    code, reason, _ = await _refusal(_report(mail, event, secret, skew))

    assert reason == expected
    assert code == (
        grpc.StatusCode.INVALID_ARGUMENT if expected == "MAIL_EVENT_MALFORMED" else grpc.StatusCode.UNAUTHENTICATED
    )


async def test_a_valid_delivery_event_is_answered(mail: Mail) -> None:
    assert await _report(mail, {"event": "delivered", "message_id": "<a@b>", "recipient": someone()}) == (
        pb.ReportDeliveryEventResponse()
    )


async def _lift_suppression(mail: Mail, address: str) -> None:
    connection = await asyncpg.connect(mail.database_url)
    try:
        await connection.execute("DELETE FROM mail.suppressions WHERE address = $1", address)
    finally:
        await connection.close()


async def test_a_replayed_event_is_answered_alike_and_changes_nothing(mail: Mail) -> None:
    """An admin lifted a complaint's suppression; the complaint, sent again byte for byte inside its
    window, must not put it back (security issue 14.4)."""
    address = someone()
    complaint = _signed({"event": "complained", "message_id": "<x@y>", "recipient": address})
    await _send_signed(mail, complaint)
    assert EmailStatus((await mail.send(to=address)).status) is EmailStatus.SUPPRESSED
    await _lift_suppression(mail, address)

    replayed = await _send_signed(mail, complaint)

    assert replayed == pb.ReportDeliveryEventResponse()
    assert EmailStatus((await mail.send(to=address)).status) is EmailStatus.PENDING


async def test_an_event_with_the_providers_id_is_applied_once(mail: Mail) -> None:
    address, event_id = someone(), uuid.uuid4().hex
    await _report(mail, {"event": "delivered", "message_id": "<x@y>", "recipient": address, "id": event_id})

    again = {"event": "complained", "message_id": "<x@y>", "recipient": address, "id": event_id}
    await _report(mail, again, skew=-1)

    assert EmailStatus((await mail.send(to=address)).status) is EmailStatus.PENDING
