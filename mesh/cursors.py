"""Page tokens (AIP-158) that are opaque and tamper-proof: a keyset position, MAC'd together with
the query it belongs to, so a token cannot be edited, forged or replayed against other filters."""

from __future__ import annotations

import base64
import datetime
import hmac
import json
import uuid
from collections.abc import Sequence

from mesh.errors import FieldViolation
from mesh.sealing import keyed_hash

_TAG_BYTES = 16
DEFAULT_PAGE = 50
MAX_PAGE = 500
Keyset = tuple[datetime.datetime, uuid.UUID]
"""A position in a listing ordered newest first by (create_time, id)."""


def page_size(asked: int, violations: list[FieldViolation]) -> int:
    """The page size a request asked for (0: the default), or a violation of `page_size`."""
    size = asked or DEFAULT_PAGE
    if not 0 < size <= MAX_PAGE:
        violations.append(FieldViolation("page_size", f"between 1 and {MAX_PAGE}"))
    return size


class InvalidPageToken(ValueError):
    pass


class PageTokens:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, position: Sequence[str], query: str) -> str:
        payload = json.dumps(list(position), separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(payload + self._tag(payload, query)).decode().rstrip("=")

    def position(self, token: str, query: str) -> list[str]:
        """The position a token of this query carries; `InvalidPageToken` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise InvalidPageToken("not a page token") from None
        # Only the one encoding we issue: unused trailing bits must not make a second valid token.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
            raise InvalidPageToken("not a page token")
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, self._tag(payload, query)):
            raise InvalidPageToken("not a page token of this query")
        position = json.loads(payload)
        if not isinstance(position, list) or not all(isinstance(part, str) for part in position):
            raise InvalidPageToken("not a page token of this query")
        return position

    def _tag(self, payload: bytes, query: str) -> bytes:
        return keyed_hash(self._key, query.encode() + b"\0" + payload)[:_TAG_BYTES]

    def keyset_after(self, token: str, query: str, violations: list[FieldViolation]) -> Keyset | None:
        """Where the page of `token` starts (None for the first page), or a violation of `page_token`."""
        if not token:
            return None
        try:
            moment, row_id = self.position(token, query)
            return datetime.datetime.fromisoformat(moment), uuid.UUID(row_id)
        except (InvalidPageToken, ValueError):
            violations.append(FieldViolation("page_token", "not a token this query gave out"))
            return None

    def keyset_next(self, page: Sequence[tuple[datetime.datetime, uuid.UUID]], size: int, query: str) -> str:
        """The token of the page after a full one (empty after the last)."""
        if len(page) < size:
            return ""
        moment, row_id = page[-1]
        return self.issue((moment.isoformat(), str(row_id)), query)
