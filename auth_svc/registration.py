"""Registration: reserving a spot with an invite code and an email.

No answer reveals whether an email has an account. Registration checks everything that does not
depend on the email (input, budgets, the invite code, by holding a use of it) before it looks at
the email, and then does the same work either way: a new or pending email gets a registration of
its own, an account's owner a notice.

A pending registration belongs to the client that made it: Register answers an opaque token
naming it, and a verification code activates only the registration it was mailed for
(auth_svc.verification). A later registration of the same email is one more of its own.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import uuid

from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from prometheus_client import Counter

from auth_svc.peers import Invites
from auth_svc.requests import MAX_CODE, Emails
from auth_svc.store.records import Registration, UserRecord
from auth_svc.store.registrations import RegistrationStore
from auth_svc.submissions import FirstSubmission
from auth_svc.throttle import RequestBudgets
from auth_svc.tokens import token_digest
from auth_svc.verification import VerificationCodes
from mesh.errors import FieldViolation, InvalidArgument, MeshError, RateLimited
from mesh.followups import FollowUps
from mesh.mailing import Mail
from mesh.passwords import Passwords, password_problem
from mesh.sealing import keyed_hash
from mesh.timestamps import timestamp

SUBMITTED_AGAIN_WITHIN = 60.0
"""Seconds after a registration during which the same submission finds it (a client's retry)."""


class Registrations:
    def __init__(
        self,
        store: RegistrationStore,
        codes: VerificationCodes,
        passwords: Passwords,
        invites: Invites,
        submissions: FirstSubmission,
        budgets: RequestBudgets,
        emails: Emails,
        follow_ups: FollowUps,
        notice_links: dict[str, str],
        fingerprint_key: bytes,
        outcomes: Counter,
    ) -> None:
        self._store = store
        self._codes = codes
        self._passwords = passwords
        self._invites = invites
        self._submissions = submissions
        self._budgets = budgets
        self._emails = emails
        self._follow_ups = follow_ups
        self._notice_links = notice_links
        """The sign-in and reset pages the owner's notice links to."""
        self._fingerprint_key = fingerprint_key
        self._outcomes = outcomes
        """Registrations by outcome: pending, duplicate, or the refusal's reason."""

    async def register(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        try:
            return await self._registration(request)
        except MeshError as refusal:
            self._outcomes.labels(refusal.reason).inc()
            raise

    async def _registration(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        violations: list[FieldViolation] = []
        address, canonical = self._emails.read(request.email, violations)
        if (problem := password_problem(request.password)) is not None:
            violations.append(FieldViolation("password", problem))
        if not 0 < len(request.invite_code.strip()) <= MAX_CODE:
            violations.append(FieldViolation("invite_code", f"required, at most {MAX_CODE} characters"))
        if violations:
            raise InvalidArgument(violations)
        assert address is not None and canonical is not None
        if email_wait := await self._budgets.spend(canonical):
            raise RateLimited("too many registrations for this email", email_wait)
        # Keyed (and labelled apart from code digests): the mark sits in Redis for seconds, and
        # must not be a plain hash of a password.
        submitted = (b"double-submit", request.password.encode(), request.invite_code.encode())
        fingerprint = keyed_hash(self._fingerprint_key, b"\0".join(submitted))

        async def register() -> bytes:
            registered = await self._register(address, canonical, request.password, request.invite_code, fingerprint)
            return registered.SerializeToString()

        answer = await self._submissions.answer(canonical, fingerprint, register)
        return pb.RegisterResponse.FromString(answer)

    async def _register(
        self, address: str, canonical: str, password: str, invite_code: str, submission: bytes
    ) -> pb.RegisterResponse:
        async def reserve(abandoned: asyncio.Event) -> pb.RegisterResponse:
            return await self._reserve(address, canonical, password, invite_code, submission, abandoned)

        # The saga outlives a cancelled call (a client that left, a deadline that passed): a use
        # held is either written into a registration or given back, never left to lapse.
        return await self._follow_ups.outlasting(reserve)

    async def _reserve(
        self,
        address: str,
        canonical: str,
        password: str,
        invite_code: str,
        submission: bytes,
        abandoned: asyncio.Event,
    ) -> pb.RegisterResponse:
        """Holds one use of the code, then writes the registration, or mails the owner of the
        email's account a notice; gives the use back if the write fails or the call was
        abandoned before it. The same submission made moments ago, whose answer its client
        lost (a replica killed between the write and the reply), is answered with that
        registration under a new token, and nothing is held or mailed again."""
        password_hash = await self._passwords.hash(password)
        if abandoned.is_set():
            raise asyncio.CancelledError
        again = await self._store.submitted_again(canonical, submission, SUBMITTED_AGAIN_WITHIN)
        if again is not None:
            registration_id, code_expires = again
            self._outcomes.labels("submitted_again").inc()
            token = self._token(registration_id, submission)
            return pb.RegisterResponse(verification_expire_time=timestamp(code_expires), registration=token)
        hold = await self._invites.hold(invite_code, address)
        registration_id = uuid.uuid4()
        token = self._token(registration_id, submission)
        try:
            if abandoned.is_set():
                raise asyncio.CancelledError
            registered = await self._store.register(
                _registration(
                    registration_id, address, canonical, password_hash, token_digest(token), submission, hold
                ),
                *self._codes.fresh(canonical, address),
            )
        except BaseException:
            await self._invites.release(hold.id)
            raise
        if registered.account is not None:
            # The hold is left to lapse, as an abandoned registration's would; the notice is
            # queued after the answer, which so waits for no more than a new registration's.
            self._follow_ups.start(self._notify_owner(registered.account))
            self._outcomes.labels("duplicate").inc()
        else:
            self._outcomes.labels("pending").inc()
        return pb.RegisterResponse(verification_expire_time=timestamp(self._codes.expiry()), registration=token)

    def _token(self, registration_id: uuid.UUID, submission: bytes) -> str:
        """The token naming a registration: derived from it and its submission under a key of
        auth_svc's, so the same submission sent again is answered the same token (only its
        digest is kept)."""
        keyed = keyed_hash(self._fingerprint_key, b"registration\0" + registration_id.bytes + submission)
        return base64.urlsafe_b64encode(keyed).decode().rstrip("=")

    async def _notify_owner(self, owner: UserRecord) -> None:
        notice = Mail(mail_pb.EMAIL_TEMPLATE_DUPLICATE_REGISTRATION_NOTICE, owner.email, dict(self._notice_links))
        await self._store.notify(owner, notice)


def _registration(
    registration_id: uuid.UUID,
    address: str,
    canonical: str,
    password_hash: str,
    digest: bytes,
    submission: bytes,
    hold: invite_pb.Hold,
) -> Registration:
    referrer = hold.referrer
    return Registration(
        id=registration_id,
        email=address,
        canonical_email=canonical,
        password_hash=password_hash,
        registration_digest=digest,
        submission_digest=submission,
        hold_id=uuid.UUID(hold.id),
        hold_expire_time=hold.expire_time.ToDatetime(datetime.UTC),
        referrer_user_id=uuid.UUID(referrer.user_id) if referrer.WhichOneof("kind") == "user_id" else None,
        referrer_admin_id=uuid.UUID(referrer.admin_id) if referrer.WhichOneof("kind") == "admin_id" else None,
        campaign_id=uuid.UUID(hold.campaign_id) if hold.campaign_id else None,
        invite_quota=hold.invite_quota,
        invite_uses=hold.invite_uses,
    )
