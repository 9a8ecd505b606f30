"""Who invited whom: the confirmed uses of an owner's codes, and theirs, levels down."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy import any_, bindparam, func, literal, null, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from invite_svc.domain import HoldState
from invite_svc.models import codes, holds
from invite_svc.sealing import CodeSealer
from invite_svc.store.records import Owner, ReferralNode
from mesh.db import DriverPool, DriverStatement


@dataclass(frozen=True)
class Joined:
    """Someone who joined through a user's code."""

    hold_id: uuid.UUID
    code: str
    canonical_email: str
    join_time: datetime.datetime


class ReferralStore:
    def __init__(self, engine: AsyncEngine, driver: DriverPool, sealer: CodeSealer) -> None:
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._driver = driver
        self._sealer = sealer

    async def joined_through_codes(self, code_ids: list[uuid.UUID], per_code: int) -> dict[uuid.UUID, list[Joined]]:
        """The confirmed uses of each of `code_ids`, newest first, at most `per_code` each."""
        async with self._driver.connection() as connection:
            rows = await _JOINED_THROUGH_CODES.fetch(connection, codes=code_ids, per_code=per_code)
        joined: dict[uuid.UUID, list[Joined]] = {code_id: [] for code_id in code_ids}
        for row in rows:
            joined[row["code_id"]].append(self._joined(row))
        return joined

    async def joined_through(
        self, user_id: uuid.UUID, limit: int, before: tuple[datetime.datetime, uuid.UUID] | None = None
    ) -> list[Joined]:
        """The confirmed uses of `user_id`'s codes, newest first; keyset-paginated."""
        before_time, before_id = before or (None, None)
        async with self._driver.connection() as connection:
            rows = await _JOINED_THROUGH.fetch(
                connection, owner=user_id, limit=limit, before_time=before_time, before_id=before_id
            )
        return [self._joined(row) for row in rows]

    def _joined(self, row: asyncpg.Record) -> Joined:
        code = self._sealer.unseal(row["code_id"], row["sealed"])
        return Joined(row["id"], code, row["canonical_email"], row["finish_time"])

    async def referral_tree(self, root: Owner, depth: int) -> list[ReferralNode]:
        """Whom `root` invited (confirmed uses of its codes), and whom they invited, `depth` levels down."""
        invited = holds.join(codes, holds.c.code_id == codes.c.id)
        level = (
            select(
                holds.c.user_id,
                holds.c.code_id,
                holds.c.finish_time,
                codes.c.owner_user_id.label("parent"),
                literal(1).label("level"),
            )
            .select_from(invited)
            .where(
                holds.c.state == HoldState.CONFIRMED,
                holds.c.user_id.is_not(None),
                codes.c.owner_user_id == root.user_id if root.user_id else codes.c.owner_admin_id == root.admin_id,
            )
            .cte("tree", recursive=True)
        )
        below = (
            select(
                holds.c.user_id,
                holds.c.code_id,
                holds.c.finish_time,
                codes.c.owner_user_id,
                (level.c.level + 1).label("level"),
            )
            .select_from(invited.join(level, codes.c.owner_user_id == level.c.user_id))
            .where(holds.c.state == HoldState.CONFIRMED, holds.c.user_id.is_not(None), level.c.level < depth)
        )
        tree = level.union_all(below)
        async with self._autocommit.connect() as connection:
            rows = (await connection.execute(select(tree).order_by(tree.c.level, tree.c.finish_time))).all()
        nodes = {row.user_id: ReferralNode(row.user_id, row.code_id, row.finish_time, []) for row in rows}
        roots: list[ReferralNode] = []
        for row in rows:
            parent = nodes.get(row.parent) if row.level > 1 else None
            (parent.children if parent is not None else roots).append(nodes[row.user_id])
        return roots


# On /me with every page view: one statement compiled once, with its keyset start optional.
_before_time = bindparam("before_time", type_=holds.c.finish_time.type, required=False, value=None)
_JOINED_THROUGH = DriverStatement(
    select(holds.c.id, holds.c.code_id, holds.c.canonical_email, holds.c.finish_time, codes.c.sealed)
    .select_from(holds.join(codes, holds.c.code_id == codes.c.id))
    .where(
        codes.c.owner_user_id == bindparam("owner"),
        holds.c.state == HoldState.CONFIRMED,
        or_(
            _before_time.is_(null()),
            tuple_(holds.c.finish_time, holds.c.id)
            < tuple_(_before_time, bindparam("before_id", type_=holds.c.id.type, required=False, value=None)),
        ),
    )
    .order_by(holds.c.finish_time.desc(), holds.c.id.desc())
    .limit(bindparam("limit"))
)

_ranked = (
    select(
        holds.c.id,
        holds.c.code_id,
        holds.c.canonical_email,
        holds.c.finish_time,
        codes.c.sealed,
        func.row_number()
        .over(partition_by=holds.c.code_id, order_by=(holds.c.finish_time.desc(), holds.c.id.desc()))
        .label("rank"),
    )
    .select_from(holds.join(codes, holds.c.code_id == codes.c.id))
    .where(
        holds.c.code_id == any_(bindparam("codes", type_=ARRAY(holds.c.code_id.type))),
        holds.c.state == HoldState.CONFIRMED,
    )
    .subquery()
)
_JOINED_THROUGH_CODES = DriverStatement(
    select(_ranked.c.id, _ranked.c.code_id, _ranked.c.canonical_email, _ranked.c.finish_time, _ranked.c.sealed)
    .where(_ranked.c.rank <= bindparam("per_code"))
    .order_by(_ranked.c.code_id, _ranked.c.rank)
)
