"""auth_svc's rules, free of I/O: account states, the password policy, verification codes and
how failed sign-ins slow down."""

from __future__ import annotations

import hmac
import secrets
from enum import IntEnum
from importlib.resources import files

from invitemesh.auth.v1 import auth_service_pb2 as pb

from mesh.sealing import keyed_hash

PASSWORD_MIN = 12
PASSWORD_MAX = 128
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


def _common_passwords() -> frozenset[str]:
    listed = files("auth_svc").joinpath("common_passwords.txt").read_text()
    return frozenset(
        line.strip().casefold() for line in listed.splitlines() if line.strip() and not line.startswith("#")
    )


COMMON_PASSWORDS = _common_passwords()


def password_problem(password: str) -> str | None:
    """Why a password may not be used, or None."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"{PASSWORD_MIN} to {PASSWORD_MAX} characters"
    if password.casefold() in COMMON_PASSWORDS or len(set(password)) < 4:
        return "too common; choose a longer phrase of your own"
    return None


def new_verification_code() -> str:
    return f"{secrets.randbelow(10**VERIFICATION_DIGITS):0{VERIFICATION_DIGITS}d}"


def code_digest(key: bytes, canonical_email: str, code: str) -> bytes:
    """Keyed, and bound to the person: a dump of the table does not let anyone try a million codes."""
    return keyed_hash(key, canonical_email.encode() + b"\0" + code.encode())


def same_digest(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def is_verification_code(code: str) -> bool:
    return len(code) == VERIFICATION_DIGITS and code.isascii() and code.isdigit()


def sign_in_delay(failures: int, free: int = 3, step: float = 0.25, cap: float = 4.0) -> float:
    """Seconds a sign-in waits after `failures` recent failures: nothing for the first few typos,
    then doubling up to `cap`, so guessing slows down long before an account is locked."""
    if failures < free:
        return 0.0
    return min(cap, step * 2.0 ** (failures - free))
