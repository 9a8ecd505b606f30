"""One sender's connection to the SMTP relay (aiosmtplib), kept open between emails.

A send is MAIL, RCPT and DATA, then the message with its final dot, then the relay's answer.
The moment the final dot is written is the moment the relay may accept the message, so right
then (while waiting for the answer) the sender records `handed_over` in the email log: an email
whose sender dies before that is sent again, one whose sender dies after it is not (mail_svc.delivery
says what that leaves at-least-once). aiosmtplib's `data()` offers no such moment, so DATA goes
through its public `execute_command`, and the message through the protocol's `write` and
`read_response`, as `data()` itself does.

A refused MAIL or RCPT leaves the session in a transaction: it is RSET (or the connection dropped
if that fails) before the connection is used again. A connection the relay closed while idle is
opened again once, without counting as a failure.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib

from mail_svc.domain import DeliveryFailure, FailureKind

HandedOver = Callable[[], Awaitable[None]]
_LINE_START_DOT = re.compile(rb"(?m)^\.")
_SERVICE_NOT_AVAILABLE = 421
_START_INPUT = 354


class Relay:
    """Where and how to reach the relay: `smtp://[user:password@]host:port[?starttls=true]` or
    `smtps://…` (TLS from the first byte)."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.hostname = parts.hostname or "localhost"
        self.implicit_tls = parts.scheme == "smtps"
        self.port = parts.port or (465 if self.implicit_tls else 25)
        self.start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout = timeout

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
            use_tls=self.implicit_tls,
            start_tls=self.start_tls,
        )


class RelayConnection:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._smtp: aiosmtplib.SMTP | None = None

    async def send(self, sender: str, recipient: str, message: bytes, handed_over: HandedOver) -> None:
        """Hands `message` to the relay, calling `handed_over` as its final dot leaves; raises
        `DeliveryFailure` saying what went wrong and whether the message had been handed over."""
        smtp = await self._ready_for_data(sender, recipient)
        try:
            protocol = smtp.protocol
            if protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            protocol.write(_data_block(message))
        except (OSError, aiosmtplib.SMTPException) as error:
            self.close()
            raise _failure(error, handed_over=False) from None
        # Recorded while the relay is still answering: its reply need not wait for the log.
        recorded = asyncio.ensure_future(handed_over())
        try:
            reply = await protocol.read_response(timeout=self._relay.timeout)
        except (OSError, aiosmtplib.SMTPException) as error:
            self.close()
            raise _failure(error, handed_over=True) from None
        finally:
            await recorded
        if reply.code != aiosmtplib.SMTPStatus.completed:
            raise _refusal(reply.code, reply.message, handed_over=True)

    def close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            smtp.close()

    async def _ready_for_data(self, sender: str, recipient: str) -> aiosmtplib.SMTP:
        reused = self._smtp is not None
        try:
            smtp = await self._connected()
            await smtp.mail(sender)
        except aiosmtplib.SMTPServerDisconnected:
            if not reused:
                self.close()
                raise _failure(aiosmtplib.SMTPServerDisconnected("connection lost"), handed_over=False) from None
            self.close()  # the relay closed it while it was idle: once more on a fresh one
            return await self._ready_for_data(sender, recipient)
        except (OSError, aiosmtplib.SMTPException) as error:
            await self._after_failure(error)
            raise _failure(error, handed_over=False) from None
        try:
            await smtp.rcpt(recipient)
            start = await smtp.execute_command(b"DATA")
            if start.code != _START_INPUT:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
        except (OSError, aiosmtplib.SMTPException) as error:
            await self._after_failure(error)
            raise _failure(error, handed_over=False) from None
        return smtp

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._smtp is None or not self._smtp.is_connected:
            smtp = self._relay.client()
            await smtp.connect()
            self._smtp = smtp
        return self._smtp

    async def _after_failure(self, error: BaseException) -> None:
        """A refusal ends the transaction, not the connection (RSET); anything else ends both."""
        if self._smtp is None:
            return
        if isinstance(error, aiosmtplib.SMTPResponseException) and error.code != _SERVICE_NOT_AVAILABLE:
            try:
                await self._smtp.rset()
                return
            except (OSError, aiosmtplib.SMTPException):
                pass
        self.close()


def _data_block(message: bytes) -> bytes:
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    return _LINE_START_DOT.sub(b"..", message) + b".\r\n"


def _failure(error: BaseException, handed_over: bool) -> DeliveryFailure:
    if isinstance(error, aiosmtplib.SMTPResponseException):
        return _refusal(error.code, error.message, handed_over)
    return DeliveryFailure(FailureKind.RELAY, f"relay unreachable: {type(error).__name__}", handed_over)


def _refusal(code: int, message: str, handed_over: bool) -> DeliveryFailure:
    detail = f"{code} {message}".strip()[:500]
    if code == _SERVICE_NOT_AVAILABLE:
        return DeliveryFailure(FailureKind.RELAY, detail, handed_over)
    kind = FailureKind.PERMANENT if 500 <= code < 600 else FailureKind.TRANSIENT
    return DeliveryFailure(kind, detail, handed_over)
