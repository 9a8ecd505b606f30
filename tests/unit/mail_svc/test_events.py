"""Delivery events: only a body signed with the secret, within five minutes, is believed."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mail_svc.events import DeliveryEvent, EventKind, EventRefused, signature, verified

SECRET = b"s3cret"
NOW = 1_800_000_000.0
BODY = json.dumps(
    {"event": "bounced", "message_id": "<a@b>", "recipient": "Ada@Example.com", "bounce": "hard"}
).encode()


def _verify(
    body: bytes = BODY, timestamp: str = str(int(NOW)), signed: str | None = None, now: float = NOW
) -> DeliveryEvent:
    return verified(SECRET, timestamp, signed or signature(SECRET, timestamp, body), body, now)


def test_a_signed_hard_bounce_suppresses_its_recipient() -> None:
    event = _verify()

    assert event == verified(SECRET, str(int(NOW)), signature(SECRET, str(int(NOW)), BODY), BODY, NOW + 299)
    assert (event.kind, event.recipient, event.suppresses) == (EventKind.BOUNCED, "ada@example.com", True)


@given(position=st.integers(min_value=0, max_value=len(BODY) - 1), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_of_the_body_is_refused(position: int, flip: int) -> None:
    changed = bytearray(BODY)
    changed[position] ^= flip

    with pytest.raises(EventRefused) as refused:
        _verify(bytes(changed), signed=signature(SECRET, str(int(NOW)), BODY))

    assert refused.value.reason == "MAIL_EVENT_SIGNATURE_INVALID"


@pytest.mark.parametrize("skew", [-301, 301])
def test_a_stale_timestamp_is_refused_even_when_signed(skew: int) -> None:
    with pytest.raises(EventRefused) as refused:
        _verify(now=NOW + skew)

    assert refused.value.reason == "MAIL_EVENT_STALE"


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"event": "bounced", "message_id": "x", "recipient": "a@b"}', b'{"event": "read"}'],
)
def test_a_malformed_event_is_refused(body: bytes) -> None:
    with pytest.raises(EventRefused) as refused:
        _verify(body)

    assert refused.value.reason == "MAIL_EVENT_MALFORMED"
