"""mail_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from enum import IntEnum
from typing import Any, TypeVar

import grpc
import structlog
from invitemesh.mail.v1 import mail_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2_grpc
from redis.exceptions import RedisError

from mail_svc.delivery import delivery_for, message_sealer
from mail_svc.domain import EVENTS_NOT_CONFIGURED, EmailStatus
from mail_svc.events import MAX_BODY, SIGNATURE_HEADER, TIMESTAMP_HEADER, EventRefused, verified
from mail_svc.jobs import sweep_job
from mail_svc.replays import AppliedEvents
from mail_svc.settings import MailSettings
from mail_svc.store import EmailFilter, EmailRecord, MailStore, NewEmail
from mail_svc.stream import Job, MailStream
from mail_svc.templates import BadVariables, Renderer, Template, email_id_of, message_id, mime_message
from mail_svc.totals import ListingTotals
from mesh.access import current_principal
from mesh.cursors import PageTokens, page_size
from mesh.days import day_window
from mesh.emails import MAX_ADDRESS, checked_address
from mesh.errors import FailedPrecondition, FieldViolation, InvalidArgument, Unauthenticated
from mesh.keys import load_kek
from mesh.sealing import Sealer, derive_key
from mesh.server import ServiceRuntime
from mesh.timestamps import optional_timestamp

log = structlog.get_logger("mail_svc.server")
MAX_KEY = 200
MAX_BATCH = 100
E = TypeVar("E", bound=IntEnum)


class MailService(mail_service_pb2_grpc.MailServiceServicer):
    def __init__(
        self,
        store: MailStore,
        stream: MailStream,
        sealer: Sealer,
        pages: PageTokens,
        sender: str,
        webhook_secret: bytes | None,
        events_seen: AppliedEvents,
        totals: ListingTotals,
    ) -> None:
        self._store = store
        self._stream = stream
        self._sealer = sealer
        self._pages = pages
        self._sender = sender
        self._webhook_secret = webhook_secret
        self._events_seen = events_seen
        self._totals = totals
        self._renderer = Renderer()

    async def SendEmail(self, request: pb.SendEmailRequest, context: Any) -> pb.SendEmailResponse:
        violations: list[FieldViolation] = []
        new = self._new_email(request, violations)
        if new is None:
            raise InvalidArgument(violations)
        return pb.SendEmailResponse(email=(await self._log_and_queue([new]))[0])

    async def BatchSendEmails(self, request: pb.BatchSendEmailsRequest, context: Any) -> pb.BatchSendEmailsResponse:
        if not 0 < len(request.requests) <= MAX_BATCH:
            raise InvalidArgument([FieldViolation("requests", f"from 1 to {MAX_BATCH} emails")])
        news, violations = [], []
        for index, one in enumerate(request.requests):
            own: list[FieldViolation] = []
            if (new := self._new_email(one, own)) is not None:
                news.append(new)
            violations += [FieldViolation(f"requests[{index}].{v.field}", v.description) for v in own]
        if violations:
            raise InvalidArgument(violations)
        return pb.BatchSendEmailsResponse(emails=await self._log_and_queue(news))

    def _new_email(self, request: pb.SendEmailRequest, violations: list[FieldViolation]) -> NewEmail | None:
        """The email `request` asks for, rendered and sealed; None, with `violations`, if it is bad."""
        template = _enum(Template, request.template, "template", violations)
        recipient = checked_address("to", request.to, violations)
        if not 0 < len(request.idempotency_key) <= MAX_KEY:
            violations.append(FieldViolation("idempotency_key", f"required, at most {MAX_KEY} characters"))
        rendered = None
        if template is not None:
            try:
                rendered = self._renderer.render(template, dict(request.variables))
            except BadVariables as bad:
                violations += bad.violations
        if violations:
            return None
        assert template is not None and recipient is not None and rendered is not None
        email_id = uuid.uuid4()
        message = mime_message(email_id, self._sender, recipient, rendered)
        return NewEmail(
            id=email_id,
            idempotency_key=request.idempotency_key,
            template=template,
            recipient=recipient,
            subject=rendered.subject,
            message_id=message_id(email_id, self._sender),
            sealed_message=self._sealer.seal(email_id.bytes, message),
            masked_text=rendered.masked_text,
            expire_time=_moment(request, "expire_time"),
            requested_by=current_principal.get().acting_for,
        )

    async def _log_and_queue(self, news: list[NewEmail]) -> list[pb.Email]:
        logged = await self._store.log(news)
        jobs = [
            Job(new.id, new.recipient, new.sealed_message)
            for new, (record, fresh) in zip(news, logged, strict=True)
            if fresh and record.status is EmailStatus.PENDING
        ]
        if jobs:
            try:
                await self._stream.enqueue(jobs)
            except RedisError:
                # Logged is enough: the sweeper enqueues them once the stream is back.
                log.warning("emails logged but not enqueued", email_ids=[str(job.email_id) for job in jobs])
        return [self._email(record) for record, _ in logged]

    async def ListEmails(self, request: pb.ListEmailsRequest, context: Any) -> pb.ListEmailsResponse:
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        status = None
        if request.status:
            status = _enum(EmailStatus, request.status, "status", violations)
        if len(request.to) > MAX_ADDRESS:
            violations.append(FieldViolation("to", f"at most {MAX_ADDRESS} characters"))
        only = EmailFilter(
            status=status,
            recipient=request.to or None,
            start=_moment(request, "start_time"),
            end=_moment(request, "end_time"),
        )
        query = f"{only.status}|{(only.recipient or '').lower()}|{only.start}|{only.end}"
        after = self._pages.keyset_after(request.page_token, query, violations)
        if violations:
            raise InvalidArgument(violations)
        page, total = await asyncio.gather(self._store.page(size, after, only), self._totals.total(query, only))
        return pb.ListEmailsResponse(
            emails=[self._email(record) for record in page],
            next_page_token=self._pages.keyset_next([(e.create_time, e.id) for e in page], size, query),
            total_size=total,
        )

    def _email(self, record: EmailRecord) -> pb.Email:
        return pb.Email(
            id=str(record.id),
            template=int(record.template),  # type: ignore[arg-type]
            to=record.recipient,
            subject=record.subject,
            status=int(record.status),  # type: ignore[arg-type]
            attempts=record.attempts,
            last_error=record.last_error or "",
            create_time=optional_timestamp(record.create_time),
            send_time=optional_timestamp(record.send_time),
            masked_text_body=record.masked_text,
            expire_time=optional_timestamp(record.expire_time),
            from_address=self._sender,
            fail_time=optional_timestamp(record.fail_time),
            requested_by=record.requested_by,
        )

    async def GetEmailStats(self, request: pb.GetEmailStatsRequest, context: Any) -> pb.GetEmailStatsResponse:
        window = day_window(request.day, request.time_zone)
        counts = await self._store.stats(window.start, window.end)
        return pb.GetEmailStatsResponse(
            stats=pb.EmailStats(
                day=window.day.isoformat(),
                created=counts.created,
                sent=counts.sent,
                failed=counts.failed,
                bounced=counts.bounced,
                suppressed=counts.suppressed,
                expired=counts.expired,
            )
        )

    async def ReportDeliveryEvent(
        self, request: pb.ReportDeliveryEventRequest, context: Any
    ) -> pb.ReportDeliveryEventResponse:
        if self._webhook_secret is None:
            raise FailedPrecondition(EVENTS_NOT_CONFIGURED, "delivery events are not configured here")
        body = request.body.data
        if len(body) > MAX_BODY:
            raise InvalidArgument([FieldViolation("body", f"at most {MAX_BODY} bytes")])
        headers = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        try:
            event = verified(
                self._webhook_secret,
                headers.get(TIMESTAMP_HEADER, ""),
                headers.get(SIGNATURE_HEADER, ""),
                body,
                time.time(),
            )
        except EventRefused as refused:
            if refused.reason == "MAIL_EVENT_MALFORMED":
                raise InvalidArgument([FieldViolation("body", str(refused))], reason=refused.reason) from None
            raise Unauthenticated(refused.reason, str(refused)) from None
        if not await self._events_seen.first_sighting(event.id):
            log.info("delivery event seen before; not applied again", kind=event.kind.value)
            return pb.ReportDeliveryEventResponse()
        try:
            await self._store.record_event(event, email_id_of(event.message_id))
        except BaseException:
            await self._events_seen.forget(event.id)
            raise
        log.info("delivery event", kind=event.kind.value, suppresses=event.suppresses)
        return pb.ReportDeliveryEventResponse()


def _enum(kind: type[E], value: int, field: str, violations: list[FieldViolation]) -> E | None:
    try:
        return kind(value)
    except ValueError:
        violations.append(FieldViolation(field, "required: one of the enum's named values"))
        return None


def _moment(request: Any, field: str) -> datetime.datetime | None:
    return getattr(request, field).ToDatetime(datetime.UTC) if request.HasField(field) else None


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: MailSettings | None = None) -> None:
    """mail_svc's wiring; `own` settings, else `MESH_MAIL_*`."""
    settings, own = runtime.settings, own or MailSettings()
    store = MailStore(runtime.engine, runtime.driver)
    stream = MailStream(runtime.redis, own.stream)
    pages = PageTokens(derive_key(load_kek(settings), "mail page-token v1"))
    secret = own.webhook_secret.get_secret_value().encode() if own.webhook_secret else None
    seen = AppliedEvents(runtime.pipe, runtime.keys)
    totals = ListingTotals(store, runtime.pipe, runtime.keys, own.listing_total_ttl)
    service = MailService(store, stream, message_sealer(settings), pages, own.sender, secret, seen, totals)
    mail_service_pb2_grpc.add_MailServiceServicer_to_server(service, server)
    runtime.jobs.append(sweep_job(store, stream, own.sweep_interval, own.sweep_after))
    if own.senders and settings.smtp_url:
        runtime.workers.append(delivery_for(settings, own, store, stream, runtime.metrics))
