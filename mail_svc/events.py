"""Delivery events from the mail provider (ReportDeliveryEvent): an HMAC-SHA256 over
`<timestamp>.<raw body>` with a shared secret, checked byte for byte and only within ±5 minutes
of the timestamp, then a small JSON document.

    x-mail-event-timestamp: 1795046400
    x-mail-event-signature: v1=5d41402abc4b2a76b9719d911017c592...
    {"event": "bounced", "message_id": "<…@…>", "recipient": "ada@example.com", "bounce": "hard"}

`event` is `delivered`, `bounced` (with `bounce` `hard` or `soft`) or `complained`; an optional
`id` is the provider's id of the event. An event is applied once: the same event again within the
window (a replay, or a provider's retry) is answered alike and changes nothing. Without an `id`,
the signed bytes are the event's identity.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
from dataclasses import dataclass

from mail_svc.domain import EVENT_MALFORMED, EVENT_SIGNATURE_INVALID, EVENT_STALE

TIMESTAMP_HEADER = "x-mail-event-timestamp"
SIGNATURE_HEADER = "x-mail-event-signature"
TOLERANCE = 300.0
MAX_BODY = 64 * 1024
MAX_EVENT_ID = 200


class EventKind(enum.Enum):
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


@dataclass(frozen=True)
class DeliveryEvent:
    kind: EventKind
    message_id: str
    recipient: str
    hard_bounce: bool = False
    id: str = ""
    """The provider's id of the event, or a digest of what was signed."""

    @property
    def suppresses(self) -> bool:
        """A hard bounce or a complaint: never mail this address again."""
        return self.kind is EventKind.COMPLAINED or (self.kind is EventKind.BOUNCED and self.hard_bounce)


class EventRefused(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verified(secret: bytes, timestamp: str, signed: str, body: bytes, now: float) -> DeliveryEvent:
    """The event of a body whose signature and timestamp check out; `EventRefused` otherwise."""
    if not hmac.compare_digest(signed.strip().encode(), signature(secret, timestamp, body).encode()):
        raise EventRefused(EVENT_SIGNATURE_INVALID, "the event signature does not verify")
    try:
        stale = abs(now - int(timestamp)) > TOLERANCE
    except ValueError:
        raise EventRefused(EVENT_SIGNATURE_INVALID, "the event timestamp is not a number") from None
    if stale:
        raise EventRefused(EVENT_STALE, "the event timestamp is outside the accepted window")
    event = parsed(body)
    if not event.id:
        event = dataclasses.replace(event, id=hashlib.sha256(timestamp.encode() + b"." + body).hexdigest())
    return event


def parsed(body: bytes) -> DeliveryEvent:
    try:
        document = json.loads(body)
        kind = EventKind(document["event"])
        message_id, recipient = str(document["message_id"]), str(document["recipient"]).strip().lower()
        bounce = document.get("bounce")
        event_id = document.get("id", "")
    except (ValueError, KeyError, TypeError):
        raise EventRefused(EVENT_MALFORMED, "the event is not a delivery event document") from None
    if kind is EventKind.BOUNCED and bounce not in ("hard", "soft"):
        raise EventRefused(EVENT_MALFORMED, "a bounce says whether it is hard or soft")
    if "@" not in recipient:
        raise EventRefused(EVENT_MALFORMED, "the event names no recipient address")
    if not isinstance(event_id, str) or len(event_id) > MAX_EVENT_ID:
        raise EventRefused(EVENT_MALFORMED, f"an event id is a string of at most {MAX_EVENT_ID} characters")
    return DeliveryEvent(kind, message_id, recipient, hard_bounce=bounce == "hard", id=event_id)
