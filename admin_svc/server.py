"""admin_svc's gRPC surface: each method handed to the part it belongs to (sign-in, admin
accounts, the audit log, or a change or read through the service owning the data), and the wiring
that builds them. Who may call each method (the role it needs) is the contract's business, enforced
before any of this runs (mesh.access)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message
from invitemesh.admin.v1 import admin_service_pb2 as pb
from invitemesh.admin.v1 import admin_service_pb2_grpc
from invitemesh.auth.v1 import auth_service_pb2 as auth_pb
from invitemesh.chain.v1 import chain_service_pb2 as chain_pb
from invitemesh.invite.v1 import invite_service_pb2 as invite_pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb
from invitemesh.ratelimit.v1 import ratelimit_service_pb2 as ratelimit_pb

from admin_svc import models
from admin_svc.admins import Admins
from admin_svc.audit import Auditor, actor_of
from admin_svc.jobs import sweep_job
from admin_svc.operations import AUTH, CHAIN, DEADLINE, INVITES, MAIL, RATELIMIT, Change, Downstream, changes
from admin_svc.passkeys import Passkeys, passkey_message
from admin_svc.sessions import AdminSessions
from admin_svc.settings import AdminSettings
from admin_svc.store.accounts import AccountStore, AdminRecord
from admin_svc.store.audit import AuditStore
from admin_svc.store.passkeys import PasskeyStore
from mesh.access import current_principal
from mesh.cursors import InvalidPageToken, PageTokens, page_size
from mesh.errors import FieldViolation, InvalidArgument, RateLimited, Unauthenticated
from mesh.keys import TrustFile, load_kek
from mesh.limits import FixedWindowLimit
from mesh.passwords import Passwords
from mesh.redis import KeySpace
from mesh.revocations import RevokedSessions
from mesh.sealing import Sealer, derive_key
from mesh.server import ServiceRuntime
from mesh.services import ADMIN
from mesh.sign_ins import SignInThrottle
from mesh.signing import acting_for, signer_for
from mesh.stage_tokens import StageTokens
from mesh.token_keys import KeyRing, SigningKeyStore, StoredKeyRing
from mesh.tokens import ADMIN_ISSUER

_HOUR = 3600
R = TypeVar("R", bound=Message)
_AUDIT_LISTING = "audit-log"


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    def __init__(
        self,
        sessions: AdminSessions,
        admins: Admins,
        auditor: Auditor,
        downstream: Downstream,
        changes: dict[str, Change],
        mail_budget: FixedWindowLimit,
        pages: PageTokens,
        trust_path: Path,
        passkeys: Passkeys,
        accounts: AccountStore,
    ) -> None:
        self._sessions = sessions
        self._admins = admins
        self._auditor = auditor
        self._downstream = downstream
        self._changes = changes
        self._mail_budget = mail_budget
        self._pages = pages
        self._trust_path = trust_path
        self._passkeys = passkeys
        self._accounts = accounts

    # Sign-in and the admins themselves.

    async def CreateSession(self, request: pb.CreateSessionRequest, context: Any) -> pb.CreateSessionResponse:
        return await self._sessions.create_session(request)

    async def VerifySessionMfa(self, request: pb.VerifySessionMfaRequest, context: Any) -> pb.VerifySessionMfaResponse:
        return await self._sessions.verify_session_mfa(request)

    async def RevokeSession(self, request: pb.RevokeSessionRequest, context: Any) -> pb.RevokeSessionResponse:
        await self._sessions.revoke_session(request, uuid.UUID(current_principal.get().session_id))
        return pb.RevokeSessionResponse()

    async def GetAdminJwks(self, request: pb.GetAdminJwksRequest, context: Any) -> pb.GetAdminJwksResponse:
        return pb.GetAdminJwksResponse(keys=await self._sessions.published_keys())

    async def CreateAdmin(self, request: pb.CreateAdminRequest, context: Any) -> pb.CreateAdminResponse:
        return await self._admins.create_admin(request)

    async def ListAdmins(self, request: pb.ListAdminsRequest, context: Any) -> pb.ListAdminsResponse:
        return await self._admins.list_admins(request)

    async def UpdateAdmin(self, request: pb.UpdateAdminRequest, context: Any) -> pb.UpdateAdminResponse:
        return await self._admins.update_admin(request)

    # Changes through the services that own the data, each audited.

    async def CreateInviteBatch(
        self, request: pb.CreateInviteBatchRequest, context: Any
    ) -> pb.CreateInviteBatchResponse:
        return await self._change(
            pb.CreateInviteBatchResponse, "CreateInviteBatch", f"{request.count} codes", request, request.request_id
        )

    async def CreateCampaign(self, request: pb.CreateCampaignRequest, context: Any) -> pb.CreateCampaignResponse:
        return await self._change(
            pb.CreateCampaignResponse, "CreateCampaign", request.campaign.display_name, request, request.request_id
        )

    async def UpdateCampaign(self, request: pb.UpdateCampaignRequest, context: Any) -> pb.UpdateCampaignResponse:
        return await self._change(pb.UpdateCampaignResponse, "UpdateCampaign", request.campaign.id, request)

    async def DisableInvite(self, request: pb.DisableInviteRequest, context: Any) -> pb.DisableInviteResponse:
        return await self._change(pb.DisableInviteResponse, "DisableInvite", request.code, request)

    async def ReleaseWaitlistPlaces(
        self, request: pb.ReleaseWaitlistPlacesRequest, context: Any
    ) -> pb.ReleaseWaitlistPlacesResponse:
        return await self._change(
            pb.ReleaseWaitlistPlacesResponse,
            "ReleaseWaitlistPlaces",
            f"{request.count} waitlist places",
            request,
            request.request_id,
        )

    async def RemoveWaitlistEntry(
        self, request: pb.RemoveWaitlistEntryRequest, context: Any
    ) -> pb.RemoveWaitlistEntryResponse:
        return await self._change(pb.RemoveWaitlistEntryResponse, "RemoveWaitlistEntry", request.id, request)

    async def MoveWaitlistEntry(
        self, request: pb.MoveWaitlistEntryRequest, context: Any
    ) -> pb.MoveWaitlistEntryResponse:
        return await self._change(pb.MoveWaitlistEntryResponse, "MoveWaitlistEntry", request.id, request)

    async def SuspendUser(self, request: pb.SuspendUserRequest, context: Any) -> pb.SuspendUserResponse:
        return await self._change(pb.SuspendUserResponse, "SuspendUser", request.user_id, request)

    async def ReactivateUser(self, request: pb.ReactivateUserRequest, context: Any) -> pb.ReactivateUserResponse:
        return await self._change(pb.ReactivateUserResponse, "ReactivateUser", request.user_id, request)

    async def SendEmail(self, request: pb.SendEmailRequest, context: Any) -> pb.SendEmailResponse:
        target = request.to or f"user:{request.user_id}"
        wait = await self._mail_budget.wait_after(actor_of(current_principal.get()))
        if wait:
            limited = RateLimited("this admin has sent its hourly share of emails", wait)
            await self._auditor.refused("SendEmail", target, request, limited)
            raise limited
        return await self._change(pb.SendEmailResponse, "SendEmail", target, request, request.request_id)

    async def UpdateRateLimits(self, request: pb.UpdateRateLimitsRequest, context: Any) -> pb.UpdateRateLimitsResponse:
        return await self._change(
            pb.UpdateRateLimitsResponse, "UpdateRateLimits", "rate limits", request, request.request_id
        )

    async def _change(self, response: type[R], action: str, target: str, request: Message, request_id: str = "") -> R:
        actor = actor_of(current_principal.get())
        change = self._changes[action]

        async def call(key: str) -> Message:
            with acting_for(actor):
                return await change(request, key, actor)

        answer = await self._auditor.around(action, target, request, request_id, call)
        assert isinstance(answer, response)
        return answer

    # Reads through the services that own the data.

    async def ListCampaigns(self, request: pb.ListCampaignsRequest, context: Any) -> pb.ListCampaignsResponse:
        asked = invite_pb.ListCampaignsRequest(page_size=request.page_size, page_token=request.page_token)
        listed = await self._read(INVITES, lambda: self._downstream.invites.ListCampaigns(asked, timeout=DEADLINE))
        return pb.ListCampaignsResponse(campaigns=listed.campaigns, next_page_token=listed.next_page_token)

    async def ListInvites(self, request: pb.ListInvitesRequest, context: Any) -> pb.ListInvitesResponse:
        asked = invite_pb.ListCodesRequest(
            page_size=request.page_size,
            page_token=request.page_token,
            campaign_id=request.campaign_id,
            state=request.state,
        )
        listed = await self._read(INVITES, lambda: self._downstream.invites.ListCodes(asked, timeout=DEADLINE))
        return pb.ListInvitesResponse(codes=listed.codes, next_page_token=listed.next_page_token)

    async def GetInvite(self, request: pb.GetInviteRequest, context: Any) -> pb.GetInviteResponse:
        asked = invite_pb.GetCodeRequest(code=request.code)
        found = await self._read(INVITES, lambda: self._downstream.invites.GetCode(asked, timeout=DEADLINE))
        return pb.GetInviteResponse(code=found.code, redemptions=found.redemptions)

    async def ListReferrals(self, request: pb.ListReferralsRequest, context: Any) -> pb.ListReferralsResponse:
        asked = invite_pb.GetReferralTreeRequest(root=invite_pb.Owner(user_id=request.user_id), depth=request.depth)
        tree = await self._read(INVITES, lambda: self._downstream.invites.GetReferralTree(asked, timeout=DEADLINE))
        return pb.ListReferralsResponse(children=tree.children)

    async def ListWaitlistEntries(
        self, request: pb.ListWaitlistEntriesRequest, context: Any
    ) -> pb.ListWaitlistEntriesResponse:
        asked = invite_pb.ListWaitlistEntriesRequest(
            page_size=request.page_size,
            page_token=request.page_token,
            state=request.state,
            email_prefix=request.email_prefix,
        )
        listed = await self._read(
            INVITES, lambda: self._downstream.invites.ListWaitlistEntries(asked, timeout=DEADLINE)
        )
        return pb.ListWaitlistEntriesResponse(
            entries=listed.entries, next_page_token=listed.next_page_token, total_size=listed.total_size
        )

    async def GetWaitlistStats(self, request: pb.GetWaitlistStatsRequest, context: Any) -> pb.GetWaitlistStatsResponse:
        asked = invite_pb.GetWaitlistStatsRequest(days=request.days, top_referrers=request.top_referrers)
        counted = await self._read(INVITES, lambda: self._downstream.invites.GetWaitlistStats(asked, timeout=DEADLINE))
        return pb.GetWaitlistStatsResponse(stats=counted)

    async def GetUserWallet(self, request: pb.GetUserWalletRequest, context: Any) -> pb.GetUserWalletResponse:
        asked = chain_pb.GetWalletRequest(user_id=request.user_id)
        found = await self._read(CHAIN, lambda: self._downstream.wallets.GetWallet(asked, timeout=DEADLINE))
        return pb.GetUserWalletResponse(wallet=found.wallet)

    async def ListEmails(self, request: pb.ListEmailsRequest, context: Any) -> pb.ListEmailsResponse:
        asked = mail_pb.ListEmailsRequest(
            page_size=request.page_size, page_token=request.page_token, status=request.status, to=request.to
        )
        listed = await self._read(MAIL, lambda: self._downstream.mail.ListEmails(asked, timeout=DEADLINE))
        return pb.ListEmailsResponse(
            emails=listed.emails, next_page_token=listed.next_page_token, total_size=listed.total_size
        )

    async def GetEmailStats(self, request: pb.GetEmailStatsRequest, context: Any) -> pb.GetEmailStatsResponse:
        asked = mail_pb.GetEmailStatsRequest(day=request.day, time_zone=request.time_zone)
        counted = await self._read(MAIL, lambda: self._downstream.mail.GetEmailStats(asked, timeout=DEADLINE))
        return pb.GetEmailStatsResponse(stats=counted.stats)

    async def ListRateLimits(self, request: pb.ListRateLimitsRequest, context: Any) -> pb.ListRateLimitsResponse:
        asked = ratelimit_pb.ListRateLimitRulesRequest()
        listed = await self._read(RATELIMIT, lambda: self._downstream.rules.ListRateLimitRules(asked, timeout=DEADLINE))
        return pb.ListRateLimitsResponse(rules=listed.rules)

    async def _read(self, service: str, call: Callable[[], Awaitable[R]]) -> R:
        with acting_for(actor_of(current_principal.get())):
            return await self._downstream.call(service, call)

    # The audit log.

    async def ListAuditLogEntries(
        self, request: pb.ListAuditLogEntriesRequest, context: Any
    ) -> pb.ListAuditLogEntriesResponse:
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        before = None
        if request.page_token:
            try:
                (position,) = self._pages.position(request.page_token, _AUDIT_LISTING)
                before = int(position)
            except (InvalidPageToken, ValueError):
                violations.append(FieldViolation("page_token", "not a token this query gave out"))
        if violations:
            raise InvalidArgument(violations)
        entries = await self._auditor.page(size, before)
        last = entries[-1].sequence if len(entries) == size and entries[-1].sequence > 1 else None
        return pb.ListAuditLogEntriesResponse(
            entries=entries,
            next_page_token=self._pages.issue([str(last)], _AUDIT_LISTING) if last else "",
        )

    async def StartPasskeyRegistration(
        self, request: pb.StartPasskeyRegistrationRequest, context: Any
    ) -> pb.StartPasskeyRegistrationResponse:
        admin = await self._me()
        return pb.StartPasskeyRegistrationResponse(
            options_json=await self._passkeys.registration_options(admin.id, admin.email)
        )

    async def CreatePasskey(self, request: pb.CreatePasskeyRequest, context: Any) -> pb.CreatePasskeyResponse:
        admin = await self._me()
        credential_id, public_key, sign_count = await self._passkeys.registered(admin.id, request)
        async with self._auditor.transaction() as connection:
            made = await self._passkeys.store.add(
                connection, admin.id, credential_id, public_key, sign_count, request.display_name.strip()
            )
            await self._auditor.record(connection, "CreatePasskey", str(made.id), request)
        return pb.CreatePasskeyResponse(passkey=passkey_message(made))

    async def ListPasskeys(self, request: pb.ListPasskeysRequest, context: Any) -> pb.ListPasskeysResponse:
        admin = await self._me()
        return pb.ListPasskeysResponse(
            passkeys=[passkey_message(p) for p in await self._passkeys.store.of_admin(admin.id)]
        )

    async def StartPasskeySignIn(
        self, request: pb.StartPasskeySignInRequest, context: Any
    ) -> pb.StartPasskeySignInResponse:
        return await self._sessions.passkey_options(request)

    async def _me(self) -> AdminRecord:
        admin = await self._accounts.by_id(uuid.UUID(current_principal.get().id))
        if admin is None:
            raise Unauthenticated("ACCESS_TOKEN_REVOKED", "this admin is gone")
        return admin

    async def GetRegistrationStats(
        self, request: pb.GetRegistrationStatsRequest, context: Any
    ) -> pb.GetRegistrationStatsResponse:
        asked = auth_pb.GetRegistrationStatsRequest(day=request.day, time_zone=request.time_zone)
        counted = await self._read(AUTH, lambda: self._downstream.auth.GetRegistrationStats(asked, timeout=DEADLINE))
        return pb.GetRegistrationStatsResponse(stats=counted.stats)

    async def VerifyAuditLog(self, request: pb.VerifyAuditLogRequest, context: Any) -> pb.VerifyAuditLogResponse:
        # Read now, retired keys included: the trust file changes as keys rotate.
        keys = TrustFile.read(self._trust_path).signature_keys(ADMIN.name)
        verified, broken = await self._auditor.verify(keys)
        if broken is None:
            return pb.VerifyAuditLogResponse(verified_entries=verified)
        first = pb.AuditChainBreak(sequence=broken.sequence, entry_id=broken.entry_id, reason=broken.why)
        return pb.VerifyAuditLogResponse(verified_entries=verified, first_break=first)


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: AdminSettings | None = None) -> None:
    """admin_svc's wiring; `own` settings, else `MESH_ADMIN_*`."""
    settings, own = runtime.settings, own or AdminSettings()
    kek = load_kek(settings)
    accounts = AccountStore(runtime.engine)
    auditor = Auditor(runtime.engine, AuditStore(runtime.engine), signer_for(ADMIN.name, settings))
    access_ttl = datetime.timedelta(seconds=own.access_ttl)
    keys = StoredKeyRing(
        SigningKeyStore(runtime.engine, models.signing_keys),
        kek,
        "admin_svc access-token key",
        KeyRing(ADMIN_ISSUER, access_ttl),
        datetime.timedelta(seconds=own.signing_key_max_age),
    )
    passwords = Passwords(own.argon2_memory_kib, own.argon2_time_cost, own.argon2_parallelism)
    totp_sealer = Sealer(derive_key(kek, "admin totp secret v1"))
    passkeys = Passkeys(
        PasskeyStore(runtime.engine), runtime.pipe, runtime.keys, own.passkey_rp_id, own.passkey_origins
    )
    sessions = AdminSessions(
        accounts,
        passwords,
        SignInThrottle(
            runtime.counters,
            runtime.keys,
            own.login_failures_per_account,
            own.login_failures_per_client,
            own.login_failure_window,
        ),
        StageTokens(runtime.pipe, runtime.keys, own.mfa_ttl),
        totp_sealer,
        keys,
        RevokedSessions(runtime.pipe, KeySpace(ADMIN.redis_prefix)),
        auditor,
        access_ttl,
        passkeys,
    )
    runtime.published_keys.append(sessions.published_keys)
    pages = PageTokens(derive_key(kek, "admin page-token v1"))
    downstream = Downstream(runtime.peers)
    made = changes(downstream)
    runtime.jobs.append(sweep_job(auditor, made, accounts, sessions, keys, own.settle_after, own.jobs_interval))
    service = AdminService(
        sessions,
        Admins(accounts, passwords, totp_sealer, sessions, auditor, pages),
        auditor,
        downstream,
        made,
        FixedWindowLimit(runtime.counters, runtime.keys, "admin-mails", own.emails_per_hour, _HOUR),
        pages,
        settings.resolved_keys_dir / "trust.json",
        passkeys,
        accounts,
    )
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(service, server)
