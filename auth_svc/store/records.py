"""What the auth schema's slices read and write, and what they promise the outbox."""

from __future__ import annotations

import datetime
import enum
import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from auth_svc.domain import TokenState, UserState
from auth_svc.models import refresh_tokens
from mesh.mailing import SEND_EMAIL, Mail, mail_payload
from mesh.outbox import Outbox

PURGE_BATCH = 500
CONFIRM_HOLD = "confirm_hold"
RELEASE_HOLD = "release_hold"
MINT_CODES = "mint_codes"
REVOKE_SESSIONS = "revoke_sessions"


@dataclass(frozen=True)
class UserRecord:
    id: uuid.UUID
    email: str
    canonical_email: str
    password_hash: str
    state: UserState
    referrer_user_id: uuid.UUID | None
    referrer_admin_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    hold_expire_time: datetime.datetime | None
    campaign_id: uuid.UUID | None
    invite_quota: int
    invite_uses: int
    create_time: datetime.datetime
    verify_time: datetime.datetime | None


@dataclass(frozen=True)
class Registration:
    id: uuid.UUID
    email: str
    canonical_email: str
    password_hash: str
    registration_digest: bytes
    submission_digest: bytes
    hold_id: uuid.UUID
    hold_expire_time: datetime.datetime
    referrer_user_id: uuid.UUID | None
    referrer_admin_id: uuid.UUID | None
    campaign_id: uuid.UUID | None
    invite_quota: int
    invite_uses: int


@dataclass(frozen=True)
class NewCode:
    """A verification code as kept: its digest, its end and the attempts it allows."""

    digest: bytes
    expire_time: datetime.datetime
    attempts: int


@dataclass(frozen=True)
class Attempt:
    """One attempt taken at a pending registration's code: its digest to compare."""

    user_id: uuid.UUID
    code_digest: bytes
    password_hash: str


@dataclass(frozen=True)
class Registered:
    """What a registration wrote: the pending registration, or nothing because the email has an
    account (`account`)."""

    pending: UserRecord | None
    account: UserRecord | None


@dataclass(frozen=True)
class Work:
    """A message for the outbox relay."""

    kind: str
    payload: dict[str, Any]


class Rotation(enum.Enum):
    ROTATED = "rotated"
    REUSED = "reused"
    """A rotated token came back: its whole family is revoked now."""
    INVALID = "invalid"


@dataclass(frozen=True)
class Rotated:
    outcome: Rotation
    user_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    """The token's family: the session its access tokens name, and the one revoked on reuse."""


@dataclass(frozen=True)
class NewToken:
    digest: bytes
    expire_time: datetime.datetime


def user_record(row: Any) -> UserRecord:
    """From a driver record or an engine row: both map column names to values."""
    values = row if isinstance(row, asyncpg.Record) else row._mapping
    return UserRecord(**{name: values[name] for name in _USER_FIELDS}, state=UserState(values["state"]))


_USER_FIELDS = [name for name in UserRecord.__dataclass_fields__ if name != "state"]


async def add_mail(outbox: Outbox, connection: AsyncConnection, canonical_email: str, mail: Mail) -> None:
    """Promises `mail` in the transaction of `connection`."""
    await outbox.add(connection, canonical_email, SEND_EMAIL, mail_payload(mail))


async def revoke_sessions(outbox: Outbox, connection: AsyncConnection, tokens: Any) -> list[uuid.UUID]:
    """Revokes the refresh tokens `tokens` selects, and promises the outbox to tell every
    verifier their sessions ended (mesh.revocations); answers those sessions."""
    revoked = await connection.execute(
        update(refresh_tokens)
        .where(tokens, refresh_tokens.c.state != int(TokenState.REVOKED))
        .values(state=int(TokenState.REVOKED))
        .returning(refresh_tokens.c.user_id, refresh_tokens.c.family_id)
    )
    rows = revoked.all()
    sessions = sorted({row.family_id for row in rows})
    if sessions:
        payload = {"sessions": [str(session) for session in sessions]}
        await outbox.add(connection, str(rows[0].user_id), REVOKE_SESSIONS, payload)
    return sessions
