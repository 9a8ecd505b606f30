"""Verification: the mailed code that proves an email, for the registration it was mailed for,
named by the token Register answered or by that registration's own password. Proving it makes
the registration the account, with a first session, and promises other services what follows.

One answer for a wrong, expired or used-up code and for an email with no pending registration,
so the method does not tell which emails are registered; resends spend the same budgets for
every email and answer before they look.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Sequence

import structlog
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb

from auth_svc.domain import code_digest, is_verification_code, new_verification_code, same_digest
from auth_svc.requests import MAX_PASSWORD, MAX_TOKEN, Emails, now
from auth_svc.sessions import Sessions
from auth_svc.store.records import CONFIRM_HOLD, MINT_CODES, RELEASE_HOLD, NewCode, UserRecord, Work
from auth_svc.store.registrations import RegistrationStore
from auth_svc.store.users import UserStore
from auth_svc.store.verification import VerificationStore
from auth_svc.throttle import RequestBudgets
from auth_svc.tokens import token_digest
from auth_svc.users import user_message
from mesh.errors import FieldViolation, InvalidArgument, Unauthenticated
from mesh.followups import FollowUps
from mesh.mailing import Mail
from mesh.passwords import Passwords

log = structlog.get_logger("auth_svc.verification")


class VerificationCodes:
    """Codes as stored (a digest bound to the person) and as mailed."""

    def __init__(self, key: bytes, lifetime: datetime.timedelta, attempts: int) -> None:
        self._key = key
        self._lifetime = lifetime
        self._attempts = attempts

    def fresh(self, canonical_email: str, to: str) -> tuple[NewCode, Mail]:
        code = new_verification_code()
        expire = self.expiry()
        stored = NewCode(self.digest(canonical_email, code), expire, self._attempts)
        variables = {"code": code, "expires_in_minutes": str(round(self._lifetime.total_seconds() / 60))}
        return stored, Mail(mail_pb.EMAIL_TEMPLATE_VERIFICATION, to, variables, expire_time=expire)

    def digest(self, canonical_email: str, code: str) -> bytes:
        return code_digest(self._key, canonical_email, code)

    def expiry(self) -> datetime.datetime:
        return now() + self._lifetime


class Verification:
    def __init__(
        self,
        store: VerificationStore,
        users: UserStore,
        registrations: RegistrationStore,
        codes: VerificationCodes,
        passwords: Passwords,
        sessions: Sessions,
        budgets: RequestBudgets,
        emails: Emails,
        follow_ups: FollowUps,
    ) -> None:
        self._store = store
        self._users = users
        self._registrations = registrations
        self._codes = codes
        self._passwords = passwords
        self._sessions = sessions
        self._budgets = budgets
        self._emails = emails
        self._follow_ups = follow_ups

    async def verify_email(self, request: pb.VerifyEmailRequest) -> pb.VerifyEmailResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._emails.read(request.email, violations)
        code = request.code.strip()
        if not is_verification_code(code):
            violations.append(FieldViolation("code", "the six digits from the email"))
        proof = request.WhichOneof("proof")
        if proof is None:
            violations.append(
                FieldViolation("registration", "required: the token Register answered, or else the password")
            )
        elif proof == "registration" and len(request.registration) > MAX_TOKEN:
            violations.append(FieldViolation("registration", "the token Register answered"))
        elif proof == "password" and not 0 < len(request.password) <= MAX_PASSWORD:
            violations.append(FieldViolation("password", "the password given at registration"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        mailed = self._codes.digest(canonical, code)
        if proof == "registration":
            registration = token_digest(request.registration)
            attempt = await self._store.take_verification_attempt(canonical, registration)
            proven = attempt if attempt is not None and same_digest(attempt.code_digest, mailed) else None
            if attempt is None:
                return await self._verified_again(canonical, registration, mailed)
        else:
            attempts = await self._store.take_verification_attempts(canonical)
            matched = next((a for a in attempts if same_digest(a.code_digest, mailed)), None)
            # One hash checked whatever matched, so the answer takes as long either way.
            verdict = await self._passwords.verify(matched.password_hash if matched else None, request.password)
            proven = matched if verdict.matches else None
        if proven is None:
            raise _wrong_code()
        refresh, token = self._sessions.new_refresh_token()
        session_id = uuid.uuid4()
        user = await self._store.activate(proven.user_id, session_id, token, _activation_work)
        if user is None:
            raise _wrong_code()
        log.info("account active", user_id=str(user.id))
        session = await self._sessions.session(user.id, session_id, refresh, token)
        return pb.VerifyEmailResponse(user=user_message(user), session=session)

    async def _verified_again(self, canonical: str, registration: bytes, mailed: bytes) -> pb.VerifyEmailResponse:
        """The account the same registration and code made, with a session of its own: a client
        told to try again after its first answer was lost gets what it would have had."""
        attempt = await self._store.take_repeated_attempt(canonical, registration)
        if attempt is None or not same_digest(attempt.code_digest, mailed):
            raise _wrong_code()
        user = await self._users.user(attempt.user_id)
        if user is None:
            raise _wrong_code()
        log.info("verification presented again; a new session", user_id=str(user.id))
        return pb.VerifyEmailResponse(user=user_message(user), session=await self._sessions.started(user.id))

    async def resend_verification(self, request: pb.ResendVerificationRequest) -> pb.ResendVerificationResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._emails.read(request.email, violations)
        if len(request.registration) > MAX_TOKEN:
            violations.append(FieldViolation("registration", "the token Register answered"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        if not await self._budgets.spend(canonical):
            digest = token_digest(request.registration) if request.registration else None
            self._follow_ups.start(self._resend(canonical, digest))
        return pb.ResendVerificationResponse()

    async def _resend(self, canonical: str, digest: bytes | None) -> None:
        pending = await self._registrations.pending_registration(canonical, digest)
        if pending is not None:
            await self._store.replace_code(pending, *self._codes.fresh(canonical, pending.email))


def _wrong_code() -> Unauthenticated:
    return Unauthenticated("VERIFICATION_CODE_INVALID", "the code is wrong, expired or used up; ask for a new one")


def _activation_work(user: UserRecord, lapsed_holds: Sequence[uuid.UUID]) -> list[Work]:
    """What an activation promises other services: the held use confirmed, the uses held by the
    email's other pending registrations given back, then the new user's own codes minted (and
    mailed), in that order."""
    work = [Work(CONFIRM_HOLD, {"hold_id": str(user.hold_id), "user_id": str(user.id)})] if user.hold_id else []
    work += [Work(RELEASE_HOLD, {"hold_id": str(hold)}) for hold in lapsed_holds]
    if user.invite_quota > 0:
        campaign = str(user.campaign_id) if user.campaign_id else ""
        mint = {
            "count": user.invite_quota,
            "max_uses": user.invite_uses,
            "campaign_id": campaign,
            "to": user.email,
            "user_id": str(user.id),
        }
        work.append(Work(MINT_CODES, mint))
    return work
