"""What every flow checks of a request before anything else: the email, as given and as the
person it names, and the opaque tokens clients hand back."""

from __future__ import annotations

import datetime
import uuid

from mesh.emails import InvalidEmail, canonical_email, checked_address
from mesh.errors import FieldViolation, InvalidArgument

MAX_CODE = 64
MAX_TOKEN = 128
MAX_PASSWORD = 1024
MAX_REASON = 500


class Emails:
    def __init__(self, strip_tags: bool) -> None:
        self._strip_tags = strip_tags

    def read(self, value: str, violations: list[FieldViolation]) -> tuple[str | None, str | None]:
        """The `email` field's address as given (in ASCII) and the person it names (canonical)."""
        address = checked_address("email", value.strip(), violations)
        if address is None:
            return None, None
        try:
            return address, canonical_email(address, self._strip_tags)
        except InvalidEmail:
            violations.append(FieldViolation("email", "not an email address"))
            return None, None


def opaque_token(field: str, value: str) -> str:
    if not 0 < len(value) <= MAX_TOKEN:
        raise InvalidArgument([FieldViolation(field, "required")])
    return value


def user_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([FieldViolation("user_id", "not a UUID")]) from None


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
