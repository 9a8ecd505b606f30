"""Admin sign-in in two steps, and sign-out.

`CreateSession` checks the password (a decoy hash for an unknown email, so both take as long)
and answers an MFA token, never a session: a multi-stage token (mesh.stage_tokens) for the
function `admin-sign-in` in the state `password-ok`, good once for 5 minutes at most.
`VerifySessionMfa` takes that token and a TOTP code; the code's time step must be later than any
the admin used before (so a code works once), and the session starts in the same statement that
takes the step. Failed steps slow down and then stop per admin and per client address; a locked
or disabled admin hears exactly what a wrong password hears. Every success and failure is audited.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from typing import NoReturn

import structlog
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncConnection

from admin_svc.audit import Auditor
from admin_svc.domain import AdminState, totp_step
from admin_svc.passkeys import MAX_CREDENTIAL, Passkeys, wrong_passkey
from admin_svc.store.accounts import AccountStore, AdminRecord
from mesh.access import current_principal
from mesh.clients import client_address
from mesh.emails import InvalidEmail, canonical_email
from mesh.errors import FieldViolation, InvalidArgument, MeshError, Unauthenticated
from mesh.passwords import PASSWORD_MAX, Passwords
from mesh.revocations import RevokedSessions
from mesh.sealing import Sealer
from mesh.sign_ins import AccountLocked, SignInThrottle, sign_in_delay
from mesh.stage_tokens import StageTokens
from mesh.timestamps import optional_timestamp, timestamp
from mesh.token_keys import StoredKeyRing

log = structlog.get_logger("admin_svc.sessions")
SIGN_IN, PASSWORD_OK = "admin-sign-in", "password-ok"
MAX_TOKEN = 512


def admin_message(admin: AdminRecord) -> pb.Admin:
    return pb.Admin(
        id=str(admin.id),
        email=admin.email,
        role=int(admin.role),  # type: ignore[arg-type]
        state=int(admin.state),  # type: ignore[arg-type]
        create_time=timestamp(admin.create_time),
        last_sign_in_time=optional_timestamp(admin.last_sign_in_time),
    )


def totp_seal_record(admin_id: uuid.UUID) -> bytes:
    """What a sealed TOTP secret is bound to: its admin (a secret moved to another row won't open)."""
    return b"admin totp " + admin_id.bytes


class AdminSessions:
    def __init__(
        self,
        accounts: AccountStore,
        passwords: Passwords,
        throttle: SignInThrottle,
        stages: StageTokens,
        totp_sealer: Sealer,
        keys: StoredKeyRing,
        revoked: RevokedSessions,
        auditor: Auditor,
        access_ttl: datetime.timedelta,
        passkeys: Passkeys,
    ) -> None:
        self._accounts = accounts
        self._passwords = passwords
        self._throttle = throttle
        self._stages = stages
        self._totp_sealer = totp_sealer
        self._keys = keys
        self._revoked = revoked
        self._auditor = auditor
        self._access_ttl = access_ttl
        self._passkeys = passkeys
        self.remembered = int(access_ttl.total_seconds()) + 120
        """Seconds a revoked session stays on the verifiers' list: longer than its last token lives."""

    async def create_session(self, request: pb.CreateSessionRequest) -> pb.CreateSessionResponse:
        violations: list[FieldViolation] = []
        canonical = None
        try:
            canonical = canonical_email(request.email)
        except InvalidEmail:
            violations.append(FieldViolation("email", "not an email address"))
        if not 0 < len(request.password) <= PASSWORD_MAX:
            violations.append(FieldViolation("password", f"required, at most {PASSWORD_MAX} characters"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        client = client_address()
        try:
            failures = await self._throttle.admit(canonical, client)
        except AccountLocked:
            # A lock must not tell an attacker they found an admin's email.
            await self._refuse(request, canonical, _invalid_credentials())
        if delay := sign_in_delay(failures):
            await asyncio.sleep(delay)
        admin = await self._accounts.by_email(canonical)
        verdict = await self._passwords.verify(admin.password_hash if admin else None, request.password)
        if admin is None or not verdict.matches or admin.state is not AdminState.ACTIVE:
            await self._throttle.failed(canonical, client)
            await self._refuse(request, canonical, _invalid_credentials())
        if verdict.needs_rehash:
            await self._accounts.set_password_hash(admin.id, await self._passwords.hash(request.password))
        issued = await self._stages.issue(admin.id, SIGN_IN, PASSWORD_OK)
        return pb.CreateSessionResponse(mfa_token=issued.token, mfa_expire_time=timestamp(issued.expire_time))

    async def passkey_options(self, request: pb.StartPasskeySignInRequest) -> pb.StartPasskeySignInResponse:
        if not 0 < len(request.mfa_token) <= MAX_TOKEN:
            raise InvalidArgument([FieldViolation("mfa_token", "required")])
        admin_id = await self._stages.peek(request.mfa_token, SIGN_IN, PASSWORD_OK)
        if admin_id is None:
            raise Unauthenticated("MFA_TOKEN_INVALID", "sign in with the password again")
        return pb.StartPasskeySignInResponse(
            options_json=await self._passkeys.sign_in_options(request.mfa_token, admin_id)
        )

    async def verify_session_mfa(self, request: pb.VerifySessionMfaRequest) -> pb.VerifySessionMfaResponse:
        factor = request.WhichOneof("second_factor") or "totp_code"
        violations = [
            FieldViolation(name, "required")
            for name, value in (("mfa_token", request.mfa_token), (factor, getattr(request, factor)))
            if not 0 < len(value) <= (MAX_TOKEN if name != "passkey_credential_json" else MAX_CREDENTIAL)
        ]
        if violations:
            raise InvalidArgument(violations)
        admin_id = await self._stages.redeem(request.mfa_token, SIGN_IN, PASSWORD_OK)
        admin = await self._accounts.by_id(admin_id) if admin_id else None
        if admin is None:
            await self._refuse(request, "", Unauthenticated("MFA_TOKEN_INVALID", "sign in with the password again"))
        canonical, client = canonical_email(admin.email), client_address()
        try:
            failures = await self._throttle.admit(canonical, client)
        except AccountLocked:
            await self._refuse(request, f"admin:{admin.id}", _wrong_code())
        session_id = uuid.uuid4()
        expire = datetime.datetime.now(datetime.UTC) + self._access_ttl
        signed_in = None
        if factor == "passkey_credential_json":
            used = await self._passkeys.asserted(request.mfa_token, admin.id, request.passkey_credential_json)
            if used is not None:
                async with self._auditor.transaction() as connection:
                    if await self._passkeys.store.use(connection, used[0].id, used[1]):
                        signed_in = await self._signed_in(connection, request, admin.id, None, session_id, expire)
            refusal = wrong_passkey()
        else:
            secret = self._totp_sealer.unseal(totp_seal_record(admin.id), admin.sealed_totp_secret).decode()
            step = totp_step(secret, request.totp_code, time.time())
            if step is not None:
                async with self._auditor.transaction() as connection:
                    signed_in = await self._signed_in(connection, request, admin.id, step, session_id, expire)
            refusal = _wrong_code()
        if signed_in is None:
            await self._throttle.failed(canonical, client)
            await self._refuse(request, f"admin:{admin.id}", refusal)
        if failures:
            await self._throttle.succeeded(canonical)
        access = (await self._keys.ready()).access_token(signed_in.id, session_id, role=signed_in.role.claim)
        return pb.VerifySessionMfaResponse(
            access_token=access.token,
            access_token_expire_time=timestamp(access.expire_time),
            admin=admin_message(signed_in),
        )

    async def _signed_in(
        self,
        connection: AsyncConnection,
        request: pb.VerifySessionMfaRequest,
        admin_id: uuid.UUID,
        step: int | None,
        session_id: uuid.UUID,
        expire: datetime.datetime,
    ) -> AdminRecord | None:
        signed_in = await self._accounts.sign_in(connection, admin_id, step, session_id, expire)
        if signed_in is not None:
            await self._auditor.record(
                connection, "VerifySessionMfa", str(admin_id), request, actor=f"admin:{admin_id}"
            )
        return signed_in

    async def revoke_session(self, request: pb.RevokeSessionRequest, session_id: uuid.UUID) -> None:
        async with self._auditor.transaction() as connection:
            await self._accounts.end_session(connection, session_id)
            await self._auditor.record(connection, "RevokeSession", current_principal.get().id, request)
        await self.tell([session_id])

    async def tell(self, sessions: list[uuid.UUID]) -> None:
        """Tells every verifier the sessions ended; the sweep tells them again (admin_svc.jobs),
        so a Redis that missed this hears it within a sweep."""
        try:
            await self._revoked.revoke(sessions, self.remembered)
        except RedisError:
            log.warning("ended sessions not yet told to the verifiers; the sweep will", sessions=len(sessions))

    async def published_keys(self) -> list[auth_pb.JsonWebKey]:
        return (await self._keys.ready()).published()

    async def _refuse(
        self, request: pb.CreateSessionRequest | pb.VerifySessionMfaRequest, actor: str, error: MeshError
    ) -> NoReturn:
        """Audits a failed step and raises `error`."""
        action = "CreateSession" if isinstance(request, pb.CreateSessionRequest) else "VerifySessionMfa"
        await self._auditor.refused(action, actor, request, error, actor=actor or "unknown")
        raise error


def _invalid_credentials() -> Unauthenticated:
    return Unauthenticated("INVALID_CREDENTIALS", "the email or the password is wrong")


def _wrong_code() -> Unauthenticated:
    return Unauthenticated(
        "TOTP_CODE_INVALID", "the code is wrong or was used already; sign in with the password again"
    )
