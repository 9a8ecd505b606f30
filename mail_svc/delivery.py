"""Senders: a consumer of the mail stream with N concurrent senders, each with its own SMTP
connection kept open, behind one circuit breaker per process.

What happens to an email, by what the relay did:
- accepted (250) → SENT;
- refused 5xx → FAILED at once, and a copy on the dead-letter stream;
- refused 4xx → another attempt after an exponential backoff with full jitter, FAILED after
  `MESH_MAIL_MAX_ATTEMPTS`;
- out of reach (refused connection, dropped, silent, 421) → the SMTP breaker counts it and the
  email waits for a later try without spending an attempt. While the breaker is open nobody
  pulls from the stream or tries the relay, and nothing is marked FAILED for it.

Exactly once, as far as it can be: an email is claimed in the log (with a lease) before its
message is written to the relay, and marked handed over as the message's final dot leaves
(mail_svc.smtp). A sender killed before the final dot leaves it not handed over: once the lease
runs out the sweeper sends it again, and the relay, which never saw the final dot, kept nothing.
One killed after the mark leaves it handed over, never sent again (the sweeper settles it as sent,
unconfirmed). What stays at-least-once: a sender killed in the database round trip between the
final dot and its mark, and a relay that drops the connection or goes silent after the final dot,
before answering (most such failures come before the relay commits). Such an email is sent again
with the same Message-ID (derived from the email id), which lets mail clients and many relays
recognise the duplicate.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import secrets
import socket
import uuid
from collections.abc import Coroutine
from typing import Any

import structlog
from cryptography.exceptions import InvalidTag
from prometheus_client import Counter
from redis.exceptions import RedisError

from mail_svc.domain import DeliveryFailure, EmailStatus, FailureKind
from mail_svc.settings import MailSettings
from mail_svc.smtp import Relay, RelayConnection
from mail_svc.store import MailStore
from mail_svc.stream import Entry, Job, MailStream
from mesh.breakers import AsyncBreaker, BreakerOpen
from mesh.keys import load_kek
from mesh.metrics import Metrics
from mesh.retries import full_jitter
from mesh.sealing import Sealer, derive_key
from mesh.settings import Settings

log = structlog.get_logger("mail_svc.delivery")
_READ_BLOCK_MS = 500
_PAUSE_AFTER_ERROR = 1.0


def message_sealer(settings: Settings) -> Sealer:
    """Seals the MIME messages kept in the log and carried by the stream (bound to the email id)."""
    return Sealer(derive_key(load_kek(settings), "mail message seal v1"))


def delivery_for(
    settings: Settings, own: MailSettings, store: MailStore, stream: MailStream, metrics: Metrics
) -> Delivery:
    """The senders of one process, with its SMTP breaker and outcome counter."""
    if not settings.smtp_url:
        raise RuntimeError("MESH_SMTP_URL is not set")
    outcomes = Counter(
        "mesh_email_deliveries", "Email delivery attempts by outcome.", ["outcome"], registry=metrics.registry
    )
    breaker = _smtp_breaker(own, metrics)
    return Delivery(settings.smtp_url, own, store, stream, message_sealer(settings), breaker, outcomes)


def _smtp_breaker(own: MailSettings, metrics: Metrics) -> AsyncBreaker:
    return AsyncBreaker(
        "smtp",
        own.breaker_failures,
        own.breaker_reset,
        counts=lambda error: isinstance(error, DeliveryFailure) and error.kind is FailureKind.RELAY,
        states=metrics.breaker_state,
    )


class Delivery:
    def __init__(
        self,
        smtp_url: str,
        settings: MailSettings,
        store: MailStore,
        stream: MailStream,
        sealer: Sealer,
        breaker: AsyncBreaker,
        outcomes: Counter,
    ) -> None:
        self._settings = settings
        self._store = store
        self._stream = stream
        self._sealer = sealer
        self._breaker = breaker
        self._relay = Relay(smtp_url, settings.smtp_timeout)
        self._consumer = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        # Longer than a whole send can take (each SMTP step is bounded by the timeout), so a
        # lease only runs out for a sender that is gone.
        self._lease = datetime.timedelta(seconds=6 * settings.smtp_timeout + 1)
        self._inbox: asyncio.Queue[Entry] = asyncio.Queue(maxsize=max(1, settings.senders))
        self._stopping = asyncio.Event()
        self._idle: set[asyncio.Task[Any]] = set()
        self._later: set[asyncio.Task[None]] = set()
        self._outcomes = outcomes
        self._settled = _Settled(store, stream)

    async def run(self) -> None:
        """Pulls and sends until `stop()`; in-flight sends finish first."""
        senders = [asyncio.create_task(self._send()) for _ in range(self._settings.senders)]
        puller = asyncio.create_task(self._pull())
        try:
            await self._stopping.wait()
        finally:
            # Entries pulled but not yet taken stay this consumer's until another reclaims them.
            puller.cancel()
            # Idle senders stop now; busy ones when their send is done (they see `_stopping`).
            for sender in self._idle:
                sender.cancel()
            unfinished: set[asyncio.Task[None]] = set()
            if senders:
                _, unfinished = await asyncio.wait(senders, timeout=2 * self._settings.smtp_timeout)
            for task in [*unfinished, *self._later]:
                task.cancel()  # the sweeper enqueues these emails again
            # A cancellation can be lost inside the Redis client (Python 3.11's timeouts turn one
            # that races a socket timeout into TimeoutError): a puller that missed it must not wait
            # on a full inbox nobody empties any more; it sees `_stopping` and ends.
            while not self._inbox.empty():
                self._inbox.get_nowait()
            await asyncio.gather(puller, *senders, *self._later, return_exceptions=True)
            await self._settled.close()

    async def stop(self) -> None:
        self._stopping.set()

    async def _pull(self) -> None:
        reclaim_every = self._settings.reclaim_idle / 2
        idle_ms = int(self._settings.reclaim_idle * 1000)
        loop = asyncio.get_running_loop()
        last_reclaim = float("-inf")
        while not self._stopping.is_set():
            if (closed_for := self._breaker.seconds_until_trial()) > 0:
                await asyncio.sleep(closed_for)  # the relay is down: emails wait in the stream
                continue
            try:
                entries: list[Entry] = []
                if loop.time() - last_reclaim >= reclaim_every:
                    last_reclaim = loop.time()
                    entries = await self._stream.reclaim(self._consumer, idle_ms, self._inbox.maxsize)
                if not entries:
                    entries = await self._stream.read(self._consumer, self._inbox.maxsize, _READ_BLOCK_MS)
            except RedisError:
                log.warning("mail stream unreachable; pausing", consumer=self._consumer)
                await asyncio.sleep(_PAUSE_AFTER_ERROR)
                continue
            for entry in entries:
                if self._stopping.is_set():
                    break
                await self._inbox.put(entry)

    async def _send(self) -> None:
        sender = asyncio.current_task()
        assert sender is not None
        connection = RelayConnection(self._relay)
        try:
            while not self._stopping.is_set():
                self._idle.add(sender)
                try:
                    entry = await self._inbox.get()
                finally:
                    self._idle.discard(sender)
                await self._deliver(connection, entry)
        finally:
            connection.close()

    async def _deliver(self, connection: RelayConnection, entry: Entry) -> None:
        job = entry.job
        try:
            sent = await self._attempt(connection, job)
            self._settled.add(entry.entry_id, job.email_id if sent else None)
        except Exception:
            # Left unacknowledged: the entry is reclaimed and tried again after `reclaim_idle`.
            connection.close()
            log.exception("delivery failed unexpectedly", email_id=str(job.email_id))

    async def _attempt(self, connection: RelayConnection, job: Job) -> bool:
        """Tries the email once (waiting out an open breaker); True when the relay accepted it."""
        try:
            message = self._sealer.unseal(job.email_id.bytes, job.sealed_message)
        except InvalidTag:
            log.error("a queued message does not open; the sweeper enqueues the logged one", email_id=str(job.email_id))
            return False
        while True:
            if (closed_for := self._breaker.seconds_until_trial()) > 0:
                await asyncio.sleep(closed_for)
            attempt = await self._store.claim(job.email_id, self._lease)
            if attempt is None:
                return False  # another sender has it, or it is done, or not due yet
            try:
                async with self._breaker.guard():
                    await connection.send(
                        self._settings.sender, job.recipient, message, lambda: self._store.handed_over(job.email_id)
                    )
            except BreakerOpen:
                await self._store.relay_unavailable(job.email_id, "smtp breaker open", datetime.timedelta())
                continue
            except DeliveryFailure as failure:
                await self._failed(job, attempt, failure)
                return False
            self._outcomes.labels("sent").inc()
            return True

    async def _failed(self, job: Job, attempt: int, failure: DeliveryFailure) -> None:
        delay = datetime.timedelta(
            seconds=full_jitter(attempt, self._settings.backoff_base, self._settings.backoff_cap)
        )
        if failure.kind is FailureKind.RELAY and not failure.handed_over:
            log.warning("relay unreachable", email_id=str(job.email_id), error=failure.detail)
            self._outcomes.labels("relay_unreachable").inc()
            if await self._store.relay_unavailable(job.email_id, failure.detail, delay):
                self._later_enqueue(job, delay)
            return
        status = await self._store.attempt_failed(job.email_id, failure, self._settings.max_attempts, delay)
        if status is EmailStatus.FAILED:
            log.warning("email failed", email_id=str(job.email_id), attempts=attempt, error=failure.detail)
            self._outcomes.labels("failed").inc()
            await self._stream.bury(job, failure.detail)
        elif status is EmailStatus.PENDING:
            log.info("email will be tried again", email_id=str(job.email_id), attempts=attempt, error=failure.detail)
            self._outcomes.labels("retry").inc()
            self._later_enqueue(job, delay)

    def _later_enqueue(self, job: Job, delay: datetime.timedelta) -> None:
        self._spawn(self._enqueue_after(job, delay.total_seconds()))

    async def _enqueue_after(self, job: Job, seconds: float) -> None:
        await asyncio.sleep(seconds)
        try:
            await self._stream.enqueue([job])
        except RedisError:
            log.warning("could not enqueue a retry; the sweeper will", email_id=str(job.email_id))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._later.add(task)
        task.add_done_callback(self._later.discard)


class _Settled:
    """Finished sends, written down together: one UPDATE marks a batch SENT, then one pipeline
    acknowledges and deletes their stream entries, at most `gap` after the first finished. A
    process that dies before writing a batch leaves those emails SENDING and handed over, which
    the sweeper settles as sent; never sent again."""

    def __init__(self, store: MailStore, stream: MailStream, gap: float = 0.005) -> None:
        self._store = store
        self._stream = stream
        self._gap = gap
        self._sent: list[uuid.UUID] = []
        self._entries: list[bytes] = []
        self._writer: asyncio.Task[None] | None = None

    def add(self, entry_id: bytes, sent: uuid.UUID | None) -> None:
        if sent is not None:
            self._sent.append(sent)
        self._entries.append(entry_id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def close(self) -> None:
        if self._writer is not None:
            await self._writer

    async def _write(self) -> None:
        while self._entries:
            await asyncio.sleep(self._gap)
            sent, self._sent = self._sent, []
            entries, self._entries = self._entries, []
            try:
                if sent:
                    await self._store.sent(sent)
                await self._stream.done(entries)
            except Exception:
                # The sweeper settles unmarked emails; unacknowledged entries are reclaimed.
                log.exception("could not record finished sends", count=len(entries))
