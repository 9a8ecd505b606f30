"""A real SMTP relay (aiosmtpd) that a test steers: accept, answer 4xx or 5xx, hang, drop the
connection, or be down altogether; it remembers every message it accepted and every DATA it saw."""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import Counter
from dataclasses import dataclass
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from meshctl.embedded import free_port
from tests.conftest import eventually


class Mode(enum.Enum):
    ACCEPT = "accept"
    SOFT_REFUSE = "4xx at DATA"
    HARD_REFUSE = "5xx at DATA"
    REFUSE_RECIPIENT = "5xx at RCPT"
    HANG = "no answer to MAIL"
    DROP = "connection closed at MAIL"


@dataclass(frozen=True)
class Received:
    message_id: str
    recipient: str
    text: str


class ScriptedRelay:
    def __init__(self) -> None:
        self.port = free_port()
        self.mode = Mode.ACCEPT
        self.accept_delay = 0.0
        """Seconds the relay takes to answer a message it has accepted (kept) already."""
        self.received: list[Received] = []
        self.data_seen: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=self.port, decode_data=False)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def deliveries(self, message_id: str) -> int:
        with self._lock:
            return sum(1 for received in self.received if received.message_id == message_id)

    def accepted_ids(self) -> Counter[str]:
        with self._lock:
            return Counter(received.message_id for received in self.received)

    async def accepted_at_least(self, count: int) -> None:
        """Waits until the relay has accepted `count` messages (or fails the test)."""

        async def enough() -> bool:
            return len(self.accepted_ids()) >= count

        await eventually(enough, what=f"the relay to accept {count} messages")

    def _record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)


class _Handler:
    def __init__(self, relay: ScriptedRelay) -> None:
        self._relay = relay

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._relay.mode is Mode.HANG:
            await asyncio.sleep(30)
        if self._relay.mode is Mode.DROP:
            assert server.transport is not None
            server.transport.close()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self._relay.mode is Mode.REFUSE_RECIPIENT:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message: Any = message_from_bytes(envelope.original_content or b"", policy=default_policy)
        message_id = str(message.get("Message-ID", ""))
        self._relay.data_seen[message_id] += 1
        if self._relay.mode is Mode.SOFT_REFUSE:
            return "451 4.3.0 try again later"
        if self._relay.mode is Mode.HARD_REFUSE:
            return "554 5.6.0 message refused"
        text = message.get_body(preferencelist=("plain",)).get_content()
        self._relay._record(Received(message_id, envelope.rcpt_tos[0], text))
        if self._relay.accept_delay:
            await asyncio.sleep(self._relay.accept_delay)
        return "250 2.0.0 accepted"
