"""SQL of the `auth` schema.

Every rule that must hold under concurrency is one conditional statement, not a read followed by
a write: one account per canonical email is a partial unique index, while each pending
registration of an email is a row of its own that nothing later overwrites; a registration is
written only where the email has no account, in the same statement that looks; an attempt at a
verification code is taken before the code is compared, so parallel guesses cannot exceed the
limit; of two registrations verified at once the unique index lets one become the account; a
refresh token rotates only from ACTIVE, so of two uses at once one wins and the other is seen as
reuse.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import (
    DateTime,
    LargeBinary,
    SmallInteger,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auth_svc.domain import TokenState, UserState
from auth_svc.models import outbox, password_resets, refresh_tokens, signing_keys, users, verification_codes
from auth_svc.sessions import StoredKey
from mesh.cursors import Keyset
from mesh.db import DriverPool, DriverStatement
from mesh.outbox import Outbox

PURGE_BATCH = 500
SEND_EMAIL = "send_email"
CONFIRM_HOLD = "confirm_hold"
RELEASE_HOLD = "release_hold"
MINT_CODES = "mint_codes"
REVOKE_SESSIONS = "revoke_sessions"
_ONE_ACCOUNT_PER_EMAIL = "users_one_account_per_email"


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
    email: str
    canonical_email: str
    password_hash: str
    registration_digest: bytes
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
class Mail:
    """An email to send through the outbox, after the transaction that asked for it commits."""

    template: int
    to: str
    variables: dict[str, str]
    expire_time: datetime.datetime | None = None
    """When what the mail carries stops working: mail_svc never sends it later."""


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


class AuthStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, outbox: Outbox) -> None:
        self._engine = engine
        self._driver = driver
        self._outbox = outbox

    # Accounts

    async def user(self, user_id: uuid.UUID) -> UserRecord | None:
        async with self._driver.connection() as connection:
            row = await _USER_BY_ID.fetchrow(connection, id=user_id)
        return _user(row) if row else None

    async def account(self, canonical_email: str) -> UserRecord | None:
        """The account of an email (active or suspended), not its pending registrations."""
        async with self._driver.connection() as connection:
            row = await _ACCOUNT_BY_EMAIL.fetchrow(connection, canonical_email=canonical_email)
        return _user(row) if row else None

    async def signing_in(self, canonical_email: str) -> UserRecord | None:
        """Whom a sign-in with this email is about: its account, else its newest pending
        registration (so that its own password can be told to verify first)."""
        async with self._driver.connection() as connection:
            row = await _SIGNING_IN.fetchrow(connection, canonical_email=canonical_email)
        return _user(row) if row else None

    async def pending_registration(self, canonical_email: str, digest: bytes | None) -> UserRecord | None:
        """The live pending registration of an email that `digest` names, or its newest."""
        statement = _PENDING_NEWEST if digest is None else _PENDING_NAMED
        named = {} if digest is None else {"digest": digest}
        async with self._driver.connection() as connection:
            row = await statement.fetchrow(connection, canonical_email=canonical_email, **named)
        return _user(row) if row else None

    async def register(self, registration: Registration, code: NewCode, mail: Mail) -> Registered:
        """A pending registration with its verification code and its email, unless the email has
        an account: one statement, so the look and the write are one atomic step, on the driver
        path. Earlier pending registrations of the email are left as they are."""
        message_id, sealed = self._outbox.sealed(SEND_EMAIL, _mail_payload(mail))
        async with self._driver.connection() as connection:
            row = await _REGISTER.fetchrow(
                connection,
                id=uuid.uuid4(),
                state=int(UserState.PENDING_VERIFICATION),
                **vars(registration),
                code_digest=code.digest,
                code_expire_time=code.expire_time,
                attempts_left=code.attempts,
                message_id=message_id,
                payload=sealed,
            )
        assert row is not None, "the statement answers the registration or the account"
        if not row["written"]:
            return Registered(None, _user(row))
        self._outbox.notify()
        return Registered(_user(row), None)

    async def replace_code(self, user: UserRecord, code: NewCode, mail: Mail) -> bool:
        """A new verification code for a pending registration (its old one stops working)."""
        async with self._engine.begin() as connection:
            pending = await connection.scalar(
                select(users.c.id)
                .where(users.c.id == user.id, users.c.state == int(UserState.PENDING_VERIFICATION))
                .with_for_update()
            )
            if pending is None:
                return False
            await _replace_code(connection, user.id, code)
            await self._mail(connection, user.canonical_email, mail)
        self._outbox.notify()
        return True

    async def take_verification_attempt(self, canonical_email: str, digest: bytes) -> Attempt | None:
        """Spends one attempt at the live code of the pending registration `digest` names and
        answers it; None when there is none, its code expired, or its attempts are spent."""
        async with self._driver.connection() as connection:
            row = await _TAKE_NAMED_ATTEMPT.fetchrow(connection, canonical_email=canonical_email, digest=digest)
        return Attempt(**row) if row else None

    async def take_verification_attempts(self, canonical_email: str) -> list[Attempt]:
        """Spends one attempt at the live code of every pending registration of the email, for a
        verification that names its registration by password: which one it is shows only once
        the code is compared, and an attempt must be spent before that."""
        async with self._driver.connection() as connection:
            rows = await _TAKE_ATTEMPTS.fetch(connection, canonical_email=canonical_email)
        return [Attempt(**row) for row in rows]

    async def activate(
        self,
        pending_id: uuid.UUID,
        session_id: uuid.UUID,
        session: NewToken,
        follow_up: Callable[[UserRecord, list[uuid.UUID]], Sequence[Work]],
    ) -> UserRecord | None:
        """Pending → ACTIVE, with a first session (`session` the first refresh token of the family
        `session_id`); the email's other pending registrations are
        removed, and `follow_up(account, their holds)` says what the outbox then owes other
        services. None if the registration is gone or another one of the email won."""
        try:
            async with self._engine.begin() as connection:
                row = (
                    await connection.execute(
                        update(users)
                        .where(users.c.id == pending_id, users.c.state == int(UserState.PENDING_VERIFICATION))
                        .values(state=int(UserState.ACTIVE), verify_time=func.now())
                        .returning(*users.c)
                    )
                ).first()
                if row is None:
                    return None
                account = _user(row)
                lapsed = await connection.execute(
                    delete(users)
                    .where(
                        users.c.canonical_email == account.canonical_email,
                        users.c.state == int(UserState.PENDING_VERIFICATION),
                    )
                    .returning(users.c.hold_id)
                )
                others = sorted({hold for hold in lapsed.scalars() if hold and hold != account.hold_id})
                await connection.execute(delete(verification_codes).where(verification_codes.c.user_id == pending_id))
                for item in follow_up(account, others):
                    await self._outbox.add(connection, account.canonical_email, item.kind, item.payload)
                await _insert_token(connection, pending_id, session_id, session)
        except IntegrityError as error:
            if _constraint(error) != _ONE_ACCOUNT_PER_EMAIL:
                raise
            return None
        self._outbox.notify()
        return account

    async def notify(self, user: UserRecord, mail: Mail) -> None:
        async with self._engine.begin() as connection:
            await self._mail(connection, user.canonical_email, mail)
        self._outbox.notify()

    async def set_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))

    async def page(self, limit: int, after: Keyset | None, state: UserState | None) -> list[UserRecord]:
        """Users newest first, keyset-paginated on (create_time, id)."""
        query = select(users).order_by(users.c.create_time.desc(), users.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(users.c.state == int(state))
        if after is not None:
            query = query.where(tuple_(users.c.create_time, users.c.id) < tuple_(*after))
        async with self._engine.connect() as connection:
            return [_user(row) for row in await connection.execute(query)]

    async def change_state(
        self, user_id: uuid.UUID, allowed_from: frozenset[UserState], to: UserState
    ) -> tuple[UserRecord | None, list[uuid.UUID]]:
        """Moves an account from one of `allowed_from` to `to`; leaving ACTIVE revokes every
        session. Answers the account (None when unknown or in another state) and the sessions
        revoked."""
        revoked: list[uuid.UUID] = []
        async with self._engine.begin() as connection:
            row = (
                await connection.execute(
                    update(users)
                    .where(users.c.id == user_id, users.c.state.in_([int(state) for state in allowed_from]))
                    .values(state=int(to))
                    .returning(*users.c)
                )
            ).first()
            if row is not None and to is not UserState.ACTIVE:
                revoked = await self._revoke(connection, refresh_tokens.c.user_id == user_id)
        return (_user(row) if row else None), revoked

    async def expire_pending(self, batch: int = PURGE_BATCH) -> int:
        """Deletes pending registrations whose hold has lapsed (invite_svc returns the use itself)."""
        due = (
            select(users.c.id)
            .where(users.c.state == int(UserState.PENDING_VERIFICATION), users.c.hold_expire_time < func.now())
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        async with self._engine.begin() as connection:
            result = await connection.execute(delete(users).where(users.c.id.in_(due.scalar_subquery())))
        return int(result.rowcount)

    # Sessions

    async def start_session(self, user_id: uuid.UUID, session_id: uuid.UUID, token: NewToken) -> None:
        """A new session: `token` the first refresh token of the family `session_id`."""
        async with self._driver.connection() as connection:
            await _START_SESSION.execute(
                connection, id=session_id, digest=token.digest, user_id=user_id, expire_time=token.expire_time
            )

    async def rotate(self, digest: bytes, successor: NewToken) -> Rotated:
        """Exchanges an ACTIVE refresh token of an active account for `successor`, in its family:
        one statement on the driver path (the busiest path of the service), then, only when it
        rotated nothing, a look at why."""
        async with self._driver.connection() as connection:
            row = await _ROTATE.fetchrow(
                connection,
                digest=digest,
                id=uuid.uuid4(),
                successor=successor.digest,
                expire_time=successor.expire_time,
            )
        if row is not None:
            return Rotated(Rotation.ROTATED, row["user_id"], row["family_id"])
        async with self._engine.begin() as connection:
            seen = (
                await connection.execute(
                    select(refresh_tokens.c.state, refresh_tokens.c.family_id).where(refresh_tokens.c.digest == digest)
                )
            ).first()
            if seen is None or seen.state != int(TokenState.ROTATED):
                return Rotated(Rotation.INVALID)
            await self._revoke(connection, refresh_tokens.c.family_id == seen.family_id)
            return Rotated(Rotation.REUSED, session_id=seen.family_id)

    async def revoke_family(self, digest: bytes) -> list[uuid.UUID]:
        """Ends the session of a refresh token; answers it (none for an unknown token)."""
        family = select(refresh_tokens.c.family_id).where(refresh_tokens.c.digest == digest).scalar_subquery()
        async with self._engine.begin() as connection:
            return await self._revoke(connection, refresh_tokens.c.family_id == family)

    async def _revoke(self, connection: AsyncConnection, tokens: Any) -> list[uuid.UUID]:
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
            await self._outbox.add(connection, str(rows[0].user_id), REVOKE_SESSIONS, payload)
        return sessions

    # Password resets

    async def add_reset(self, user: UserRecord, token: NewToken, mail: Mail) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                insert(password_resets).values(digest=token.digest, user_id=user.id, expire_time=token.expire_time)
            )
            await self._mail(connection, user.canonical_email, mail)
        self._outbox.notify()

    async def reset_password(self, digest: bytes, password_hash: str) -> tuple[uuid.UUID | None, list[uuid.UUID]]:
        """Spends a live reset token: the new password, every reset token of the account spent,
        every session revoked. Answers the account (None for an unknown, spent or expired token)
        and the sessions revoked."""
        async with self._engine.begin() as connection:
            user_id = await connection.scalar(
                update(password_resets)
                .where(
                    password_resets.c.digest == digest,
                    password_resets.c.use_time.is_(None),
                    password_resets.c.expire_time > func.now(),
                    password_resets.c.user_id == users.c.id,
                    users.c.state == int(UserState.ACTIVE),
                )
                .values(use_time=func.now())
                .returning(password_resets.c.user_id)
            )
            if user_id is None:
                return None, []
            await connection.execute(update(users).where(users.c.id == user_id).values(password_hash=password_hash))
            await connection.execute(
                update(password_resets)
                .where(password_resets.c.user_id == user_id, password_resets.c.use_time.is_(None))
                .values(use_time=func.now())
            )
            revoked = await self._revoke(connection, refresh_tokens.c.user_id == user_id)
        return user_id, revoked

    async def purge_spent(self, keep: datetime.timedelta, batch: int = PURGE_BATCH) -> int:
        """Deletes refresh tokens and reset tokens past their expiry by more than `keep`, and spent
        reset tokens (a rotated refresh token is kept until it expires: its reuse must be seen)."""
        async with self._engine.begin() as connection:
            tokens = await connection.execute(
                delete(refresh_tokens).where(
                    refresh_tokens.c.id.in_(
                        select(refresh_tokens.c.id)
                        .where(refresh_tokens.c.expire_time < func.now() - keep)
                        .limit(batch)
                        .with_for_update(skip_locked=True)
                        .scalar_subquery()
                    )
                )
            )
            resets = await connection.execute(
                delete(password_resets).where(
                    or_(password_resets.c.use_time.is_not(None), password_resets.c.expire_time < func.now() - keep)
                )
            )
        return int(tokens.rowcount) + int(resets.rowcount)

    # Signing keys

    async def signing_keys(self) -> list[StoredKey]:
        async with self._engine.connect() as connection:
            rows = (await connection.execute(select(signing_keys))).all()
        return [StoredKey(row.kid, row.sealed_private_key, row.create_time, row.retire_time) for row in rows]

    async def add_signing_key(self, key: StoredKey, retire_current: bool) -> None:
        """Makes `key` the signing key: the first one (a replica that loses the race to create
        it keeps the winner's), or the next one, retiring the current."""
        async with self._engine.begin() as connection:
            if retire_current:
                await connection.execute(
                    update(signing_keys).where(signing_keys.c.retire_time.is_(None)).values(retire_time=func.now())
                )
            await connection.execute(
                upsert(signing_keys)
                .values(kid=key.kid, sealed_private_key=key.sealed_private_key)
                .on_conflict_do_nothing()
            )

    # The outbox

    async def _mail(self, connection: AsyncConnection, canonical_email: str, mail: Mail) -> None:
        await self._outbox.add(connection, canonical_email, SEND_EMAIL, _mail_payload(mail))


def _rotate_statement() -> Any:
    rotated = (
        update(refresh_tokens)
        .where(
            refresh_tokens.c.digest == bindparam("digest"),
            refresh_tokens.c.state == int(TokenState.ACTIVE),
            refresh_tokens.c.expire_time > func.now(),
            refresh_tokens.c.user_id == users.c.id,
            users.c.state == int(UserState.ACTIVE),
        )
        .values(state=int(TokenState.ROTATED))
        .returning(refresh_tokens.c.family_id, refresh_tokens.c.user_id)
        .cte("rotated")
    )
    successor = select(
        bindparam("id", type_=UUID(as_uuid=True)),
        bindparam("successor", type_=LargeBinary),
        rotated.c.family_id,
        rotated.c.user_id,
        literal(int(TokenState.ACTIVE)),
        bindparam("expire_time", type_=DateTime(timezone=True)),
    )
    return (
        insert(refresh_tokens)
        .from_select(["id", "digest", "family_id", "user_id", "state", "expire_time"], successor)
        .add_cte(rotated)
        .returning(refresh_tokens.c.user_id, refresh_tokens.c.family_id)
    )


def _register_statement() -> Any:
    columns = (
        "email",
        "canonical_email",
        "password_hash",
        "state",
        "registration_digest",
        "hold_id",
        "hold_expire_time",
        "referrer_user_id",
        "referrer_admin_id",
        "campaign_id",
        "invite_quota",
        "invite_uses",
    )
    account = _ACCOUNT.cte("account")
    registration = (
        insert(users)
        .from_select(
            ["id", *columns],
            select(*(bindparam(name, type_=users.c[name].type) for name in ("id", *columns))).where(
                ~exists(select(account.c.id))
            ),
        )
        .returning(*users.c)
        .cte("registration")
    )
    code = insert(verification_codes).from_select(
        ["user_id", "code_digest", "expire_time", "attempts_left"],
        select(
            registration.c.id,
            bindparam("code_digest", type_=LargeBinary),
            bindparam("code_expire_time", type_=DateTime(timezone=True)),
            bindparam("attempts_left", type_=SmallInteger),
        ),
    )
    mail = insert(outbox).from_select(
        ["id", "aggregate", "kind", "payload"],
        select(
            bindparam("message_id", type_=UUID(as_uuid=True)),
            registration.c.canonical_email,
            literal(SEND_EMAIL),
            bindparam("payload", type_=LargeBinary),
        ),
    )
    # Every data-modifying CTE runs, and the code and the mail only for a registration written.
    written = select(registration, literal(True).label("written"))
    found = select(account, literal(False).label("written"))
    return written.union_all(found).add_cte(code.cte("code"), mail.cte("mail"))


def _attempt_statement(*conditions: Any) -> Any:
    """Spends one attempt at the live codes of the pending registrations `conditions` select."""
    return (
        update(verification_codes)
        .where(
            verification_codes.c.user_id == users.c.id,
            users.c.canonical_email == bindparam("canonical_email"),
            users.c.state == int(UserState.PENDING_VERIFICATION),
            users.c.hold_expire_time > func.now(),
            verification_codes.c.attempts_left > 0,
            verification_codes.c.expire_time > func.now(),
            *conditions,
        )
        .values(attempts_left=verification_codes.c.attempts_left - 1)
        .returning(verification_codes.c.user_id, verification_codes.c.code_digest, users.c.password_hash)
    )


_ACCOUNT = select(users).where(
    users.c.canonical_email == bindparam("canonical_email"),
    users.c.state != int(UserState.PENDING_VERIFICATION),
)
_PENDING = select(users).where(
    users.c.canonical_email == bindparam("canonical_email"),
    users.c.state == int(UserState.PENDING_VERIFICATION),
    users.c.hold_expire_time > func.now(),
)
_ROTATE = DriverStatement(_rotate_statement())
_REGISTER = DriverStatement(_register_statement())
_TAKE_NAMED_ATTEMPT = DriverStatement(_attempt_statement(users.c.registration_digest == bindparam("digest")))
_TAKE_ATTEMPTS = DriverStatement(_attempt_statement())
_USER_BY_ID = DriverStatement(select(users).where(users.c.id == bindparam("id")))
_ACCOUNT_BY_EMAIL = DriverStatement(_ACCOUNT)
_SIGNING_IN = DriverStatement(
    select(users)
    .where(users.c.canonical_email == bindparam("canonical_email"))
    .order_by(users.c.state == int(UserState.PENDING_VERIFICATION), users.c.create_time.desc())
    .limit(1)
)
_PENDING_NAMED = DriverStatement(_PENDING.where(users.c.registration_digest == bindparam("digest")))
_PENDING_NEWEST = DriverStatement(_PENDING.order_by(users.c.create_time.desc()).limit(1))
_START_SESSION = DriverStatement(
    insert(refresh_tokens).values(
        id=bindparam("id"),
        digest=bindparam("digest"),
        family_id=bindparam("id"),
        user_id=bindparam("user_id"),
        state=int(TokenState.ACTIVE),
        expire_time=bindparam("expire_time"),
    )
)


async def _replace_code(connection: AsyncConnection, user_id: uuid.UUID, code: NewCode) -> None:
    statement = upsert(verification_codes).values(
        user_id=user_id, code_digest=code.digest, expire_time=code.expire_time, attempts_left=code.attempts
    )
    await connection.execute(
        statement.on_conflict_do_update(
            index_elements=[verification_codes.c.user_id],
            set_={name: statement.excluded[name] for name in ("code_digest", "expire_time", "attempts_left")},
        )
    )


async def _insert_token(connection: AsyncConnection, user_id: uuid.UUID, family_id: uuid.UUID, token: NewToken) -> None:
    await connection.execute(
        insert(refresh_tokens).values(
            id=uuid.uuid4(),
            digest=token.digest,
            family_id=family_id,
            user_id=user_id,
            state=int(TokenState.ACTIVE),
            expire_time=token.expire_time,
        )
    )


def _user(row: Any) -> UserRecord:
    """From a driver record or an engine row: both map column names to values."""
    values = row if isinstance(row, asyncpg.Record) else row._mapping
    return UserRecord(**{name: values[name] for name in _USER_FIELDS}, state=UserState(values["state"]))


_USER_FIELDS = [name for name in UserRecord.__dataclass_fields__ if name != "state"]


def _constraint(error: IntegrityError) -> str:
    return str(getattr(getattr(error.orig, "__cause__", None), "constraint_name", "") or "")


def _mail_payload(mail: Mail) -> dict[str, Any]:
    payload: dict[str, Any] = {"template": mail.template, "to": mail.to, "variables": mail.variables}
    if mail.expire_time is not None:
        payload["expire_time"] = mail.expire_time.isoformat()
    return payload
