"""auth_svc's gRPC surface: maps proto to domain and back.

No answer reveals whether an email has an account. Registration checks everything that does not
depend on the email (input, budgets, the invite code, by holding a use of it) before it looks at
the email, and then does the same work either way: a new or pending email gets a registration of
its own, an account's owner a notice. Resends and reset requests spend the same budgets for every
email and answer before they look: their mail is queued after the answer. Sign-in checks a decoy
hash for an unknown email.

A pending registration belongs to the client that made it: Register answers an opaque token
naming it, and a verification code activates only the registration it was mailed for, named by
that token or by its own password. A later registration of the same email is one more of its own.
"""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import Sequence
from typing import Any

import grpc
import structlog
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from prometheus_client import Counter

from auth_svc import models
from auth_svc.domain import (
    UserState,
    code_digest,
    is_verification_code,
    new_verification_code,
    password_problem,
    same_digest,
    sign_in_delay,
)
from auth_svc.jobs import sweep_job
from auth_svc.keyring import StoredKeyRing
from auth_svc.passwords import Passwords
from auth_svc.peers import Invites, PeerStubs, receivers, together
from auth_svc.revocations import SessionRevocations
from auth_svc.sessions import KeyRing, new_opaque_token, token_digest
from auth_svc.settings import AuthSettings
from auth_svc.store import (
    CONFIRM_HOLD,
    MINT_CODES,
    RELEASE_HOLD,
    REVOKE_SESSIONS,
    AuthStore,
    Mail,
    NewCode,
    NewToken,
    Registration,
    Rotation,
    UserRecord,
    Work,
)
from auth_svc.submissions import FirstSubmission
from auth_svc.throttle import SignInThrottle
from mesh.access import current_principal
from mesh.clients import client_address
from mesh.cursors import PageTokens, page_size
from mesh.emails import InvalidEmail, canonical_email, checked_address
from mesh.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshError,
    NotFound,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
)
from mesh.followups import FollowUps
from mesh.keys import load_kek
from mesh.limits import FixedWindowLimit, spend_together
from mesh.outbox import Outbox, RelayTimings
from mesh.redis import KeySpace
from mesh.revocations import RevokedSessions
from mesh.sealing import Sealer, derive_key, keyed_hash
from mesh.server import ServiceRuntime
from mesh.services import AUTH
from mesh.timestamps import optional_timestamp, timestamp

log = structlog.get_logger("auth_svc.server")
MAX_CODE = 64
MAX_TOKEN = 128
MAX_PASSWORD = 1024
MAX_REASON = 500


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        settings: AuthSettings,
        strip_tags: bool,
        store: AuthStore,
        passwords: Passwords,
        keys: StoredKeyRing,
        invites: Invites,
        submissions: FirstSubmission,
        sign_ins: SignInThrottle,
        per_client: FixedWindowLimit,
        per_address: FixedWindowLimit,
        code_key: bytes,
        pages: PageTokens,
        registrations: Counter,
        follow_ups: FollowUps,
        revoked: SessionRevocations,
    ) -> None:
        self._settings = settings
        self._strip_tags = strip_tags
        self._store = store
        self._passwords = passwords
        self._keys = keys
        self._invites = invites
        self._submissions = submissions
        self._sign_ins = sign_ins
        self._per_client = per_client
        self._per_address = per_address
        self._code_key = code_key
        self._pages = pages
        self._registrations = registrations
        """Registrations by outcome: pending, duplicate, or the refusal's reason."""
        self._follow_ups = follow_ups
        self._revoked = revoked
        self._refresh_ttl = datetime.timedelta(seconds=settings.refresh_ttl)
        self._verification_ttl = datetime.timedelta(seconds=settings.verification_ttl)

    # Registration

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        try:
            return await self._registration(request, context)
        except MeshError as refusal:
            self._registrations.labels(refusal.reason).inc()
            raise

    async def _registration(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        violations: list[FieldViolation] = []
        address, canonical = self._email(request.email, violations)
        if (problem := password_problem(request.password)) is not None:
            violations.append(FieldViolation("password", problem))
        if not 0 < len(request.invite_code.strip()) <= MAX_CODE:
            violations.append(FieldViolation("invite_code", f"required, at most {MAX_CODE} characters"))
        if violations:
            raise InvalidArgument(violations)
        assert address is not None and canonical is not None
        client_wait, address_wait = await spend_together(
            [(self._per_client, client_address()), (self._per_address, canonical)]
        )
        if client_wait:
            raise _too_many_from_client(client_wait)
        if address_wait:
            raise RateLimited("too many registrations for this email", address_wait)
        # Keyed (and labelled apart from code digests): the mark sits in Redis for seconds, and
        # must not be a plain hash of a password.
        submitted = (b"double-submit", request.password.encode(), request.invite_code.encode())
        fingerprint = keyed_hash(self._code_key, b"\0".join(submitted))

        async def register() -> bytes:
            return (await self._register(address, canonical, request.password, request.invite_code)).SerializeToString()

        answer = await self._submissions.answer(canonical, fingerprint, register)
        return pb.RegisterResponse.FromString(answer)

    async def _register(self, address: str, canonical: str, password: str, invite_code: str) -> pb.RegisterResponse:
        async def reserve(abandoned: asyncio.Event) -> pb.RegisterResponse:
            return await self._reserve(address, canonical, password, invite_code, abandoned)

        # The saga outlives a cancelled call (a client that left, a deadline that passed): a use
        # held is either written into a registration or given back, never left to lapse.
        return await self._follow_ups.outlasting(reserve)

    async def _reserve(
        self, address: str, canonical: str, password: str, invite_code: str, abandoned: asyncio.Event
    ) -> pb.RegisterResponse:
        """Holds one use of the code, then writes the registration, or mails the owner of the
        email's account a notice; gives the use back if the write fails or the call was
        abandoned before it."""
        password_hash = await self._passwords.hash(password)
        if abandoned.is_set():
            raise asyncio.CancelledError
        hold = await self._invites.hold(invite_code, address)
        token = new_opaque_token()
        try:
            if abandoned.is_set():
                raise asyncio.CancelledError
            registered = await self._store.register(
                _registration(address, canonical, password_hash, token_digest(token), hold),
                *self._verification(canonical, address),
            )
        except BaseException:
            await self._invites.release(hold.id)
            raise
        if registered.account is not None:
            # The hold is left to lapse, as an abandoned registration's would; the notice is
            # queued after the answer, which so waits for no more than a new registration's.
            self._follow_ups.start(self._notify_owner(registered.account))
            self._registrations.labels("duplicate").inc()
        else:
            self._registrations.labels("pending").inc()
        return pb.RegisterResponse(verification_expire_time=timestamp(self._code_expiry()), registration=token)

    async def VerifyEmail(self, request: pb.VerifyEmailRequest, context: Any) -> pb.VerifyEmailResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._email(request.email, violations)
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
        mailed = code_digest(self._code_key, canonical, code)
        if proof == "registration":
            attempt = await self._store.take_verification_attempt(canonical, token_digest(request.registration))
            proven = attempt if attempt is not None and same_digest(attempt.code_digest, mailed) else None
        else:
            attempts = await self._store.take_verification_attempts(canonical)
            matched = next((a for a in attempts if same_digest(a.code_digest, mailed)), None)
            # One hash checked whatever matched, so the answer takes as long either way.
            verdict = await self._passwords.verify(matched.password_hash if matched else None, request.password)
            proven = matched if verdict.matches else None
        if proven is None:
            raise _wrong_code()
        refresh, token = self._new_refresh_token()
        session_id = uuid.uuid4()
        user = await self._store.activate(proven.user_id, session_id, token, _activation_work)
        if user is None:
            raise _wrong_code()
        log.info("account active", user_id=str(user.id))
        session = await self._session(user.id, session_id, refresh, token)
        return pb.VerifyEmailResponse(user=_user(user), session=session)

    async def ResendVerification(
        self, request: pb.ResendVerificationRequest, context: Any
    ) -> pb.ResendVerificationResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._email(request.email, violations)
        if len(request.registration) > MAX_TOKEN:
            violations.append(FieldViolation("registration", "the token Register answered"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        if await self._may_mail(canonical, context):
            digest = token_digest(request.registration) if request.registration else None
            self._follow_ups.start(self._resend(canonical, digest))
        return pb.ResendVerificationResponse()

    async def _resend(self, canonical: str, digest: bytes | None) -> None:
        pending = await self._store.pending_registration(canonical, digest)
        if pending is not None:
            await self._store.replace_code(pending, *self._verification(canonical, pending.email))

    # Sessions

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._email(request.email, violations)
        if not 0 < len(request.password) <= MAX_PASSWORD:
            violations.append(FieldViolation("password", "required"))
        if violations:
            raise InvalidArgument(violations)
        assert canonical is not None
        client = client_address()
        failures = await self._sign_ins.admit(canonical, client)
        if delay := sign_in_delay(failures):
            await asyncio.sleep(delay)
        user = await self._store.signing_in(canonical)
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
            await self._store.set_password_hash(user.id, await self._passwords.hash(request.password))
        refresh, token = self._new_refresh_token()
        session_id = uuid.uuid4()
        await self._store.start_session(user.id, session_id, token)
        return pb.LoginResponse(session=await self._session(user.id, session_id, refresh, token))

    async def Refresh(self, request: pb.RefreshRequest, context: Any) -> pb.RefreshResponse:
        presented = _opaque_token("refresh_token", request.refresh_token)
        refresh, successor = self._new_refresh_token()
        rotated = await self._store.rotate(token_digest(presented), successor)
        if rotated.outcome is Rotation.REUSED:
            assert rotated.session_id is not None
            await self._revoked.now([rotated.session_id])
            log.warning("a rotated refresh token came back; its session is revoked")
            raise Unauthenticated("REFRESH_TOKEN_REUSED", "this refresh token was already used; sign in again")
        if rotated.user_id is None or rotated.session_id is None:
            raise Unauthenticated("REFRESH_TOKEN_INVALID", "the refresh token is unknown, expired or revoked")
        session = await self._session(rotated.user_id, rotated.session_id, refresh, successor)
        return pb.RefreshResponse(session=session)

    async def Logout(self, request: pb.LogoutRequest, context: Any) -> pb.LogoutResponse:
        presented = _opaque_token("refresh_token", request.refresh_token)
        await self._revoked.now(await self._store.revoke_family(token_digest(presented)))
        return pb.LogoutResponse()

    # Password recovery

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Any
    ) -> pb.RequestPasswordResetResponse:
        violations: list[FieldViolation] = []
        _, canonical = self._email(request.email, violations)
        if canonical is None:
            raise InvalidArgument(violations)
        if await self._may_mail(canonical, context):
            self._follow_ups.start(self._reset(canonical))
        return pb.RequestPasswordResetResponse()

    async def _reset(self, canonical: str) -> None:
        user = await self._store.account(canonical)
        if user is None or user.state is not UserState.ACTIVE:
            return
        token = new_opaque_token()
        expire = _now() + datetime.timedelta(seconds=self._settings.reset_ttl)
        mail = Mail(
            mail_pb.EMAIL_TEMPLATE_PASSWORD_RESET,
            user.email,
            {
                "reset_url": f"{self._settings.reset_url}#token={token}",
                "expires_in_minutes": str(round(self._settings.reset_ttl / 60)),
            },
            expire_time=expire,
        )
        await self._store.add_reset(user, NewToken(token_digest(token), expire), mail)

    async def ResetPassword(self, request: pb.ResetPasswordRequest, context: Any) -> pb.ResetPasswordResponse:
        violations: list[FieldViolation] = []
        if not 0 < len(request.token) <= MAX_TOKEN:
            violations.append(FieldViolation("token", "required, as the reset link carries it"))
        if (problem := password_problem(request.new_password)) is not None:
            violations.append(FieldViolation("new_password", problem))
        if violations:
            raise InvalidArgument(violations)
        password_hash = await self._passwords.hash(request.new_password)
        user_id, revoked = await self._store.reset_password(token_digest(request.token), password_hash)
        if user_id is None:
            raise Unauthenticated(
                "RESET_TOKEN_INVALID", "the reset link is unknown, used or expired; ask for a new one"
            )
        await self._revoked.now(revoked)
        log.info("password reset; sessions revoked", user_id=str(user_id))
        return pb.ResetPasswordResponse()

    # Reading

    async def GetMe(self, request: pb.GetMeRequest, context: Any) -> pb.GetMeResponse:
        user = await self._store.user(uuid.UUID(current_principal.get().id))
        if user is None or user.state is not UserState.ACTIVE:
            raise Unauthenticated("ACCESS_TOKEN_INVALID", "this account is no longer active")
        return pb.GetMeResponse(user=_user(user))

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=(await self._keys.ready()).published())

    # For other services (admin_svc, chain_svc)

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        user = await self._store.user(_user_id(request.user_id))
        if user is None:
            raise _no_such_user()
        return pb.GetUserResponse(user=_user(user))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        state = None
        if request.state:
            try:
                state = UserState(request.state)
            except ValueError:
                violations.append(FieldViolation("state", "not a user state"))
        query = f"state={state}"
        after = self._pages.keyset_after(request.page_token, query, violations)
        if violations:
            raise InvalidArgument(violations)
        page = await self._store.page(size, after, state)
        return pb.ListUsersResponse(
            users=[_user(user) for user in page],
            next_page_token=self._pages.keyset_next([(user.create_time, user.id) for user in page], size, query),
        )

    async def SuspendUser(self, request: pb.SuspendUserRequest, context: Any) -> pb.SuspendUserResponse:
        if len(request.reason) > MAX_REASON:
            raise InvalidArgument([FieldViolation("reason", f"at most {MAX_REASON} characters")])
        user = await self._changed(request.user_id, UserState.SUSPENDED)
        log.info("user suspended; sessions revoked", user_id=str(user.id))
        return pb.SuspendUserResponse(user=_user(user))

    async def ReactivateUser(self, request: pb.ReactivateUserRequest, context: Any) -> pb.ReactivateUserResponse:
        user = await self._changed(request.user_id, UserState.ACTIVE)
        log.info("user reactivated", user_id=str(user.id))
        return pb.ReactivateUserResponse(user=_user(user))

    async def _changed(self, user_id: str, to: UserState) -> UserRecord:
        """Suspends or reactivates (doing it twice answers the same); a pending account is neither."""
        wanted = _user_id(user_id)
        changed, revoked = await self._store.change_state(wanted, _VERIFIED, to)
        await self._revoked.now(revoked)
        if changed is not None:
            return changed
        if await self._store.user(wanted) is None:
            raise _no_such_user()
        raise FailedPrecondition("USER_NOT_VERIFIED", "the account has not proven its email yet")

    # Helpers

    def _email(self, value: str, violations: list[FieldViolation]) -> tuple[str | None, str | None]:
        """The `email` field's address as given (in ASCII) and the person it names (canonical)."""
        address = checked_address("email", value.strip(), violations)
        if address is None:
            return None, None
        try:
            return address, canonical_email(address, self._strip_tags)
        except InvalidEmail:
            violations.append(FieldViolation("email", "not an email address"))
            return None, None

    async def _may_mail(self, canonical: str, context: Any) -> bool:
        """Spends the client's budget (refusing past it) and the email's mail budget, for every
        email alike; answers whether the email's budget still allows a mail."""
        client_wait, address_wait = await spend_together(
            [(self._per_client, client_address()), (self._per_address, canonical)]
        )
        if client_wait:
            raise _too_many_from_client(client_wait)
        return not address_wait

    async def _notify_owner(self, owner: UserRecord) -> None:
        mail = Mail(
            mail_pb.EMAIL_TEMPLATE_DUPLICATE_REGISTRATION_NOTICE,
            owner.email,
            {"sign_in_url": self._settings.sign_in_url, "reset_url": self._settings.reset_url},
        )
        await self._store.notify(owner, mail)

    def _code_expiry(self) -> datetime.datetime:
        return _now() + self._verification_ttl

    def _verification(self, canonical_email: str, to: str) -> tuple[NewCode, Mail]:
        """A fresh code for the account, as stored (a digest bound to the person) and as mailed."""
        code = new_verification_code()
        expire = self._code_expiry()
        stored = NewCode(
            code_digest(self._code_key, canonical_email, code), expire, self._settings.verification_attempts
        )
        minutes = str(round(self._settings.verification_ttl / 60))
        variables = {"code": code, "expires_in_minutes": minutes}
        return stored, Mail(mail_pb.EMAIL_TEMPLATE_VERIFICATION, to, variables, expire_time=expire)

    def _new_refresh_token(self) -> tuple[str, NewToken]:
        token = new_opaque_token()
        return token, NewToken(token_digest(token), _now() + self._refresh_ttl)

    async def _session(self, user_id: uuid.UUID, session_id: uuid.UUID, refresh: str, token: NewToken) -> pb.Session:
        access = (await self._keys.ready()).access_token(user_id, session_id)
        return pb.Session(
            access_token=access.token,
            access_token_expire_time=timestamp(access.expire_time),
            refresh_token=refresh,
            refresh_token_expire_time=timestamp(token.expire_time),
        )


_VERIFIED = frozenset({UserState.ACTIVE, UserState.SUSPENDED})


def _user_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([FieldViolation("user_id", "not a UUID")]) from None


def _no_such_user() -> NotFound:
    return NotFound("USER_NOT_FOUND", "no such user")


def _opaque_token(field: str, value: str) -> str:
    if not 0 < len(value) <= MAX_TOKEN:
        raise InvalidArgument([FieldViolation(field, "required")])
    return value


def _too_many_from_client(wait: float) -> RateLimited:
    return RateLimited("too many requests from this address", wait)


def _wrong_code() -> Unauthenticated:
    # One answer for a wrong, expired or used-up code and for an email with no pending
    # registration, so the method does not tell which emails are registered.
    return Unauthenticated("VERIFICATION_CODE_INVALID", "the code is wrong, expired or used up; ask for a new one")


def _registration(
    address: str, canonical: str, password_hash: str, digest: bytes, hold: invite_pb.Hold
) -> Registration:
    referrer = hold.referrer
    return Registration(
        email=address,
        canonical_email=canonical,
        password_hash=password_hash,
        registration_digest=digest,
        hold_id=uuid.UUID(hold.id),
        hold_expire_time=hold.expire_time.ToDatetime(datetime.UTC),
        referrer_user_id=uuid.UUID(referrer.user_id) if referrer.WhichOneof("kind") == "user_id" else None,
        referrer_admin_id=uuid.UUID(referrer.admin_id) if referrer.WhichOneof("kind") == "admin_id" else None,
        campaign_id=uuid.UUID(hold.campaign_id) if hold.campaign_id else None,
        invite_quota=hold.invite_quota,
        invite_uses=hold.invite_uses,
    )


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


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _user(user: UserRecord) -> pb.User:
    referrer = user.referrer_user_id or user.referrer_admin_id
    return pb.User(
        id=str(user.id),
        email=user.email,
        state=int(user.state),  # type: ignore[arg-type]
        referrer_id=str(referrer) if referrer else "",
        create_time=timestamp(user.create_time),
        verify_time=optional_timestamp(user.verify_time),
    )


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: AuthSettings | None = None) -> None:
    """auth_svc's wiring; `own` settings, else `MESH_AUTH_*`."""
    settings, own = runtime.settings, own or AuthSettings()
    kek = load_kek(settings)
    stubs = PeerStubs(runtime.peers)
    revocations = SessionRevocations(RevokedSessions(runtime.pipe, KeySpace(AUTH.redis_prefix)), own.access_ttl)
    outbox = Outbox(
        runtime.engine,
        runtime.driver,
        models.outbox,
        Sealer(derive_key(kek, "auth outbox seal v1")),
        {**receivers(stubs), REVOKE_SESSIONS: revocations.deliver},
        runtime.metrics,
        RelayTimings(
            interval=settings.outbox_interval,
            lease=settings.outbox_lease,
            backoff_base=settings.outbox_backoff_base,
            backoff_cap=settings.outbox_backoff_cap,
            linger=settings.outbox_linger,
        ),
        together=together(stubs),
    )
    store = AuthStore(runtime.engine, runtime.driver, outbox)
    keys = StoredKeyRing(
        store,
        kek,
        KeyRing(datetime.timedelta(seconds=own.access_ttl)),
        datetime.timedelta(seconds=own.signing_key_max_age),
    )

    async def published_keys() -> list[pb.JsonWebKey]:
        return (await keys.ready()).published()

    runtime.published_keys.append(published_keys)
    follow_ups = FollowUps()
    runtime.workers.extend([outbox, follow_ups])
    runtime.jobs.append(sweep_job(store, outbox, keys, own.jobs_interval))
    hour = 3600
    service = AuthService(
        own,
        settings.email_strip_tags,
        store,
        Passwords(own.argon2_memory_kib, own.argon2_time_cost, own.argon2_parallelism),
        keys,
        Invites(stubs),
        FirstSubmission(runtime.pipe, runtime.keys),
        SignInThrottle(
            runtime.counters,
            runtime.keys,
            own.login_failures_per_account,
            own.login_failures_per_client,
            own.login_failure_window,
        ),
        FixedWindowLimit(runtime.counters, runtime.keys, "requests", own.registrations_per_hour, hour),
        FixedWindowLimit(runtime.counters, runtime.keys, "mails", own.emails_per_hour, hour),
        derive_key(kek, "auth verification code v1"),
        PageTokens(derive_key(kek, "auth page-token v1")),
        Counter(
            "mesh_registrations",
            "Registrations by outcome: pending, duplicate, or the reason of a refusal.",
            ["outcome"],
            registry=runtime.metrics.registry,
        ),
        follow_ups,
        revocations,
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(service, server)
