"""Sessions: signing in, refreshing, signing out, the published keys of access tokens, and the
session every way in ends with (an access token and the refresh token of its family).

Sign-in checks a decoy hash for an unknown email, so its answer takes as long either way, and
failed sign-ins slow down, then stop, per account and per client address (mesh.sign_ins).
"""

from __future__ import annotations

import asyncio
import datetime
import uuid

import structlog
from invitemesh.auth.v1 import auth_service_pb2 as pb

from auth_svc.domain import UserState
from auth_svc.requests import MAX_PASSWORD, Emails, now, opaque_token
from auth_svc.revocations import SessionRevocations
from auth_svc.store.records import NewToken, Rotation
from auth_svc.store.sessions import SessionStore
from auth_svc.store.users import UserStore
from auth_svc.tokens import new_opaque_token, token_digest
from mesh.clients import client_address
from mesh.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from mesh.passwords import Passwords
from mesh.sign_ins import SignInThrottle, sign_in_delay
from mesh.timestamps import timestamp
from mesh.token_keys import StoredKeyRing

log = structlog.get_logger("auth_svc.sessions")


class Sessions:
    def __init__(
        self,
        store: SessionStore,
        users: UserStore,
        keys: StoredKeyRing,
        passwords: Passwords,
        sign_ins: SignInThrottle,
        revoked: SessionRevocations,
        emails: Emails,
        refresh_ttl: datetime.timedelta,
    ) -> None:
        self._store = store
        self._users = users
        self._keys = keys
        self._passwords = passwords
        self._sign_ins = sign_ins
        self._revoked = revoked
        self._emails = emails
        self._refresh_ttl = refresh_ttl

    async def login(self, request: pb.LoginRequest) -> pb.LoginResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._emails.read(request.email, violations)
        if not 0 < len(request.password) <= MAX_PASSWORD:
            violations.append(FieldViolation("password", "required"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        client = client_address()
        failures = await self._sign_ins.admit(canonical, client)
        if delay := sign_in_delay(failures):
            await asyncio.sleep(delay)
        user = await self._users.signing_in(canonical)
        verdict = await self._passwords.verify(user.password_hash if user else None, request.password)
        if user is None or not verdict.matches:
            await self._sign_ins.failed(canonical, client)
            raise Unauthenticated("INVALID_CREDENTIALS", "the email or the password is wrong")
        if failures:
            await self._sign_ins.succeeded(canonical)
        if user.state is UserState.PENDING_VERIFICATION:
            raise PermissionDenied("EMAIL_NOT_VERIFIED", "prove the email with the mailed code first")
        if user.state is UserState.SUSPENDED:
            raise PermissionDenied("USER_SUSPENDED", "this account is suspended")
        if verdict.needs_rehash:
            await self._users.set_password_hash(user.id, await self._passwords.hash(request.password))
        return pb.LoginResponse(session=await self.started(user.id))

    async def started(self, user_id: uuid.UUID) -> pb.Session:
        """A new session of the user: a refresh token of a new family and an access token."""
        refresh, token = self.new_refresh_token()
        session_id = uuid.uuid4()
        await self._store.start_session(user_id, session_id, token)
        return await self.session(user_id, session_id, refresh, token)

    async def refresh(self, request: pb.RefreshRequest) -> pb.RefreshResponse:
        presented = opaque_token("refresh_token", request.refresh_token)
        refresh, successor = self.new_refresh_token()
        rotated = await self._store.rotate(token_digest(presented), successor)
        if rotated.outcome is Rotation.REUSED:
            assert rotated.session_id is not None
            await self._revoked.now([rotated.session_id])
            log.warning("a rotated refresh token came back; its session is revoked")
            raise Unauthenticated("REFRESH_TOKEN_REUSED", "this refresh token was already used; sign in again")
        if rotated.user_id is None or rotated.session_id is None:
            raise Unauthenticated("REFRESH_TOKEN_INVALID", "the refresh token is unknown, expired or revoked")
        return pb.RefreshResponse(session=await self.session(rotated.user_id, rotated.session_id, refresh, successor))

    async def logout(self, request: pb.LogoutRequest) -> pb.LogoutResponse:
        presented = opaque_token("refresh_token", request.refresh_token)
        await self._revoked.now(await self._store.revoke_family(token_digest(presented)))
        return pb.LogoutResponse()

    async def published_keys(self) -> list[pb.JsonWebKey]:
        return (await self._keys.ready()).published()

    def new_refresh_token(self) -> tuple[str, NewToken]:
        """A refresh token as handed out and as kept (its digest and its end)."""
        token = new_opaque_token()
        return token, NewToken(token_digest(token), now() + self._refresh_ttl)

    async def session(self, user_id: uuid.UUID, session_id: uuid.UUID, refresh: str, token: NewToken) -> pb.Session:
        """The session as answered: a fresh access token, and the refresh token just kept."""
        access = (await self._keys.ready()).access_token(user_id, session_id)
        return pb.Session(
            access_token=access.token,
            access_token_expire_time=timestamp(access.expire_time),
            refresh_token=refresh,
            refresh_token_expire_time=timestamp(token.expire_time),
        )
