"""admin_svc's rules, free of I/O: admin states, the second factor (RFC 6238 TOTP, one step either
side, each step good once), and what of a request the audit log may keep."""

from __future__ import annotations

import hmac
import json
from enum import IntEnum

import pyotp
from google.protobuf import json_format
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb

TOTP_ISSUER = "invitemesh"
TOTP_DIGITS = 6
_TOTP_STEP = 30
_TOTP_WINDOW = 1
"""Steps accepted either side of now: clocks and typing take time."""


class AdminState(IntEnum):
    ACTIVE = pb.ADMIN_STATE_ACTIVE
    DISABLED = pb.ADMIN_STATE_DISABLED


def new_totp_secret() -> str:
    """160 random bits, base32, as authenticator apps expect."""
    return pyotp.random_base32(32)


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=_TOTP_STEP).provisioning_uri(
        name=email, issuer_name=TOTP_ISSUER
    )


def totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code `code` is (now or one step either side), or None. Callers refuse
    a step not later than the last one used, so a code works once."""
    if not (len(code) == TOTP_DIGITS and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=_TOTP_STEP)
    current = int(now) // _TOTP_STEP
    for step in range(current - _TOTP_WINDOW, current + _TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.at(step * _TOTP_STEP), code):
            return step
    return None


def audited_request(request: Message) -> str:
    """The request as the audit log keeps it: compact JSON, every field the contract marks
    `debug_redact` (passwords, codes, tokens) left out."""
    kept = type(request)()
    kept.CopyFrom(request)
    _redact(kept)
    return json.dumps(json_format.MessageToDict(kept), sort_keys=True, separators=(",", ":"))


def _redact(message: Message) -> None:
    for field, value in message.ListFields():
        if field.GetOptions().debug_redact:
            message.ClearField(field.name)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            for item in value if field.is_repeated else [value]:
                _redact(item)
