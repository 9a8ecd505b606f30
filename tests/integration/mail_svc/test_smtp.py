"""One sender's SMTP connection against a real relay: the message arrives byte for byte (dots
included), the handed-over mark comes with the final dot, and a connection the relay dropped
while idle is replaced without counting as a failure."""

from __future__ import annotations

import uuid
from email.message import EmailMessage
from email.policy import SMTP

import pytest

from mail_svc.domain import DeliveryFailure, FailureKind
from mail_svc.smtp import Relay, RelayConnection
from tests.integration.mail_svc.relay import Mode, ScriptedRelay


def _message(text: str) -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4()}@tests>"
    message = EmailMessage(policy=SMTP)
    message["From"], message["To"], message["Subject"], message["Message-ID"] = "a@tests", "b@tests", "s", message_id
    message.set_content(text)
    return message_id, message.as_bytes()


async def test_lines_that_start_with_a_dot_arrive_intact(relay: ScriptedRelay) -> None:
    connection = RelayConnection(Relay(relay.url, timeout=2))
    text = ".\n..two dots\n.one dot\nend\n"
    message_id, message = _message(text)
    marks: list[str] = []

    async def handed_over() -> None:
        marks.append(message_id)

    await connection.send("a@tests", "b@tests", message, handed_over)
    connection.close()

    (received,) = [r for r in relay.received if r.message_id == message_id]
    assert received.text.replace("\r\n", "\n") == text
    assert marks == [message_id]


async def test_a_connection_the_relay_dropped_while_idle_is_replaced(relay: ScriptedRelay) -> None:
    connection = RelayConnection(Relay(relay.url, timeout=2))

    async def handed_over() -> None:
        pass

    first_id, first = _message("first")
    await connection.send("a@tests", "b@tests", first, handed_over)
    relay.stop()
    relay.start()  # the open connection is dead now
    second_id, second = _message("second")
    await connection.send("a@tests", "b@tests", second, handed_over)
    connection.close()

    assert (relay.deliveries(first_id), relay.deliveries(second_id)) == (1, 1)


@pytest.mark.parametrize(
    ("mode", "kind", "handed_over"),
    [
        (Mode.REFUSE_RECIPIENT, FailureKind.PERMANENT, False),
        (Mode.HARD_REFUSE, FailureKind.PERMANENT, True),
        (Mode.SOFT_REFUSE, FailureKind.TRANSIENT, True),
        (Mode.DROP, FailureKind.RELAY, False),
    ],
)
async def test_each_failure_says_whose_fault_it_was_and_whether_the_message_had_left(
    relay: ScriptedRelay, mode: Mode, kind: FailureKind, handed_over: bool
) -> None:
    connection = RelayConnection(Relay(relay.url, timeout=2))
    relay.mode = mode
    marks: list[bool] = []

    async def mark() -> None:
        marks.append(True)

    with pytest.raises(DeliveryFailure) as failed:
        await connection.send("a@tests", "b@tests", _message("x")[1], mark)
    connection.close()

    assert (failed.value.kind, failed.value.handed_over, bool(marks)) == (kind, handed_over, handed_over)
