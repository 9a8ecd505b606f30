"""Pure rules of mail: statuses, what a failed delivery attempt means for the email, and the
stable reasons of every refusal."""

from __future__ import annotations

import enum


class EmailStatus(enum.IntEnum):
    PENDING = 1
    SENDING = 2
    SENT = 3
    FAILED = 4
    BOUNCED = 5
    SUPPRESSED = 6
    EXPIRED = 7
    """Not sent: its `expire_time` passed first (a code or a link that would have been dead)."""


class FailureKind(enum.Enum):
    """Whose fault a failed delivery attempt was, which decides what happens next."""

    RELAY = "relay"
    """The relay could not be reached or stopped answering: the email waits, its attempts are not
    spent (unless it had been handed over), and the SMTP breaker counts it."""
    TRANSIENT = "transient"
    """The relay answered 4xx about this email: an attempt is spent, another follows after a backoff."""
    PERMANENT = "permanent"
    """The relay answered 5xx about this email: it fails at once."""


class DeliveryFailure(Exception):
    def __init__(self, kind: FailureKind, detail: str, handed_over: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.handed_over = handed_over
        """Whether the message itself had been written to the relay (so it may have been accepted)."""


EVENT_SIGNATURE_INVALID = "MAIL_EVENT_SIGNATURE_INVALID"
EVENT_STALE = "MAIL_EVENT_STALE"
EVENT_MALFORMED = "MAIL_EVENT_MALFORMED"
EVENTS_UNAVAILABLE = "MAIL_EVENTS_UNAVAILABLE"
EVENTS_NOT_CONFIGURED = "MAIL_EVENTS_NOT_CONFIGURED"
