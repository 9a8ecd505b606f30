"""SQL of the `mail` schema: the email log, each email's way through PENDING → SENDING → SENT or
FAILED (and BOUNCED, SUPPRESSED or EXPIRED), and the suppression list. An email past its
`expire_time` is never claimed: the claim itself marks it EXPIRED, and a sweep marks the pending
ones nobody claims.

Every state change is one conditional UPDATE, so whichever sender, sweeper or replica gets there
first decides and the others see that they were late: an email is claimed by one sender at a
time (with a lease), marked handed over once its message left, and its attempts counted once.
The statements of every send run straight on asyncpg (mesh.db's driver path); reads and sweeps
go through the engine.

Longer than our usual module on purpose: the statements of the email's state machine sit side
by side, so that the conditions that let exactly one party win each change read together.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Integer,
    Interval,
    LargeBinary,
    SmallInteger,
    Text,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    null,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID, insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import BindParameter

from mail_svc.domain import DeliveryFailure, EmailStatus, FailureKind
from mail_svc.events import DeliveryEvent, EventKind
from mail_svc.models import emails, suppressions
from mail_svc.stream import Job
from mail_svc.templates import Template
from mesh.db import DriverPool, DriverStatement

UNCONFIRMED = "delivery unconfirmed: the sender stopped after handing the message to the relay"


@dataclass(frozen=True)
class NewEmail:
    id: uuid.UUID
    idempotency_key: str
    template: Template
    recipient: str
    subject: str
    message_id: str
    sealed_message: bytes
    masked_text: str
    expire_time: datetime.datetime | None = None
    requested_by: str = ""


@dataclass(frozen=True)
class EmailRecord:
    id: uuid.UUID
    template: Template
    recipient: str
    subject: str
    status: EmailStatus
    attempts: int
    last_error: str | None
    create_time: datetime.datetime
    send_time: datetime.datetime | None
    masked_text: str
    expire_time: datetime.datetime | None
    fail_time: datetime.datetime | None
    requested_by: str


@dataclass(frozen=True)
class DayStats:
    created: int
    sent: int
    failed: int
    bounced: int
    suppressed: int
    expired: int


@dataclass(frozen=True)
class EmailFilter:
    status: EmailStatus | None = None
    recipient: str | None = None
    start: datetime.datetime | None = None
    end: datetime.datetime | None = None


class MailStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._driver = driver

    async def log(self, news: Sequence[NewEmail]) -> list[tuple[EmailRecord, bool]]:
        """Each email as logged, in order, and whether this call logged it (False: its
        idempotency key had been used, by an earlier call or earlier in `news`). One atomic step."""
        rows = [
            {
                "id": new.id,
                "key": new.idempotency_key,
                "template": int(new.template),
                "recipient": new.recipient,
                "subject": new.subject,
                "message_id": new.message_id,
                "sealed": new.sealed_message,
                "masked": new.masked_text,
                "expire_time": new.expire_time,
                "requested_by": new.requested_by,
            }
            for new in news
        ]
        async with self._driver.connection() as connection:
            logged = {row["id"]: row for row in await _LOG.fetchmany(connection, rows)}
            missing = [new.idempotency_key for new in news if new.id not in logged]
            earlier = (
                {row["idempotency_key"]: row for row in await _BY_KEYS.fetch(connection, keys=missing)}
                if missing
                else {}
            )
        return [
            (_record(logged[new.id]), True) if new.id in logged else (_record(earlier[new.idempotency_key]), False)
            for new in news
        ]

    async def claim(self, email_id: uuid.UUID, lease: datetime.timedelta) -> int | None:
        """Takes a due email for one attempt, for at most `lease`, and answers which attempt it
        is; None if it is not this sender's to take (another has it, it is done, or it is not
        due yet) or it expired, which this marks. An email whose sender vanished before handing
        it over can be taken again once that lease ran out."""
        async with self._driver.connection() as connection:
            row = await _CLAIM.fetchrow(connection, id=email_id, lease=lease)
        if row is None or EmailStatus(row["status"]) is EmailStatus.EXPIRED:
            return None
        attempt: int = row["attempts"]
        return attempt

    async def expire_lapsed(self, batch: int) -> int:
        """Marks EXPIRED the pending emails past their expiry (one that waits for a retry, or
        whose stream entry was lost, is never claimed to find out)."""
        async with self._autocommit.connect() as connection:
            expired = await connection.execute(_EXPIRE_LAPSED, {"batch": batch})
            return expired.rowcount

    async def handed_over(self, email_id: uuid.UUID) -> None:
        """Its message has left: from now on it may have been accepted, so it is never sent again."""
        async with self._driver.connection() as connection:
            await _HANDED_OVER.fetchval(connection, id=email_id)

    async def sent(self, email_ids: Sequence[uuid.UUID]) -> None:
        """The relay accepted these (one statement for a batch of senders' results)."""
        async with self._driver.connection() as connection:
            await _SENT.fetchval(connection, ids=list(email_ids))

    async def attempt_failed(
        self, email_id: uuid.UUID, failure: DeliveryFailure, max_attempts: int, delay: datetime.timedelta
    ) -> EmailStatus | None:
        """The claimed attempt failed: FAILED when it was permanent or the last one allowed, else
        PENDING again after `delay`. None when the email was no longer this sender's."""
        async with self._driver.connection() as connection:
            status = await _ATTEMPT_FAILED.fetchval(
                connection,
                id=email_id,
                permanent=failure.kind is FailureKind.PERMANENT,
                max_attempts=max_attempts,
                delay=delay,
                error=failure.detail,
            )
        return EmailStatus(status) if status is not None else None

    async def relay_unavailable(self, email_id: uuid.UUID, detail: str, delay: datetime.timedelta) -> bool:
        """The relay was out of reach before anything was handed over: the attempt is given back
        and the email is due again after `delay`."""
        async with self._driver.connection() as connection:
            return await _RELAY_UNAVAILABLE.fetchval(connection, id=email_id, delay=delay, error=detail) is not None

    async def due_again(self, after: datetime.timedelta, batch: int) -> list[Job]:
        """Emails to enqueue again: pending, due ones not enqueued for `after` (their stream entries
        are presumed lost) and ones whose sender vanished before handing them over (lease run out;
        the attempt is given back). Marked enqueued now, so one sweeper among replicas takes each."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(_DUE_AGAIN, {"after": after, "batch": batch})
            return [Job(row.id, row.recipient, row.sealed_message) for row in rows]

    async def settle_unconfirmed(self, batch: int) -> int:
        """Emails handed over by a sender that never said how it went (its lease ran out): the
        relay most likely has them, so they are not sent again; they count as sent, with a note."""
        async with self._autocommit.connect() as connection:
            settled = await connection.execute(_SETTLE_UNCONFIRMED, {"batch": batch, "note": UNCONFIRMED})
            return settled.rowcount

    async def page(
        self, limit: int, after: tuple[datetime.datetime, uuid.UUID] | None, only: EmailFilter
    ) -> list[EmailRecord]:
        """Emails newest first, keyset-paginated on (create_time, id)."""
        query = _filtered(select(*_RECORD_COLUMNS), only)
        query = query.order_by(emails.c.create_time.desc(), emails.c.id.desc()).limit(limit)
        if after is not None:
            query = query.where(tuple_(emails.c.create_time, emails.c.id) < tuple_(*after))
        async with self._autocommit.connect() as connection:
            return [_record(row._mapping) for row in await connection.execute(query)]

    async def count(self, only: EmailFilter) -> int:
        """How many emails `only` matches."""
        async with self._autocommit.connect() as connection:
            return int(
                (await connection.execute(_filtered(select(func.count()).select_from(emails), only))).scalar_one()
            )

    async def stats(self, start: datetime.datetime, end: datetime.datetime) -> DayStats:
        async with self._autocommit.connect() as connection:
            row = (await connection.execute(_STATS, {"start": start, "end": end})).one()
        return DayStats(row.created, row.sent, row.failed, row.bounced, row.suppressed, row.expired)

    async def record_event(self, event: DeliveryEvent, email_id: uuid.UUID | None) -> None:
        async with self._engine.begin() as connection:
            if email_id is not None and event.kind is EventKind.BOUNCED:
                statement = _HARD_BOUNCE if event.hard_bounce else _SOFT_BOUNCE
                await connection.execute(statement, {"email_id": email_id})
            if event.suppresses:
                await connection.execute(_SUPPRESS, {"address": event.recipient, "reason": event.kind.value})


def _filtered(query: Select[Any], only: EmailFilter) -> Select[Any]:
    if only.status is not None:
        query = query.where(emails.c.status == int(only.status))
    if only.recipient is not None:
        query = query.where(func.lower(emails.c.recipient) == only.recipient.lower())
    if only.start is not None:
        query = query.where(emails.c.create_time >= only.start)
    if only.end is not None:
        query = query.where(emails.c.create_time < only.end)
    return query


def _record(row: Mapping[str, Any] | RowMapping) -> EmailRecord:
    return EmailRecord(
        id=row["id"],
        template=Template(row["template"]),
        recipient=row["recipient"],
        subject=row["subject"],
        status=EmailStatus(row["status"]),
        attempts=row["attempts"],
        last_error=row["last_error"],
        create_time=row["create_time"],
        send_time=row["send_time"],
        masked_text=row["masked_text"],
        expire_time=row["expire_time"],
        fail_time=row["fail_time"],
        requested_by=row["requested_by"],
    )


_RECORD_COLUMNS = (
    emails.c.id,
    emails.c.template,
    emails.c.recipient,
    emails.c.subject,
    emails.c.status,
    emails.c.attempts,
    emails.c.last_error,
    emails.c.create_time,
    emails.c.send_time,
    emails.c.masked_text,
    emails.c.expire_time,
    emails.c.fail_time,
    emails.c.requested_by,
)


def _param(name: str, type_: Any) -> BindParameter[Any]:
    return bindparam(name, type_=type_)


def _status(status: EmailStatus) -> Any:
    return literal(int(status), SmallInteger)


_NOW = func.now()
_ID = emails.c.id == _param("id", UUID(as_uuid=True))
_DELAY = _param("delay", Interval)
_ERROR = _param("error", Text)
_PENDING, _SENDING = emails.c.status == EmailStatus.PENDING, emails.c.status == EmailStatus.SENDING
_DUE = and_(_PENDING, emails.c.next_attempt_time <= _NOW)

# A suppressed address is logged SUPPRESSED and keeps no message to send; so is an email that
# arrives already expired, as EXPIRED.
_SUPPRESSED = exists().where(suppressions.c.address == func.lower(_param("recipient", Text)))
_EXPIRE_TIME = _param("expire_time", DateTime(timezone=True))
_DEAD_ON_ARRIVAL = _EXPIRE_TIME <= _NOW
_EXPIRED = and_(emails.c.expire_time.is_not(None), emails.c.expire_time <= _NOW)
_LOG = DriverStatement(
    insert(emails)
    .from_select(
        [
            "id",
            "idempotency_key",
            "template",
            "recipient",
            "subject",
            "message_id",
            "sealed_message",
            "masked_text",
            "status",
            "expire_time",
            "requested_by",
        ],
        select(
            _param("id", UUID(as_uuid=True)),
            _param("key", Text),
            _param("template", SmallInteger),
            _param("recipient", Text),
            _param("subject", Text),
            _param("message_id", Text),
            case((or_(_SUPPRESSED, _DEAD_ON_ARRIVAL), null()), else_=_param("sealed", LargeBinary)),
            _param("masked", Text),
            case(
                (_SUPPRESSED, _status(EmailStatus.SUPPRESSED)),
                (_DEAD_ON_ARRIVAL, _status(EmailStatus.EXPIRED)),
                else_=_status(EmailStatus.PENDING),
            ),
            _EXPIRE_TIME,
            _param("requested_by", Text),
        ),
    )
    .on_conflict_do_nothing(index_elements=["idempotency_key"])
    .returning(*_RECORD_COLUMNS)
)
_BY_KEYS = DriverStatement(
    select(*_RECORD_COLUMNS, emails.c.idempotency_key).where(
        emails.c.idempotency_key == any_(_param("keys", ARRAY(Text)))
    )
)
_LEASE_OVER = emails.c.lease_until < _NOW
_ABANDONED = and_(_SENDING, _LEASE_OVER, emails.c.handed_over.is_(False))
_CLAIM = DriverStatement(
    update(emails)
    .where(_ID, or_(_DUE, _ABANDONED))
    .values(
        status=case((_EXPIRED, _status(EmailStatus.EXPIRED)), else_=_status(EmailStatus.SENDING)),
        attempts=emails.c.attempts + case((or_(_ABANDONED, _EXPIRED), 0), else_=1),
        lease_until=case((_EXPIRED, null()), else_=_NOW + _param("lease", Interval)),
        sealed_message=case((_EXPIRED, null()), else_=emails.c.sealed_message),
        handed_over=False,
    )
    .returning(emails.c.attempts, emails.c.status)
)
_EXPIRE_LAPSED = (
    update(emails)
    .where(
        emails.c.id.in_(
            select(emails.c.id)
            .where(_PENDING, _EXPIRED)
            .limit(_param("batch", Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(status=EmailStatus.EXPIRED, sealed_message=None)
)
_HANDED_OVER = DriverStatement(update(emails).where(_ID, _SENDING).values(handed_over=True).returning(emails.c.id))
_SENT = DriverStatement(
    update(emails)
    .where(emails.c.id == any_(_param("ids", ARRAY(UUID(as_uuid=True)))), _SENDING)
    .values(status=EmailStatus.SENT, send_time=_NOW, sealed_message=None, lease_until=None)
    .returning(emails.c.id)
)
_GIVES_UP = or_(_param("permanent", Boolean), emails.c.attempts >= _param("max_attempts", Integer))
_ATTEMPT_FAILED = DriverStatement(
    update(emails)
    .where(_ID, _SENDING)
    .values(
        status=case((_GIVES_UP, _status(EmailStatus.FAILED)), else_=_status(EmailStatus.PENDING)),
        fail_time=case((_GIVES_UP, _NOW)),
        sealed_message=case((_GIVES_UP, null()), else_=emails.c.sealed_message),
        next_attempt_time=_NOW + _DELAY,
        enqueue_time=_NOW + _DELAY,
        last_error=_ERROR,
        lease_until=None,
    )
    .returning(emails.c.status)
)
_RELAY_UNAVAILABLE = DriverStatement(
    update(emails)
    .where(_ID, _SENDING, emails.c.handed_over.is_(False))
    .values(
        status=EmailStatus.PENDING,
        attempts=emails.c.attempts - 1,
        next_attempt_time=_NOW + _DELAY,
        enqueue_time=_NOW + _DELAY,
        last_error=_ERROR,
        lease_until=None,
    )
    .returning(emails.c.id)
)
_DUE_AGAIN = (
    update(emails)
    .where(
        emails.c.id.in_(
            select(emails.c.id)
            .where(or_(and_(_DUE, emails.c.enqueue_time <= _NOW - _param("after", Interval)), _ABANDONED))
            .limit(_param("batch", Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status=EmailStatus.PENDING,
        attempts=emails.c.attempts - case((_SENDING, 1), else_=0),
        next_attempt_time=func.least(emails.c.next_attempt_time, _NOW),
        enqueue_time=_NOW,
        lease_until=None,
    )
    .returning(emails.c.id, emails.c.recipient, emails.c.sealed_message)
)
_SETTLE_UNCONFIRMED = (
    update(emails)
    .where(
        emails.c.id.in_(
            select(emails.c.id)
            .where(_SENDING, _LEASE_OVER, emails.c.handed_over.is_(True))
            .limit(_param("batch", Integer))
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
    )
    .values(
        status=EmailStatus.SENT, send_time=_NOW, sealed_message=None, lease_until=None, last_error=bindparam("note")
    )
)


def _count_between(column: Any, *where: Any) -> Any:
    return (
        select(func.count())
        .where(column >= bindparam("start"), column < bindparam("end"), *where)
        .select_from(emails)
        .scalar_subquery()
    )


_STATS = select(
    _count_between(emails.c.create_time).label("created"),
    _count_between(emails.c.send_time).label("sent"),
    _count_between(emails.c.fail_time).label("failed"),
    _count_between(emails.c.bounce_time).label("bounced"),
    _count_between(emails.c.create_time, emails.c.status == EmailStatus.SUPPRESSED).label("suppressed"),
    _count_between(emails.c.expire_time, emails.c.status == EmailStatus.EXPIRED).label("expired"),
)
_HARD_BOUNCE = (
    update(emails)
    .where(emails.c.id == bindparam("email_id"), emails.c.status.in_([EmailStatus.SENDING, EmailStatus.SENT]))
    .values(status=EmailStatus.BOUNCED, bounce_time=_NOW, last_error="hard bounce reported")
)
_SOFT_BOUNCE = (
    update(emails)
    .where(emails.c.id == bindparam("email_id"), emails.c.status == EmailStatus.SENT)
    .values(last_error="soft bounce reported")
)
_SUPPRESS = (
    insert(suppressions)
    .values(address=bindparam("address"), reason=bindparam("reason"))
    .on_conflict_do_nothing(index_elements=["address"])
)
