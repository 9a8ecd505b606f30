"""The waitlist flow: people join with an email (and a friend's referral code), confirm it through
a private link, follow their place; admins list it, release places, remove or move people, and
campaigns with a waitlist top-up release places by themselves.

A join answers the same whatever the email's history (new, waiting, invited, removed): what
differs is only what is mailed, and the mail goes to the email's owner. Nothing here answers
anything about anyone but the holder of a private link."""

from __future__ import annotations

import re
import uuid

from invitemesh.invite.v1 import invite_service_pb2 as pb
from invitemesh.mail.v1 import mail_service_pb2 as mail_pb

from invite_svc import domain
from invite_svc.domain import EntryState, ReferralRules, Refusal
from invite_svc.sealing import WaitlistLinks
from invite_svc.store.waitlist import Entry, Invitation, Placed, WaitlistStore
from mesh.clients import client_address
from mesh.cursors import PageTokens, page_size
from mesh.emails import InvalidEmail, canonical_email, checked_address
from mesh.errors import FieldViolation, InvalidArgument, RateLimited
from mesh.invite_codes import display
from mesh.limits import FixedWindowLimit, spend_together
from mesh.mailing import Mail
from mesh.timestamps import optional_timestamp

MAX_RELEASE = 10_000
MAX_MOVE = 1_000_000
MAX_DAYS = 90
MAX_TOP = 100
_REFERRAL_CODE = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


class Waitlist:
    def __init__(
        self,
        store: WaitlistStore,
        links: WaitlistLinks,
        rules: ReferralRules,
        joins: FixedWindowLimit,
        mails: FixedWindowLimit,
        pages: PageTokens,
        waitlist_url: str,
        reserve_url: str,
        strip_email_tags: bool,
    ) -> None:
        self._store = store
        self._links = links
        self._rules = rules
        self._joins = joins
        self._mails = mails
        self._pages = pages
        self.page_url = waitlist_url.rstrip("/")
        self._reserve_url = reserve_url
        self._strip_email_tags = strip_email_tags

    async def join(self, request: pb.JoinWaitlistRequest) -> pb.JoinWaitlistResponse:
        violations: list[FieldViolation] = []
        address = checked_address("email", request.email.strip(), violations)
        referral_code = request.referral_code.strip()
        if referral_code and not _REFERRAL_CODE.match(referral_code):
            violations.append(FieldViolation("referral_code", "the code of a share link, or empty"))
        if violations or address is None:
            raise InvalidArgument(violations)
        try:
            canonical = canonical_email(address, self._strip_email_tags)
        except InvalidEmail:
            raise InvalidArgument([FieldViolation("email", "not an email address")]) from None
        client = client_address()
        # An email mailed too often lately gets the same answer and no mail (no mail-bombing).
        joins_wait, mails_wait = await spend_together([(self._joins, client), (self._mails, canonical)])
        if joins_wait:
            raise RateLimited("too many waitlist joins from this address; wait a while", joins_wait)

        def link_mail(entry_id: uuid.UUID, email: str, state: EntryState) -> Mail | None:
            if mails_wait or state is EntryState.REMOVED:
                return None
            status_url = f"{self.page_url}/me#token={self._links.token(entry_id)}"
            return Mail(mail_pb.EMAIL_TEMPLATE_WAITLIST_LINK, email, {"status_url": status_url})

        await self._store.join(address, canonical, referral_code, self._links.client(client), link_mail)
        return pb.JoinWaitlistResponse()

    def _invitation_mail(self, invitation: Invitation) -> Mail:
        variables = {"code": display(invitation.code), "reserve_url": self._reserve_url}
        return Mail(mail_pb.EMAIL_TEMPLATE_WAITLIST_INVITATION, invitation.entry.email, variables)

    async def confirm(self, request: pb.ConfirmWaitlistEntryRequest) -> pb.ConfirmWaitlistEntryResponse:
        confirmed = await self._store.confirm(self._entry_of(request.token))
        if confirmed is None:
            raise _link_invalid()
        return pb.ConfirmWaitlistEntryResponse(entry=await self._mine(confirmed))

    async def get_mine(self, request: pb.GetMyWaitlistEntryRequest) -> pb.GetMyWaitlistEntryResponse:
        found = await self._store.entry(self._entry_of(request.token))
        if found is None:
            raise _link_invalid()
        return pb.GetMyWaitlistEntryResponse(entry=await self._mine(found))

    def _entry_of(self, token: str) -> uuid.UUID:
        if not token.strip():
            raise InvalidArgument([FieldViolation("token", "required: the token of the mailed link")])
        entry_id = self._links.entry_of(token)
        if entry_id is None:
            raise _link_invalid()
        return entry_id

    async def _mine(self, entry: Entry) -> pb.MyWaitlistEntry:
        placed = await self._store.placed(entry)
        return pb.MyWaitlistEntry(
            state=int(entry.state),  # type: ignore[arg-type]
            position=_position(placed),
            people_ahead=placed.ahead or 0,
            waiting=placed.waiting,
            referral_code=entry.referral_code,
            referral_url=f"{self.page_url}?ref={entry.referral_code}",
            referrals=entry.referrals,
            referral_cap=self._rules.cap,
            places_per_referral=self._rules.places,
            create_time=optional_timestamp(entry.create_time),
        )

    # Admins (through admin_svc, which audits the changes).

    async def list_entries(self, request: pb.ListWaitlistEntriesRequest) -> pb.ListWaitlistEntriesResponse:
        state = EntryState(request.state) if request.state else EntryState.WAITING
        query = f"waitlist {state.name} {request.email_prefix.strip().lower()}"
        violations: list[FieldViolation] = []
        size = page_size(request.page_size, violations)
        after = None
        if request.page_token:
            try:
                rank_key, seq = self._pages.position(request.page_token, query)
                after = int(rank_key), int(seq)
            except ValueError:
                violations.append(FieldViolation("page_token", "not a page token of this listing"))
        if violations:
            raise InvalidArgument(violations)
        entries, total = await self._store.page(state, size, after, request.email_prefix)
        ahead = await self._store.ranks(entries) if state is EntryState.WAITING else [None for _ in entries]
        last = entries[-1] if len(entries) == size else None
        return pb.ListWaitlistEntriesResponse(
            entries=[_entry(entry, rank) for entry, rank in zip(entries, ahead, strict=True)],
            next_page_token=self._pages.issue((str(last.rank_key), str(last.seq)), query) if last else "",
            total_size=total,
        )

    async def stats(self, request: pb.GetWaitlistStatsRequest) -> pb.GetWaitlistStatsResponse:
        violations = []
        if not 0 <= request.days <= MAX_DAYS:
            violations.append(FieldViolation("days", f"between 1 and {MAX_DAYS} (0: 30)"))
        if not 0 <= request.top_referrers <= MAX_TOP:
            violations.append(FieldViolation("top_referrers", f"between 1 and {MAX_TOP} (0: 10)"))
        if violations:
            raise InvalidArgument(violations)
        counts = await self._store.counts()
        growth = await self._store.growth(request.days or 30)
        top = await self._store.top_referrers(request.top_referrers or 10)
        ahead = await self._store.ranks(top)
        return pb.GetWaitlistStatsResponse(
            unconfirmed=counts[EntryState.UNCONFIRMED],
            waiting=counts[EntryState.WAITING],
            invited=counts[EntryState.INVITED],
            removed=counts[EntryState.REMOVED],
            days=[
                pb.WaitlistDay(day=day.day.isoformat(), joined=day.joined, confirmed=day.confirmed) for day in growth
            ],
            top_referrers=[
                _entry(entry, rank if entry.state is EntryState.WAITING else None)
                for entry, rank in zip(top, ahead, strict=True)
            ],
        )

    async def release(self, request: pb.ReleaseWaitlistPlacesRequest) -> pb.ReleaseWaitlistPlacesResponse:
        violations = []
        if not 1 <= request.count <= MAX_RELEASE:
            violations.append(FieldViolation("count", f"between 1 and {MAX_RELEASE}"))
        if not request.request_id:
            violations.append(FieldViolation("request_id", "required, so that a retry mails nobody twice"))
        campaign_id = _optional_uuid("campaign_id", request.campaign_id, violations)
        admin_id = _optional_uuid("admin_id", request.admin_id, violations)
        if violations:
            raise InvalidArgument(violations)
        invited = await self._store.release(
            request.count, request.request_id, campaign_id, admin_id, self._invitation_mail
        )
        return pb.ReleaseWaitlistPlacesResponse(entries=[_entry(invitation.entry, None) for invitation in invited])

    async def top_up(self) -> list[tuple[uuid.UUID, int]]:
        """Tops up every open campaign that keeps waitlist invitations out: each campaign's id
        and how many people it invited now, for those that invited any."""
        topped_up = []
        for campaign_id in await self._store.campaigns_topped_up():
            invited = await self._store.top_up(campaign_id, self._invitation_mail)
            if invited:
                topped_up.append((campaign_id, len(invited)))
        return topped_up

    async def remove(self, request: pb.RemoveWaitlistEntryRequest) -> pb.RemoveWaitlistEntryResponse:
        removed = await self._store.remove(_required_uuid("id", request.id))
        return pb.RemoveWaitlistEntryResponse(entry=_entry(removed, None))

    async def move(self, request: pb.MoveWaitlistEntryRequest) -> pb.MoveWaitlistEntryResponse:
        violations = []
        if not -MAX_MOVE <= request.places <= MAX_MOVE:
            violations.append(FieldViolation("places", f"between -{MAX_MOVE} and {MAX_MOVE}"))
        entry_id = _optional_uuid("id", request.id, violations)
        if entry_id is None and not violations:
            violations.append(FieldViolation("id", "required"))
        if violations or entry_id is None:
            raise InvalidArgument(violations)
        moved = await self._store.move(entry_id, request.places)
        ahead = (await self._store.ranks([moved]))[0]
        return pb.MoveWaitlistEntryResponse(entry=_entry(moved, ahead))


def _link_invalid() -> Refusal:
    return Refusal(domain.WAITLIST_LINK_INVALID, "this waitlist link is not valid; join again to get a new one")


def _position(placed: Placed) -> int:
    return placed.ahead + 1 if placed.ahead is not None else 0


def _entry(entry: Entry, ahead: int | None) -> pb.WaitlistEntry:
    return pb.WaitlistEntry(
        id=str(entry.id),
        email=entry.email,
        state=int(entry.state),  # type: ignore[arg-type]
        position=ahead + 1 if ahead is not None and entry.state is EntryState.WAITING else 0,
        referrals=entry.referrals,
        referrer_id=str(entry.referrer_id) if entry.referrer_id else "",
        create_time=optional_timestamp(entry.create_time),
        confirm_time=optional_timestamp(entry.confirm_time),
        invite_time=optional_timestamp(entry.invite_time),
        code_id=str(entry.code_id) if entry.code_id else "",
        moved_places=entry.moved_places,
    )


def _optional_uuid(field: str, value: str, violations: list[FieldViolation]) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        violations.append(FieldViolation(field, "not a UUID"))
        return None


def _required_uuid(field: str, value: str) -> uuid.UUID:
    violations: list[FieldViolation] = []
    found = _optional_uuid(field, value, violations)
    if found is None:
        raise InvalidArgument(violations or [FieldViolation(field, "required")])
    return found
