"""invite_svc's gRPC surface: maps proto to domain and back."""

from __future__ import annotations

import contextlib
import datetime
import functools
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import grpc
from disposable_email_domains import blocklist
from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.invite.v1 import invite_service_pb2_grpc
from invitemesh.mail.v1 import mail_service_pb2_grpc

from invite_svc import domain, models
from invite_svc.domain import OwnCodes, ReferralRules, Refusal
from invite_svc.jobs import expiry_job, places_job, top_up_job
from invite_svc.sealing import CodeSealer, WaitlistLinks
from invite_svc.settings import InviteSettings
from invite_svc.store import InviteStore
from invite_svc.store.places import Places
from invite_svc.store.records import Campaign, HoldRecord, MintedCode, OwnedCode, Owner, ReferralNode
from invite_svc.store.referrals import Joined
from invite_svc.store.waitlist import WaitlistStore
from invite_svc.waitlist import MAX_RELEASE, Waitlist
from mesh.access import current_principal
from mesh.clients import client_address
from mesh.cursors import Keyset, PageTokens, page_size
from mesh.emails import InvalidEmail, canonical_email
from mesh.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshError,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from mesh.invite_codes import InvalidCode, display, normalize
from mesh.keys import load_kek
from mesh.limits import FixedWindowLimit
from mesh.mailing import DEADLINE, SEND_EMAIL, email_receivers
from mesh.outbox import Outbox, RelayTimings
from mesh.sealing import Sealer, derive_key
from mesh.server import ServiceRuntime
from mesh.timestamps import optional_timestamp

MAIL = "mail_svc"
_HOUR = 3600
MAX_MINT = 10_000
REFERRALS_PER_CODE = 100
S = TypeVar("S", bound="InviteService")
_CAMPAIGNS_LISTED = "campaigns newest first"
"""The query campaign page tokens are bound to (named for the order, so a token of the oldest-first
listing it replaced is refused, not read backwards)."""
MAX_DEPTH = 10
MAX_NAME = 100
MAX_QUOTA = 100
# A refusal about the state of a code, a campaign or a hold (spent, full, disabled, expired…) is
# FAILED_PRECONDITION: it will not work however long the client waits, where RESOURCE_EXHAUSTED
# (an HTTP 429) tells clients and proxies to retry later. Rate limits alone are 429.
_REFUSAL_KINDS: dict[str, type[MeshError]] = {
    domain.NOT_FOUND: NotFound,
    domain.HOLD_NOT_FOUND: NotFound,
    domain.BUSY: Unavailable,
    domain.CAMPAIGN_NAME_TAKEN: AlreadyExists,
    domain.CAMPAIGN_NOT_FOUND: NotFound,
    domain.WAITLIST_LINK_INVALID: Unauthenticated,
    domain.WAITLIST_ENTRY_NOT_FOUND: NotFound,
}


class InviteService(invite_service_pb2_grpc.InviteServiceServicer):
    def __init__(
        self,
        store: InviteStore,
        checks: FixedWindowLimit,
        strip_email_tags: bool,
        own_codes: OwnCodes,
        pages: PageTokens,
        waitlist: Waitlist,
    ) -> None:
        self._store = store
        self._waitlist = waitlist
        self._pages = pages
        self._checks = checks
        self._strip_email_tags = strip_email_tags
        self._own_codes = own_codes

    def _page(self, asked_size: int, token: str, query: str) -> tuple[int, Keyset | None]:
        """The size and start of the page a listing asked for (tokens are bound to `query`)."""
        violations: list[FieldViolation] = []
        size = page_size(asked_size, violations)
        after = self._pages.keyset_after(token, query, violations)
        if violations:
            raise InvalidArgument(violations)
        return size, after

    async def CheckCode(self, request: pb.CheckCodeRequest, context: Any) -> pb.CheckCodeResponse:
        code = _code(request.code)  # a typo costs the client no lookup budget
        if not await self._checks.allow(client_address()):
            raise ResourceExhausted("RATE_LIMITED", "too many code checks from this address; wait a minute")
        try:
            await self._store.holds.check(code, datetime.datetime.now(datetime.UTC))
        except Refusal as refusal:
            return pb.CheckCodeResponse(valid=False, reason=refusal.reason)
        return pb.CheckCodeResponse(valid=True)

    async def HoldCode(self, request: pb.HoldCodeRequest, context: Any) -> pb.HoldCodeResponse:
        violations, reason = [], "INVALID_ARGUMENT"
        try:
            code = normalize(request.code)
        except InvalidCode as invalid:
            violations.append(FieldViolation("code", invalid.description))
            reason = invalid.reason
        try:
            email = canonical_email(request.email, self._strip_email_tags)
        except InvalidEmail:
            violations.append(FieldViolation("email", "not an email address"))
        if not request.request_id:
            violations.append(FieldViolation("request_id", "required, so that a retry holds nothing twice"))
        if violations:
            raise InvalidArgument(violations, reason=reason)
        with _refusals(waitlist_url=self._waitlist.page_url):
            held = await self._store.holds.hold(code, email, request.request_id)
            return pb.HoldCodeResponse(hold=_hold(held, self._own_codes))

    async def ConfirmHold(self, request: pb.ConfirmHoldRequest, context: Any) -> pb.ConfirmHoldResponse:
        with _refusals():
            user_id = _uuid("user_id", request.user_id) if request.user_id else None
            confirmed = await self._store.holds.confirm(_uuid("hold_id", request.hold_id), user_id)
            return pb.ConfirmHoldResponse(hold=_hold(confirmed, self._own_codes))

    async def ReleaseHold(self, request: pb.ReleaseHoldRequest, context: Any) -> pb.ReleaseHoldResponse:
        with _refusals():
            released = await self._store.holds.release(_uuid("hold_id", request.hold_id))
            return pb.ReleaseHoldResponse(hold=_hold(released, self._own_codes))

    async def ListMyCodes(self, request: pb.ListMyCodesRequest, context: Any) -> pb.ListMyCodesResponse:
        me = uuid.UUID(current_principal.get().id)
        if request.view not in pb.InviteCodeView.values():
            raise InvalidArgument([FieldViolation("view", "INVITE_CODE_VIEW_BASIC or INVITE_CODE_VIEW_FULL")])
        query = f"my codes {me}"
        size, after = self._page(request.page_size, request.page_token, query)
        owned = await self._store.codes.codes_of_user(me, size, after)
        listed = [_owned(code) for code in owned]
        if request.view == pb.INVITE_CODE_VIEW_FULL and owned:
            joined = await self._store.referrals.joined_through_codes([c.code.id for c in owned], REFERRALS_PER_CODE)
            for code, shown in zip(owned, listed, strict=True):
                shown.referrals.extend(_referral_of(person) for person in joined[code.code.id])
        return pb.ListMyCodesResponse(
            codes=listed,
            next_page_token=self._pages.keyset_next([(c.create_time, c.code.id) for c in owned], size, query),
        )

    async def ListMyReferrals(self, request: pb.ListMyReferralsRequest, context: Any) -> pb.ListMyReferralsResponse:
        me = uuid.UUID(current_principal.get().id)
        query = f"my referrals {me}"
        size, before = self._page(request.page_size, request.page_token, query)
        joined = await self._store.referrals.joined_through(me, size, before)
        return pb.ListMyReferralsResponse(
            referrals=[_referral_of(person) for person in joined],
            next_page_token=self._pages.keyset_next([(p.join_time, p.hold_id) for p in joined], size, query),
        )

    async def GetCode(self, request: pb.GetCodeRequest, context: Any) -> pb.GetCodeResponse:
        with _refusals():
            owned, redemptions = await self._store.codes.code(_code(request.code))
        return pb.GetCodeResponse(
            code=_owned(owned),
            redemptions=[
                pb.Redemption(
                    hold=_hold(use.hold, self._own_codes),
                    user_id=str(use.user_id) if use.user_id else "",
                    create_time=optional_timestamp(use.create_time),
                )
                for use in redemptions
            ],
        )

    async def ListCodes(self, request: pb.ListCodesRequest, context: Any) -> pb.ListCodesResponse:
        owner = _owner_of("owner", request.owner)
        campaign_id = _uuid("campaign_id", request.campaign_id) if request.campaign_id else None
        state = domain.CodeState(request.state) if request.state else None
        query = f"codes {owner} {campaign_id} {state}"
        size, after = self._page(request.page_size, request.page_token, query)
        listed = await self._store.codes.list_codes(size, after, owner=owner, campaign_id=campaign_id, state=state)
        return pb.ListCodesResponse(
            codes=[_owned(code) for code in listed],
            next_page_token=self._pages.keyset_next([(c.create_time, c.code.id) for c in listed], size, query),
        )

    async def DisableCode(self, request: pb.DisableCodeRequest, context: Any) -> pb.DisableCodeResponse:
        with _refusals():
            return pb.DisableCodeResponse(code=_owned(await self._store.codes.disable(_code(request.code))))

    async def GetReferralTree(self, request: pb.GetReferralTreeRequest, context: Any) -> pb.GetReferralTreeResponse:
        violations = []
        if request.root.WhichOneof("kind") is None:
            violations.append(FieldViolation("root", "a user_id or an admin_id is required"))
        if not 1 <= request.depth <= MAX_DEPTH:
            violations.append(FieldViolation("depth", f"between 1 and {MAX_DEPTH}"))
        if violations:
            raise InvalidArgument(violations)
        root = _owner_of("root", request.root)
        assert root is not None
        tree = await self._store.referrals.referral_tree(root, request.depth)
        return pb.GetReferralTreeResponse(children=[_referral(node) for node in tree])

    async def CreateCampaign(self, request: pb.CreateCampaignRequest, context: Any) -> pb.CreateCampaignResponse:
        wanted = request.campaign
        violations = []
        if not 1 <= len(wanted.display_name.strip()) <= MAX_NAME:
            violations.append(FieldViolation("campaign.display_name", f"1 to {MAX_NAME} characters"))
        if wanted.capacity < 0:
            violations.append(FieldViolation("campaign.capacity", "0 (unlimited) or more"))
        if not 0 <= wanted.invite_quota <= MAX_QUOTA:
            violations.append(FieldViolation("campaign.invite_quota", f"between 0 and {MAX_QUOTA}"))
        domains = frozenset(name.strip().lower() for name in wanted.allowed_email_domains)
        if any("." not in name or "@" in name for name in domains):
            violations.append(FieldViolation("campaign.allowed_email_domains", "domains such as example.com"))
        window = domain.Window(
            wanted.start_time.ToDatetime(datetime.UTC) if wanted.HasField("start_time") else None,
            wanted.end_time.ToDatetime(datetime.UTC) if wanted.HasField("end_time") else None,
        )
        if window.start and window.end and window.end <= window.start:
            violations.append(FieldViolation("campaign.end_time", "after start_time"))
        _check_top_up(wanted, violations)
        if violations:
            raise InvalidArgument(violations)
        with _refusals():
            created = await self._store.campaigns.create_campaign(
                wanted.display_name.strip(),
                wanted.capacity or None,
                domains,
                wanted.invite_quota,
                window,
                request.request_id or None,
                wanted.waitlist_top_up,
            )
        return pb.CreateCampaignResponse(campaign=_campaign(created))

    async def UpdateCampaign(self, request: pb.UpdateCampaignRequest, context: Any) -> pb.UpdateCampaignResponse:
        violations: list[FieldViolation] = []
        if not request.campaign.id:
            violations.append(FieldViolation("campaign.id", "required"))
        # The one field that changes is what an empty mask means (AIP-134: the fields given).
        if set(request.update_mask.paths or ["waitlist_top_up"]) != {"waitlist_top_up"}:
            violations.append(FieldViolation("update_mask", "waitlist_top_up (the one field that can change)"))
        _check_top_up(request.campaign, violations)
        if violations:
            raise InvalidArgument(violations)
        campaign_id = _uuid("campaign.id", request.campaign.id)
        with _refusals():
            updated = await self._store.campaigns.update_waitlist_top_up(campaign_id, request.campaign.waitlist_top_up)
        return pb.UpdateCampaignResponse(campaign=_campaign(updated))

    async def ListCampaigns(self, request: pb.ListCampaignsRequest, context: Any) -> pb.ListCampaignsResponse:
        size, after = self._page(request.page_size, request.page_token, _CAMPAIGNS_LISTED)
        found = await self._store.campaigns.campaigns(size, after)
        return pb.ListCampaignsResponse(
            campaigns=[_campaign(campaign) for campaign in found],
            next_page_token=self._pages.keyset_next([(c.create_time, c.id) for c in found], size, _CAMPAIGNS_LISTED),
        )

    async def MintCodes(self, request: pb.MintCodesRequest, context: Any) -> pb.MintCodesResponse:
        violations = []
        if not 1 <= request.count <= MAX_MINT:
            violations.append(FieldViolation("count", f"between 1 and {MAX_MINT}"))
        if request.max_uses < 0:
            violations.append(FieldViolation("max_uses", "0 (unlimited) or more"))
        if request.owner.WhichOneof("kind") is None:
            violations.append(FieldViolation("owner", "a user_id or an admin_id is required"))
        if violations:
            raise InvalidArgument(violations)
        owner = _owner_of("owner", request.owner)
        assert owner is not None
        minted = await self._store.codes.mint(
            request.count,
            request.max_uses or None,
            owner,
            campaign_id=_uuid("campaign_id", request.campaign_id) if request.campaign_id else None,
            expire_time=request.expire_time.ToDatetime(datetime.UTC) if request.HasField("expire_time") else None,
            request_id=request.request_id or None,
        )
        return pb.MintCodesResponse(codes=[_minted(code) for code in minted])

    # The waitlist (invite_svc.waitlist).

    async def JoinWaitlist(self, request: pb.JoinWaitlistRequest, context: Any) -> pb.JoinWaitlistResponse:
        return await self._waitlist.join(request)

    async def ConfirmWaitlistEntry(
        self, request: pb.ConfirmWaitlistEntryRequest, context: Any
    ) -> pb.ConfirmWaitlistEntryResponse:
        with _refusals():
            return await self._waitlist.confirm(request)

    async def GetMyWaitlistEntry(
        self, request: pb.GetMyWaitlistEntryRequest, context: Any
    ) -> pb.GetMyWaitlistEntryResponse:
        with _refusals():
            return await self._waitlist.get_mine(request)

    async def ListWaitlistEntries(
        self, request: pb.ListWaitlistEntriesRequest, context: Any
    ) -> pb.ListWaitlistEntriesResponse:
        return await self._waitlist.list_entries(request)

    async def GetWaitlistStats(self, request: pb.GetWaitlistStatsRequest, context: Any) -> pb.GetWaitlistStatsResponse:
        return await self._waitlist.stats(request)

    async def ReleaseWaitlistPlaces(
        self, request: pb.ReleaseWaitlistPlacesRequest, context: Any
    ) -> pb.ReleaseWaitlistPlacesResponse:
        return await self._waitlist.release(request)

    async def RemoveWaitlistEntry(
        self, request: pb.RemoveWaitlistEntryRequest, context: Any
    ) -> pb.RemoveWaitlistEntryResponse:
        with _refusals():
            return await self._waitlist.remove(request)

    async def MoveWaitlistEntry(
        self, request: pb.MoveWaitlistEntryRequest, context: Any
    ) -> pb.MoveWaitlistEntryResponse:
        with _refusals():
            return await self._waitlist.move(request)


@contextlib.contextmanager
def _refusals(waitlist_url: str | None = None) -> Iterator[None]:
    """Turns a domain Refusal into the gRPC status its reason calls for; a code whose places are
    gone names the waitlist (`ErrorInfo.metadata["waitlist_url"]`) when `waitlist_url` is given."""
    try:
        yield
    except Refusal as refusal:
        kind = _REFUSAL_KINDS.get(refusal.reason, FailedPrecondition)
        offer = {"waitlist_url": waitlist_url} if waitlist_url and refusal.reason in domain.PLACES_GONE else None
        raise kind(refusal.reason, refusal.message, offer) from None


def _code(typed: str) -> str:
    try:
        return normalize(typed)
    except InvalidCode as invalid:
        raise InvalidArgument([FieldViolation("code", invalid.description)], reason=invalid.reason) from None


def _owner_of(field: str, given: pb.Owner) -> Owner | None:
    """The domain Owner of a proto Owner; None when neither id is set."""
    kind = given.WhichOneof("kind")
    if kind is None:
        return None
    owner_id = _uuid(f"{field}.{kind}", getattr(given, kind))
    return Owner(user_id=owner_id) if kind == "user_id" else Owner(admin_id=owner_id)


def _check_top_up(campaign: pb.Campaign, violations: list[FieldViolation]) -> None:
    if not 0 <= campaign.waitlist_top_up <= MAX_RELEASE:
        violations.append(FieldViolation("campaign.waitlist_top_up", f"between 0 (off) and {MAX_RELEASE}"))


def _uuid(field: str, value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument([FieldViolation(field, "not a UUID")]) from None


def _owner(owner: Owner) -> pb.Owner:
    if owner.user_id is not None:
        return pb.Owner(user_id=str(owner.user_id))
    return pb.Owner(admin_id=str(owner.admin_id)) if owner.admin_id is not None else pb.Owner()


def _hold(hold: HoldRecord, own_codes: OwnCodes) -> pb.Hold:
    return pb.Hold(
        id=str(hold.id),
        code_id=str(hold.code_id),
        state=int(hold.state),  # type: ignore[arg-type]
        expire_time=optional_timestamp(hold.expire_time),
        referrer=_owner(hold.referrer),
        campaign_id=str(hold.campaign_id) if hold.campaign_id else "",
        invite_quota=own_codes.count(hold.invite_quota),
        invite_uses=own_codes.uses,
    )


def _campaign(campaign: Campaign) -> pb.Campaign:
    return pb.Campaign(
        id=str(campaign.id),
        display_name=campaign.display_name,
        capacity=campaign.capacity or 0,
        taken=campaign.taken,
        allowed_email_domains=sorted(campaign.allowed_email_domains),
        invite_quota=campaign.invite_quota,
        start_time=optional_timestamp(campaign.window.start),
        end_time=optional_timestamp(campaign.window.end),
        create_time=optional_timestamp(campaign.create_time),
        waitlist_top_up=campaign.waitlist_top_up,
    )


def _referral(node: ReferralNode) -> pb.ReferralNode:
    return pb.ReferralNode(
        user_id=str(node.user_id),
        code_id=str(node.code_id),
        confirm_time=optional_timestamp(node.confirm_time),
        children=[_referral(child) for child in node.children],
    )


def _referral_of(person: Joined) -> pb.Referral:
    return pb.Referral(
        code=display(person.code),
        masked_email=domain.masked_email(person.canonical_email),
        join_time=optional_timestamp(person.join_time),
    )


def _owned(owned: OwnedCode) -> pb.InviteCode:
    listed = _minted(owned.code)
    listed.state = int(owned.state)  # type: ignore[assignment]
    listed.confirmed_uses = owned.confirmed_uses
    listed.held_uses = owned.held_uses
    listed.create_time.FromDatetime(owned.create_time)
    return listed


def _minted(code: MintedCode) -> pb.InviteCode:
    return pb.InviteCode(
        id=str(code.id),
        code=display(code.code),
        state=pb.CODE_STATE_ACTIVE,
        max_uses=code.max_uses or 0,
        owner=_owner(code.owner),
        campaign_id=str(code.campaign_id) if code.campaign_id else "",
        expire_time=optional_timestamp(code.expire_time),
    )


def invite_service(
    runtime: ServiceRuntime,
    own: InviteSettings | None = None,
    kind: type[S] = InviteService,  # type: ignore[assignment]
) -> S:
    """The servicer of this process (`kind`: a subclass, for benchmarks), its expiry job registered;
    `own` settings, else `MESH_INVITE_*`."""
    own = own or InviteSettings()
    settings, kek = runtime.settings, load_kek(runtime.settings)
    sealer = CodeSealer(kek)
    store = InviteStore.over(runtime.engine, runtime.driver, sealer, datetime.timedelta(seconds=own.hold_ttl))

    @functools.cache
    def mail() -> mail_service_pb2_grpc.MailServiceAsyncStub:
        # Made at the first delivery: mail_svc's address is needed only when it is called.
        return mail_service_pb2_grpc.MailServiceStub(runtime.peers.channel(MAIL))

    send_email, send_emails = email_receivers(
        lambda request: mail().SendEmail(request, timeout=DEADLINE),
        lambda request: mail().BatchSendEmails(request, timeout=DEADLINE),
        runtime.peers.breaker(MAIL),
    )
    outbox = Outbox(
        runtime.engine,
        runtime.driver,
        models.outbox,
        Sealer(derive_key(kek, "invite outbox seal v1")),
        {SEND_EMAIL: send_email},
        runtime.metrics,
        RelayTimings.of(settings),
        together={SEND_EMAIL: send_emails},
    )
    rules = ReferralRules(
        own.waitlist_places_per_referral,
        own.waitlist_referral_cap,
        frozenset(blocklist) | {name.strip().lower() for name in own.waitlist_disposable_domains},
        datetime.timedelta(seconds=own.waitlist_same_client_window),
    )
    places = Places(runtime.redis, runtime.pipe, runtime.keys)
    waitlist_store = WaitlistStore(runtime.engine, runtime.driver, outbox, places, rules, sealer)
    pages = PageTokens(derive_key(kek, "invite page-token v1"))
    waitlist = Waitlist(
        waitlist_store,
        WaitlistLinks(kek),
        rules,
        FixedWindowLimit(runtime.counters, runtime.keys, "waitlist-joins", own.waitlist_joins_per_hour, _HOUR),
        FixedWindowLimit(runtime.counters, runtime.keys, "waitlist-mails", own.waitlist_mails_per_hour, _HOUR),
        pages,
        own.waitlist_url,
        own.reserve_url,
        settings.email_strip_tags,
    )
    runtime.workers.append(outbox)
    runtime.jobs.append(expiry_job(store.holds, outbox, own.expiry_interval))
    runtime.jobs.append(places_job(waitlist_store, places, own.waitlist_catch_up_interval))
    runtime.jobs.append(top_up_job(waitlist, own.waitlist_top_up_interval))
    return kind(
        store,
        FixedWindowLimit(runtime.counters, runtime.keys, "checks", own.checks_per_minute, 60),
        settings.email_strip_tags,
        OwnCodes(own.default_quota, own.default_uses),
        pages,
        waitlist,
    )


def add_servicers(server: grpc.aio.Server, runtime: ServiceRuntime, own: InviteSettings | None = None) -> None:
    invite_service_pb2_grpc.add_InviteServiceServicer_to_server(invite_service(runtime, own), server)
