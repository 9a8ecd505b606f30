"""auth_svc's rules, free of I/O: account states, and verification codes."""

from __future__ import annotations

import hmac
import secrets
from enum import IntEnum

from invitemesh.auth.v1 import auth_service_pb2 as pb

from mesh.sealing import keyed_hash

VERIFICATION_DIGITS = 6


class UserState(IntEnum):
    PENDING_VERIFICATION = pb.USER_STATE_PENDING_VERIFICATION
    ACTIVE = pb.USER_STATE_ACTIVE
    SUSPENDED = pb.USER_STATE_SUSPENDED


class TokenState(IntEnum):
    ACTIVE = 1
    ROTATED = 2
    """Exchanged for a newer one: showing it again means it was stolen, or the newer one was."""
    REVOKED = 3


def new_verification_code() -> str:
    return f"{secrets.randbelow(10**VERIFICATION_DIGITS):0{VERIFICATION_DIGITS}d}"


def code_digest(key: bytes, canonical_email: str, code: str) -> bytes:
    """Keyed, and bound to the person: a dump of the table does not let anyone try a million codes."""
    return keyed_hash(key, canonical_email.encode() + b"\0" + code.encode())


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def is_verification_code(code: str) -> bool:
    return len(code) == VERIFICATION_DIGITS and code.isascii() and code.isdigit()
