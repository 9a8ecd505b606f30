"""The waitlist: joins, confirmations, referrals, releases, and an admin's moves, in PostgreSQL,
the source of truth; places are read from an index in Redis (invite_svc.store.places).

How places are kept. Every entry has a join sequence number `seq` and a rank key, which starts at
twice `seq` and drops past the configured places of join order for each counted referral (or
an admin's move; invite_svc.domain.rank_key_shift). The people waiting are ordered by (rank key,
seq): unique, so no two share a place. PostgreSQL keeps
that order in a partial index (`waitlist_places`), which is what a release takes its first N from
and what a place is counted from when Redis cannot answer. Counting is O(place) there, so a place
is read from a Redis sorted set of the same keys instead: `ZRANK` is O(log n) at a million
entries. Every change also moves `rank_time`, which is what the index catches up from.

Exactness under contention:
- a join is one `INSERT … ON CONFLICT DO NOTHING` on the canonical email: once per person;
- a confirmation is one `UPDATE … WHERE state = unconfirmed`: it, and the referral it carries,
  happen once however many confirm at once; the referrer's row is locked (referrers are always
  older than their referees, so those locks cannot form a cycle) while the rules are checked and
  its count and key change, so concurrent referrals neither pass the cap nor miss each other;
- releases take a transaction-scoped advisory lock, so two at once run one after the other and
  the second takes the next N people; the first N are locked, invited, given a single-use code
  each, and their mails promised to the outbox, all in one transaction, which is recorded under
  the release's request id: a release asked again answers what the first one did;
- a campaign's top-up counts its invitations out and invites under the same lock, so top-ups
  in every replica and releases at once never invite past what it keeps out.
"""

from __future__ import annotations

import datetime
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError
from sqlalchemy import Boolean, Interval, and_, bindparam, exists, func, insert, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from invite_svc.domain import (
    WAITLIST_ENTRY_NOT_FOUND,
    WAITLIST_ENTRY_NOT_WAITING,
    CodeState,
    EntryState,
    Referral,
    ReferralRules,
    Refusal,
    rank_key_shift,
    waitlist_top_up,
)
from invite_svc.models import campaigns, code_slots, codes, outbox, waitlist, waitlist_releases
from invite_svc.sealing import CodeSealer
from invite_svc.store.campaigns import SPOTS_TAKEN
from invite_svc.store.codes import insert_codes
from invite_svc.store.places import Place, Places
from invite_svc.store.records import Owner
from mesh.db import DriverPool, DriverStatement
from mesh.mailing import SEND_EMAIL, Mail, mail_payload
from mesh.outbox import Outbox

CATCH_UP_MARGIN = datetime.timedelta(seconds=30)
"""How far back a catch-up reads again: a change whose transaction began earlier but committed
after the last catch-up is still seen."""
REBUILD_BATCH = 10_000
_REFERRAL_CODE_BYTES = 6


@dataclass(frozen=True)
class Entry:
    id: uuid.UUID
    seq: int
    email: str
    canonical_email: str
    state: EntryState
    rank_key: int
    referral_code: str
    referrer_id: uuid.UUID | None
    referrals: int
    moved_places: int
    create_time: datetime.datetime
    confirm_time: datetime.datetime | None
    invite_time: datetime.datetime | None
    code_id: uuid.UUID | None

    @property
    def place(self) -> Place:
        return self.seq, self.rank_key


@dataclass(frozen=True)
class Placed:
    """An entry with the people ahead of it (None unless it is waiting) and everyone waiting."""

    entry: Entry
    ahead: int | None
    waiting: int


@dataclass(frozen=True)
class Invitation:
    """Someone a release invited and the code it mailed them (empty when a release asked again
    answers it: codes are shown once)."""

    entry: Entry
    code: str


@dataclass(frozen=True)
class Growth:
    day: datetime.date
    joined: int
    confirmed: int


def _entry(row: Mapping[Any, Any]) -> Entry:
    return Entry(
        **{name: row[name] for name in Entry.__dataclass_fields__ if name != "state"}, state=EntryState(row["state"])
    )


class WaitlistStore:
    def __init__(
        self,
        engine: AsyncEngine,
        driver: DriverPool,
        outbox: Outbox,
        places: Places,
        rules: ReferralRules,
        sealer: CodeSealer,
    ) -> None:
        self._engine = engine
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._driver = driver
        self._outbox = outbox
        self._places = places
        self._rules = rules
        self._sealer = sealer

    async def join(
        self,
        email: str,
        canonical_email: str,
        referral_code: str,
        client: bytes,
        mail_for: Callable[[uuid.UUID, str, EntryState], Mail | None],
    ) -> Entry:
        """The entry of `canonical_email`, new or as it was, with the mail `mail_for(entry id,
        email, state)` asks for promised in the same step; a referral code of nobody joins
        without a referrer. A new entry and its mail are one statement (one round trip)."""
        async with self._driver.connection() as connection:
            for _ in range(3):
                entry_id = uuid.uuid4()
                mail = mail_for(entry_id, email, EntryState.UNCONFIRMED)
                message_id, sealed = self._outbox.sealed(SEND_EMAIL, mail_payload(mail)) if mail else (None, None)
                row = await _JOIN.fetchrow(
                    connection,
                    id=entry_id,
                    email=email,
                    canonical_email=canonical_email,
                    state=int(EntryState.UNCONFIRMED),
                    referral_code=secrets.token_urlsafe(_REFERRAL_CODE_BYTES),
                    referred_by=referral_code or None,
                    client=client,
                    mailed=mail is not None,
                    message_id=message_id,
                    aggregate=f"waitlist:{entry_id}",
                    kind=SEND_EMAIL,
                    payload=sealed,
                )
                if row is None:
                    async with connection.transaction():
                        row = await _BY_EMAIL.fetchrow(connection, email=canonical_email)
                        if row is None:
                            continue  # neither written nor there: the referral code drawn was taken
                        mail = mail_for(row["id"], row["email"], EntryState(row["state"]))
                        if mail is not None:
                            message_id, sealed = self._outbox.sealed(SEND_EMAIL, mail_payload(mail))
                            aggregate = f"waitlist:{row['id']}"
                            await _PROMISE.execute(
                                connection, id=message_id, aggregate=aggregate, kind=SEND_EMAIL, payload=sealed
                            )
                if mail is not None:
                    self._outbox.notify()
                return _entry(row)
        raise RuntimeError("could not draw a free referral code")

    async def entry(self, entry_id: uuid.UUID) -> Entry | None:
        async with self._driver.connection() as connection:
            row = await _BY_ID.fetchrow(connection, id=entry_id)
        return _entry(row) if row is not None else None

    async def placed(self, entry: Entry) -> Placed:
        """`entry` with its place: from the index, else counted in PostgreSQL."""
        if entry.state is not EntryState.WAITING:
            return Placed(entry, None, await self.waiting())
        found = await self._places.place(entry.seq)
        if found is not None:
            return Placed(entry, *found)
        async with self._driver.connection() as connection:
            ahead = await _AHEAD.fetchval(connection, rank_key=entry.rank_key, seq=entry.seq)
        return Placed(entry, int(ahead), await self.waiting())

    async def waiting(self) -> int:
        try:
            size = await self._places.size()
        except RedisError:  # the index unreachable: count the truth instead
            size = None
        return size if size is not None else (await self.counts())[EntryState.WAITING]

    async def confirm(self, entry_id: uuid.UUID) -> Entry | None:
        """Confirms the entry (and counts the referral it came through, if the rules let it);
        an entry confirmed already is answered as it is; None for no entry."""
        referrer: Entry | None = None
        async with self._driver.connection() as connection, connection.transaction():
            row = await _CONFIRM.fetchrow(connection, id=entry_id)
            if row is None:
                found = await _BY_ID.fetchrow(connection, id=entry_id)
                return _entry(found) if found is not None else None
            confirmed = _entry(row)
            if confirmed.referrer_id is not None:
                referrer = await self._count_referral(connection, confirmed, row["client"])
        await self._places.joined(confirmed.place)
        if referrer is not None and referrer.state is EntryState.WAITING:
            await self._places.moved_up(referrer.place)
        return confirmed

    async def _count_referral(
        self, connection: asyncpg.Connection, referee: Entry, client: bytes | None
    ) -> Entry | None:
        """The referrer moved up by `referee`'s confirmation, or None when it does not count."""
        referrer = await _REFERRER.fetchrow(connection, id=referee.referrer_id)
        assert referrer is not None, "entries are never deleted"
        counted_lately = client is not None and await _LATELY_COUNTED.fetchval(
            connection, referrer=referee.referrer_id, client=client, window=self._rules.same_client_window
        )
        referral = Referral(
            referee_email=referee.canonical_email,
            referrer_email=referrer["canonical_email"],
            referrer_referrals=referrer["referrals"],
            same_client_as_referrer=client is not None and client == referrer["client"],
            same_client_counted_lately=bool(counted_lately),
        )
        listed = EntryState(referrer["state"]) in (EntryState.UNCONFIRMED, EntryState.WAITING)
        if not listed or self._rules.not_counted_because(referral) is not None:
            return None
        await _MARK_COUNTED.execute(connection, id=referee.id)
        shift = rank_key_shift(self._rules.places) if self._rules.places else 0
        moved = await _COUNT_REFERRAL.fetchrow(connection, id=referee.referrer_id, shift=shift)
        assert moved is not None
        return _entry(moved)

    async def move(self, entry_id: uuid.UUID, places: int) -> Entry:
        """Sets how many places a waiting entry is moved up (down when negative) from where its
        join order and referrals put it: the same again changes nothing."""
        async with self._driver.connection() as connection, connection.transaction():
            moved_before = await _MOVED_PLACES.fetchval(connection, id=entry_id)
            if moved_before is None:
                raise await _not_waiting(connection, entry_id)
            shift = rank_key_shift(places) - rank_key_shift(moved_before)
            row = await _MOVE.fetchrow(connection, id=entry_id, shift=shift, places=places)
            assert row is not None, "the entry is locked"
        moved = _entry(row)
        await self._places.moved(moved.place)
        return moved

    async def remove(self, entry_id: uuid.UUID) -> Entry:
        """Takes an unconfirmed or waiting entry off the list; a removed one is answered as it is."""
        async with self._driver.connection() as connection:
            row = await _REMOVE.fetchrow(connection, id=entry_id)
            if row is None:
                found = await _BY_ID.fetchrow(connection, id=entry_id)
                if found is not None and found["state"] == EntryState.REMOVED:
                    return _entry(found)
                raise await _not_waiting(connection, entry_id)
        removed = _entry(row)
        await self._places.left([removed.seq])
        return removed

    async def release(
        self,
        count: int,
        request_id: str,
        campaign_id: uuid.UUID | None,
        admin_id: uuid.UUID | None,
        invitation: Callable[[Invitation], Mail],
    ) -> list[Invitation]:
        """Invites the first `count` people waiting, each with a single-use code mailed through
        the outbox (`invitation` makes the mail); the same `request_id` again answers the people
        the first release invited and does nothing more."""
        async with self._engine.begin() as connection:
            await connection.execute(_LOCK_RELEASES)
            earlier = await connection.scalar(
                select(waitlist_releases.c.id).where(waitlist_releases.c.request_id == request_id)
            )
            if earlier is not None:
                rows = await connection.execute(
                    # Invitations keep the rank keys they had: the order they were invited in.
                    select(waitlist)
                    .where(waitlist.c.release_id == earlier, waitlist.c.state == int(EntryState.INVITED))
                    .order_by(waitlist.c.rank_key, waitlist.c.seq)
                )
                return [Invitation(_entry(row), "") for row in rows.mappings()]
            invitations = await self._invite(connection, count, request_id, campaign_id, admin_id, invitation)
        await self._invited(invitations)
        return invitations

    async def campaigns_topped_up(self) -> list[uuid.UUID]:
        """The campaigns that keep waitlist invitations out and are open now."""
        async with self._autocommit.connect() as connection:
            return list((await connection.execute(_TOPPED_UP)).scalars())

    async def top_up(self, campaign_id: uuid.UUID, invitation: Callable[[Invitation], Mail]) -> list[Invitation]:
        """Invites as many people as the campaign's waitlist top-up asks for now
        (invite_svc.domain.waitlist_top_up), as a release for the campaign by no admin. Counted
        and invited under the lock every release takes, so top-ups in every replica and admins'
        releases at once see each other's invitations and never overshoot; a top-up cut short
        rolls back whole, and the next one counts again."""
        async with self._engine.begin() as connection:
            await connection.execute(_LOCK_RELEASES)
            terms = (await connection.execute(_TOP_UP_TERMS, {"campaign": campaign_id})).mappings().first()
            if terms is None:
                return []
            count = waitlist_top_up(terms["target"], terms["out"], terms["room"])
            if not count:
                return []
            invitations = await self._invite(connection, count, f"top-up:{uuid.uuid4()}", campaign_id, None, invitation)
        await self._invited(invitations)
        return invitations

    async def _invite(
        self,
        connection: AsyncConnection,
        count: int,
        request_id: str,
        campaign_id: uuid.UUID | None,
        admin_id: uuid.UUID | None,
        invitation: Callable[[Invitation], Mail],
    ) -> list[Invitation]:
        release_id = uuid.uuid4()
        await connection.execute(
            insert(waitlist_releases).values(
                id=release_id, request_id=request_id, count=count, campaign_id=campaign_id, admin_id=admin_id
            )
        )
        first = (
            select(waitlist.c.id)
            .where(waitlist.c.state == int(EntryState.WAITING))
            .order_by(waitlist.c.rank_key, waitlist.c.seq)
            .limit(count)
            .with_for_update()
        )
        picked = (await connection.execute(first)).scalars().all()
        codes = await insert_codes(
            connection, self._sealer, len(picked), 1, Owner(admin_id=admin_id), campaign_id, None, request_id
        )
        invitations: list[Invitation] = []
        for entry_id, code in zip(picked, codes, strict=True):
            invited = await connection.execute(
                _INVITE.values(release_id=release_id, code_id=code.id), {"entry": entry_id}
            )
            invitations.append(Invitation(_entry(invited.mappings().one()), code.code))
        for invited_entry in invitations:
            mail = mail_payload(invitation(invited_entry))
            await self._outbox.add(connection, f"waitlist:{invited_entry.entry.id}", SEND_EMAIL, mail)
        return invitations

    async def _invited(self, invitations: list[Invitation]) -> None:
        if invitations:
            self._outbox.notify()
            await self._places.left([invited.entry.seq for invited in invitations])

    async def page(
        self, state: EntryState, size: int, after: tuple[int, int] | None, email_prefix: str
    ) -> tuple[list[Entry], int]:
        """A page of entries in `state` after the keyset `after` ((rank key, seq)), the waiting in
        the order of their places and the others newest first, and how many match."""
        matching = [waitlist.c.state == int(state)]
        if email_prefix:
            matching.append(waitlist.c.canonical_email.startswith(email_prefix.strip().lower(), autoescape=True))
        listed = select(waitlist).where(*matching).limit(size)
        if state is EntryState.WAITING:
            listed = listed.order_by(waitlist.c.rank_key, waitlist.c.seq)
            if after is not None:
                listed = listed.where(tuple_(waitlist.c.rank_key, waitlist.c.seq) > tuple_(*after))
        else:
            listed = listed.order_by(waitlist.c.seq.desc())
            if after is not None:
                listed = listed.where(waitlist.c.seq < after[1])
        async with self._autocommit.connect() as connection:
            rows = (await connection.execute(listed)).mappings().all()
            total = await connection.scalar(select(func.count()).select_from(waitlist).where(*matching))
        return [_entry(row) for row in rows], int(total or 0)

    async def growth(self, days: int) -> list[Growth]:
        """Entries joined and confirmed on each of the last `days` days (UTC), oldest first."""
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(_GROWTH, {"days": days})
        return [Growth(row.day, row.joined, row.confirmed) for row in rows]

    async def counts(self) -> dict[EntryState, int]:
        async with self._autocommit.connect() as connection:
            rows = await connection.execute(select(waitlist.c.state, func.count()).group_by(waitlist.c.state))
            found = {EntryState(state): int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in EntryState}

    async def top_referrers(self, limit: int) -> list[Entry]:
        top = (
            select(waitlist)
            .where(waitlist.c.referrals > 0)
            .order_by(waitlist.c.referrals.desc(), waitlist.c.seq.desc())
            .limit(limit)
        )
        async with self._autocommit.connect() as connection:
            rows = (await connection.execute(top)).mappings().all()
        return [_entry(row) for row in rows]

    async def ranks(self, entries: Sequence[Entry]) -> list[int | None]:
        """People ahead of each entry, from the index (None where it cannot tell)."""
        return await self._places.ranks([entry.seq for entry in entries])

    # Catching the index up.

    async def now(self) -> datetime.datetime:
        async with self._driver.connection() as connection:
            moment: datetime.datetime = await connection.fetchval("SELECT now()")
        return moment

    async def changed_since(self, since: datetime.datetime) -> AsyncIterator[tuple[list[Place], list[int]]]:
        """Batches of (places of the waiting, seqs of the others) changed after `since`."""
        after: tuple[datetime.datetime, int] = (since - CATCH_UP_MARGIN, 0)
        while True:
            async with self._driver.connection() as connection:
                rows = await _CHANGED.fetch(connection, time=after[0], seq=after[1], limit=REBUILD_BATCH)
            if not rows:
                return
            yield (
                [(row["seq"], row["rank_key"]) for row in rows if row["state"] == EntryState.WAITING],
                [row["seq"] for row in rows if row["state"] != EntryState.WAITING],
            )
            after = (rows[-1]["rank_time"], rows[-1]["seq"])

    async def everyone_waiting(self) -> AsyncIterator[list[Place]]:
        after = 0
        while True:
            async with self._driver.connection() as connection:
                rows = await _WAITING_AFTER.fetch(connection, seq=after, limit=REBUILD_BATCH)
            if not rows:
                return
            yield [(row["seq"], row["rank_key"]) for row in rows]
            after = rows[-1]["seq"]


async def _not_waiting(connection: asyncpg.Connection, entry_id: uuid.UUID) -> Refusal:
    if await _EXISTS.fetchval(connection, id=entry_id):
        return Refusal(WAITLIST_ENTRY_NOT_WAITING, "this waitlist entry is not waiting")
    return Refusal(WAITLIST_ENTRY_NOT_FOUND, "no such waitlist entry")


_WAITING = waitlist.c.state == int(EntryState.WAITING)
_BY_ID = DriverStatement(select(waitlist).where(waitlist.c.id == bindparam("id")))
_BY_EMAIL = DriverStatement(select(waitlist).where(waitlist.c.canonical_email == bindparam("email")))
_EXISTS = DriverStatement(select(exists().where(waitlist.c.id == bindparam("id"))))
_REFERRER = DriverStatement(select(waitlist).where(waitlist.c.id == bindparam("id")).with_for_update())
_AHEAD = DriverStatement(
    select(func.count())
    .select_from(waitlist)
    .where(_WAITING, tuple_(waitlist.c.rank_key, waitlist.c.seq) < tuple_(bindparam("rank_key"), bindparam("seq")))
)
# One statement: a join sequence number drawn for both the entry's order and its first rank key,
# the referrer found by its code, and the mail promised. On a taken email (or referral code)
# nothing is written.
_drawn = select(func.nextval(func.pg_get_serial_sequence("invite.waitlist", "seq")).label("seq")).cte("drawn")
_joined = (
    upsert(waitlist)
    .from_select(
        ["id", "seq", "email", "canonical_email", "state", "rank_key", "referral_code", "referrer_id", "client"],
        select(
            bindparam("id"),
            _drawn.c.seq,
            bindparam("email"),
            bindparam("canonical_email"),
            bindparam("state"),
            _drawn.c.seq * 2,
            bindparam("referral_code"),
            select(waitlist.c.id).where(waitlist.c.referral_code == bindparam("referred_by")).scalar_subquery(),
            bindparam("client"),
        ),
    )
    .on_conflict_do_nothing()
    .returning(*waitlist.c)
    .cte("joined")
)
# The new entry's mail, written only when the entry was.
_mailed = (
    insert(outbox)
    .from_select(
        ["id", "aggregate", "kind", "payload"],
        select(bindparam("message_id"), bindparam("aggregate"), bindparam("kind"), bindparam("payload"))
        .select_from(_joined)
        .where(bindparam("mailed", type_=Boolean)),
    )
    .cte("mailed")
)
_JOIN = DriverStatement(select(*_joined.c).add_cte(_mailed))
_PROMISE = DriverStatement(
    insert(outbox).values(
        id=bindparam("id"), aggregate=bindparam("aggregate"), kind=bindparam("kind"), payload=bindparam("payload")
    )
)
_CONFIRM = DriverStatement(
    update(waitlist)
    .where(waitlist.c.id == bindparam("id"), waitlist.c.state == int(EntryState.UNCONFIRMED))
    .values(state=int(EntryState.WAITING), confirm_time=func.now(), rank_time=func.now())
    .returning(*waitlist.c)
)
_LATELY_COUNTED = DriverStatement(
    select(
        exists().where(
            waitlist.c.referrer_id == bindparam("referrer"),
            waitlist.c.referral_counted,
            waitlist.c.client == bindparam("client"),
            waitlist.c.confirm_time > func.now() - bindparam("window", type_=Interval()),
        )
    )
)
_MARK_COUNTED = DriverStatement(update(waitlist).where(waitlist.c.id == bindparam("id")).values(referral_counted=True))
_COUNT_REFERRAL = DriverStatement(
    update(waitlist)
    .where(waitlist.c.id == bindparam("id"))
    .values(referrals=waitlist.c.referrals + 1, rank_key=waitlist.c.rank_key - bindparam("shift"), rank_time=func.now())
    .returning(*waitlist.c)
)
_MOVED_PLACES = DriverStatement(
    select(waitlist.c.moved_places).where(waitlist.c.id == bindparam("id"), _WAITING).with_for_update()
)
_MOVE = DriverStatement(
    update(waitlist)
    .where(waitlist.c.id == bindparam("id"))
    .values(rank_key=waitlist.c.rank_key - bindparam("shift"), moved_places=bindparam("places"), rank_time=func.now())
    .returning(*waitlist.c)
)
_REMOVE = DriverStatement(
    update(waitlist)
    .where(
        waitlist.c.id == bindparam("id"),
        or_(waitlist.c.state == int(EntryState.UNCONFIRMED), _WAITING),
    )
    .values(state=int(EntryState.REMOVED), remove_time=func.now(), rank_time=func.now())
    .returning(*waitlist.c)
)
_INVITE = (
    update(waitlist)
    .where(waitlist.c.id == bindparam("entry"))
    .values(state=int(EntryState.INVITED), invite_time=func.now(), rank_time=func.now())
    .returning(*waitlist.c)
)
_CHANGED = DriverStatement(
    select(waitlist.c.seq, waitlist.c.state, waitlist.c.rank_key, waitlist.c.rank_time)
    .where(
        waitlist.c.rank_time.is_not(None),
        tuple_(waitlist.c.rank_time, waitlist.c.seq) > tuple_(bindparam("time"), bindparam("seq")),
    )
    .order_by(waitlist.c.rank_time, waitlist.c.seq)
    .limit(bindparam("limit"))
)
_WAITING_AFTER = DriverStatement(
    select(waitlist.c.seq, waitlist.c.rank_key)
    .where(_WAITING, waitlist.c.seq > bindparam("seq"))
    .order_by(waitlist.c.seq)
    .limit(bindparam("limit"))
)
_LOCK_RELEASES = text("SELECT pg_advisory_xact_lock(hashtext('invite.waitlist release'))")
_NOW_OPEN = and_(
    or_(campaigns.c.start_time.is_(None), campaigns.c.start_time <= func.now()),
    or_(campaigns.c.end_time.is_(None), campaigns.c.end_time > func.now()),
)
_TOPPED_UP = (
    select(campaigns.c.id)
    .where(campaigns.c.waitlist_top_up > 0, _NOW_OPEN)
    .order_by(campaigns.c.create_time, campaigns.c.id)
)
# A campaign's waitlist invitations out: codes its releases mailed that are active, not past
# their time, and hold no use (a hold that lapses puts its code out again).
_invitations_out = (
    select(func.count())
    .select_from(
        waitlist_releases.join(
            waitlist, and_(waitlist.c.release_id == waitlist_releases.c.id, waitlist.c.state == int(EntryState.INVITED))
        ).join(codes, codes.c.id == waitlist.c.code_id)
    )
    .where(
        waitlist_releases.c.campaign_id == campaigns.c.id,
        codes.c.state == int(CodeState.ACTIVE),
        or_(codes.c.expire_time.is_(None), codes.c.expire_time > func.now()),
        ~exists().where(code_slots.c.code_id == codes.c.id, code_slots.c.taken > 0),
    )
    .scalar_subquery()
)
_TOP_UP_TERMS = select(
    campaigns.c.waitlist_top_up.label("target"),
    (campaigns.c.capacity - SPOTS_TAKEN).label("room"),
    _invitations_out.label("out"),
).where(campaigns.c.id == bindparam("campaign"), campaigns.c.waitlist_top_up > 0, _NOW_OPEN)
_GROWTH = text("""
WITH period AS (SELECT (now() AT TIME ZONE 'UTC')::date - (CAST(:days AS integer) - 1) AS first_day),
days AS (
    SELECT generate_series(first_day, (now() AT TIME ZONE 'UTC')::date, '1 day')::date AS day FROM period
),
joined AS (
    SELECT (create_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM invite.waitlist, period
    WHERE create_time >= first_day::timestamp AT TIME ZONE 'UTC' GROUP BY 1
),
confirmed AS (
    SELECT (confirm_time AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM invite.waitlist, period
    WHERE confirm_time >= first_day::timestamp AT TIME ZONE 'UTC' GROUP BY 1
)
SELECT days.day, coalesce(joined.n, 0) AS joined, coalesce(confirmed.n, 0) AS confirmed
FROM days LEFT JOIN joined USING (day) LEFT JOIN confirmed USING (day)
ORDER BY days.day
""")
