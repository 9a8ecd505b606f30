"""Emails a service promises in its own transactions and its outbox delivers to mail_svc: the
message's shape, and the receivers that send one or several in a call. mail_svc is idempotent by
the outbox message's id, so a delivery repeated after a crash mails nobody twice."""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb

from mesh.breakers import AsyncBreaker
from mesh.errors import error_info
from mesh.outbox import Deliver, DeliverTogether, Message, Undeliverable

T = TypeVar("T")
SEND_EMAIL = "send_email"
DEADLINE = 5.0
_FOR_GOOD = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


@dataclass(frozen=True)
class Mail:
    """An email to send through the outbox, after the transaction that asked for it commits."""

    template: int
    to: str
    variables: dict[str, str]
    expire_time: datetime.datetime | None = None
    """When what the mail carries stops working: mail_svc never sends it later."""


def mail_payload(mail: Mail) -> dict[str, Any]:
    """The outbox payload of a `SEND_EMAIL` message."""
    payload: dict[str, Any] = {"template": mail.template, "to": mail.to, "variables": mail.variables}
    if mail.expire_time is not None:
        payload["expire_time"] = mail.expire_time.isoformat()
    return payload


def email_receivers(
    send: Callable[[mail_pb.SendEmailRequest], Awaitable[object]],
    send_together: Callable[[mail_pb.BatchSendEmailsRequest], Awaitable[object]],
    breaker: AsyncBreaker,
) -> tuple[Deliver, DeliverTogether]:
    """The receivers of `SEND_EMAIL` messages, one at a time and several in one call, through the
    service's own calls to mail_svc (`send`, `send_together`) and its breaker."""

    async def send_email(message: Message) -> None:
        await delivered(breaker, send(_email_request(message)))

    async def send_emails(messages: Sequence[Message]) -> None:
        await delivered(
            breaker, send_together(mail_pb.BatchSendEmailsRequest(requests=[_email_request(m) for m in messages]))
        )

    return send_email, send_emails


def _email_request(message: Message) -> mail_pb.SendEmailRequest:
    payload = message.payload
    request = mail_pb.SendEmailRequest(
        template=payload["template"], to=payload["to"], variables=payload["variables"], idempotency_key=str(message.id)
    )
    if expire_time := payload.get("expire_time"):
        request.expire_time.FromDatetime(datetime.datetime.fromisoformat(expire_time))
    return request


async def delivered(breaker: AsyncBreaker, call: Awaitable[T]) -> T:
    """The answer of an outbox delivery's call; a refusal for good is `Undeliverable`, anything else
    (the peer down, its breaker open) is tried again later by the outbox."""
    try:
        async with breaker.guard():
            return await call
    except grpc.aio.AioRpcError as error:
        if error.code() in _FOR_GOOD:
            info = error_info(error)
            raise Undeliverable(f"{error.code().name} {info.reason if info else ''}".strip()) from None
        raise
