"""auth_svc's gRPC surface: each method handed to the flow it belongs to (registration,
verification, sessions, recovery, users), and the wiring that builds them."""

from __future__ import annotations

import datetime
from typing import Any

import grpc
from invitemesh.auth.v1 import auth_service_pb2 as pb
from invitemesh.auth.v1 import auth_service_pb2_grpc
from prometheus_client import Counter

from auth_svc import models
from auth_svc.jobs import sweep_job
from auth_svc.peers import Invites, PeerStubs, receivers, together
from auth_svc.recovery import Recovery
from auth_svc.registration import Registrations
from auth_svc.requests import Emails
from auth_svc.revocations import SessionRevocations
from auth_svc.sessions import Sessions
from auth_svc.settings import AuthSettings
from auth_svc.store import AuthStore
from auth_svc.store.records import REVOKE_SESSIONS
from auth_svc.submissions import FirstSubmission
from auth_svc.throttle import RequestBudgets
from auth_svc.users import Users
from auth_svc.verification import Verification, VerificationCodes
from mesh.cursors import PageTokens
from mesh.followups import FollowUps
from mesh.keys import load_kek
from mesh.limits import FixedWindowLimit
from mesh.outbox import Outbox, RelayTimings
from mesh.passwords import Passwords
from mesh.redis import KeySpace
from mesh.revocations import RevokedSessions
from mesh.sealing import Sealer, derive_key
from mesh.server import ServiceRuntime
from mesh.services import AUTH
from mesh.sign_ins import SignInThrottle
from mesh.token_keys import KeyRing, StoredKeyRing
from mesh.tokens import USER_ISSUER

_HOUR = 3600


class AuthService(auth_service_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        registrations: Registrations,
        verification: Verification,
        sessions: Sessions,
        recovery: Recovery,
        users: Users,
    ) -> None:
        self._registrations = registrations
        self._verification = verification
        self._sessions = sessions
        self._recovery = recovery
        self._users = users

    async def Register(self, request: pb.RegisterRequest, context: Any) -> pb.RegisterResponse:
        return await self._registrations.register(request)

    async def VerifyEmail(self, request: pb.VerifyEmailRequest, context: Any) -> pb.VerifyEmailResponse:
        return await self._verification.verify_email(request)

    async def ResendVerification(
        self, request: pb.ResendVerificationRequest, context: Any
    ) -> pb.ResendVerificationResponse:
        return await self._verification.resend_verification(request)

    async def Login(self, request: pb.LoginRequest, context: Any) -> pb.LoginResponse:
        return await self._sessions.login(request)

    async def Refresh(self, request: pb.RefreshRequest, context: Any) -> pb.RefreshResponse:
        return await self._sessions.refresh(request)

    async def Logout(self, request: pb.LogoutRequest, context: Any) -> pb.LogoutResponse:
        return await self._sessions.logout(request)

    async def GetJwks(self, request: pb.GetJwksRequest, context: Any) -> pb.GetJwksResponse:
        return pb.GetJwksResponse(keys=await self._sessions.published_keys())

    async def RequestPasswordReset(
        self, request: pb.RequestPasswordResetRequest, context: Any
    ) -> pb.RequestPasswordResetResponse:
        return await self._recovery.request_password_reset(request)

    async def ResetPassword(self, request: pb.ResetPasswordRequest, context: Any) -> pb.ResetPasswordResponse:
        return await self._recovery.reset_password(request)

    async def GetMe(self, request: pb.GetMeRequest, context: Any) -> pb.GetMeResponse:
        return await self._users.get_me(request)

    async def GetUser(self, request: pb.GetUserRequest, context: Any) -> pb.GetUserResponse:
        return await self._users.get_user(request)

    async def GetRegistrationStats(
        self, request: pb.GetRegistrationStatsRequest, context: Any
    ) -> pb.GetRegistrationStatsResponse:
        return await self._users.registration_stats(request)

    async def ListUsers(self, request: pb.ListUsersRequest, context: Any) -> pb.ListUsersResponse:
        return await self._users.list_users(request)

    async def SuspendUser(self, request: pb.SuspendUserRequest, context: Any) -> pb.SuspendUserResponse:
        return await self._users.suspend_user(request)

    async def ReactivateUser(self, request: pb.ReactivateUserRequest, context: Any) -> pb.ReactivateUserResponse:
        return await self._users.reactivate_user(request)


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
        RelayTimings.of(settings),
        together=together(stubs),
    )
    store = AuthStore.over(runtime.engine, runtime.driver, outbox)
    keys = StoredKeyRing(
        store.keys,
        kek,
        "auth_svc access-token key",
        KeyRing(USER_ISSUER, datetime.timedelta(seconds=own.access_ttl)),
        datetime.timedelta(seconds=own.signing_key_max_age),
    )
    follow_ups = FollowUps()
    runtime.workers.extend([outbox, follow_ups])
    runtime.jobs.append(sweep_job(store, outbox, keys, own.jobs_interval))
    passwords = Passwords(own.argon2_memory_kib, own.argon2_time_cost, own.argon2_parallelism)
    emails = Emails(settings.email_strip_tags)
    budgets = RequestBudgets(
        FixedWindowLimit(runtime.counters, runtime.keys, "requests", own.registrations_per_hour, _HOUR),
        FixedWindowLimit(runtime.counters, runtime.keys, "mails", own.emails_per_hour, _HOUR),
    )
    throttle = SignInThrottle(
        runtime.counters,
        runtime.keys,
        own.login_failures_per_account,
        own.login_failures_per_client,
        own.login_failure_window,
    )
    code_key = derive_key(kek, "auth verification code v1")
    codes = VerificationCodes(code_key, datetime.timedelta(seconds=own.verification_ttl), own.verification_attempts)
    refresh_ttl = datetime.timedelta(seconds=own.refresh_ttl)
    sessions = Sessions(store.sessions, store.users, keys, passwords, throttle, revocations, emails, refresh_ttl)
    runtime.published_keys.append(sessions.published_keys)
    outcomes = Counter(
        "mesh_registrations",
        "Registrations by outcome: pending, duplicate, or the reason of a refusal.",
        ["outcome"],
        registry=runtime.metrics.registry,
    )
    service = AuthService(
        Registrations(
            store.registrations,
            codes,
            passwords,
            Invites(stubs),
            FirstSubmission(runtime.pipe, runtime.keys),
            budgets,
            emails,
            follow_ups,
            {"sign_in_url": own.sign_in_url, "reset_url": own.reset_url},
            code_key,
            outcomes,
        ),
        Verification(
            store.verification,
            store.users,
            store.registrations,
            codes,
            passwords,
            sessions,
            budgets,
            emails,
            follow_ups,
        ),
        sessions,
        Recovery(
            store.recovery,
            store.users,
            passwords,
            budgets,
            emails,
            follow_ups,
            revocations,
            own.reset_url,
            datetime.timedelta(seconds=own.reset_ttl),
        ),
        Users(store.users, PageTokens(derive_key(kek, "auth page-token v1")), revocations),
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(service, server)
