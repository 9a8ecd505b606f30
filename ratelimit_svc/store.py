"""SQL of the `ratelimit` schema: the rules, read through a short-lived cache so Envoy's calls do
not each cost a query, and an edit reaches every replica within the cache's lifetime."""

from __future__ import annotations

import asyncio
import time

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert as upsert
from sqlalchemy.ext.asyncio import AsyncEngine

from ratelimit_svc.domain import Rule, Unit, with_defaults
from ratelimit_svc.models import rules


class RuleStore:
    def __init__(self, engine: AsyncEngine, cache_seconds: float) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._cached: dict[str, Rule] | None = None
        self._read_at = float("-inf")
        self._reading = asyncio.Lock()

    async def in_force(self) -> dict[str, Rule]:
        """The rules in force (stored ones over the defaults), at most `cache_seconds` old."""
        if self._cached is None or time.monotonic() - self._read_at > self._cache_seconds:
            async with self._reading:
                if self._cached is None or time.monotonic() - self._read_at > self._cache_seconds:
                    self._cached = with_defaults({rule.route: rule for rule in await self.stored()})
                    self._read_at = time.monotonic()
        return self._cached

    async def stored(self) -> list[Rule]:
        async with self._engine.connect() as connection:
            rows = await connection.execute(select(rules).order_by(rules.c.route))
            return [Rule(row.route, row.requests_per_unit, Unit(row.unit), row.fail_closed) for row in rows]

    async def put(self, rule: Rule) -> None:
        values = {
            "requests_per_unit": rule.requests_per_unit,
            "unit": int(rule.unit),
            "fail_closed": rule.fail_closed,
        }
        statement = upsert(rules).values(route=rule.route, **values)
        async with self._engine.begin() as connection:
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[rules.c.route], set_={**values, "update_time": func.now()}
                )
            )
        self._forget()

    async def delete(self, route: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(rules).where(rules.c.route == route))
        self._forget()

    def _forget(self) -> None:
        # This replica sees its own edit at once; the others within cache_seconds.
        self._cached = None
