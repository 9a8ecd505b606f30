"""PostgreSQL through SQLAlchemy Core on asyncpg, one schema per service.

Statements are written with SQLAlchemy Core and run through the engine, except the few that run
once per request on a service's busiest path. SQLAlchemy's async layer spends about 250 µs of
event-loop CPU per statement on this machine (a greenlet for each checkout, execute and return)
on top of asyncpg's ~140 µs; those statements are still written with Core, compiled once for
asyncpg (`DriverStatement`) and run on connections of a `DriverPool`, straight from the driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from mesh.settings import Settings

_CONNECT_TIMEOUT = 5


def asyncpg_url(url: str) -> str:
    """`postgresql://…` as SQLAlchemy's asyncpg dialect wants it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def _server_settings(settings: Settings, schema: str, application_name: str) -> dict[str, str]:
    return {
        "statement_timeout": str(settings.db_statement_timeout_ms),
        "search_path": schema,
        "application_name": application_name,
    }


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise RuntimeError("MESH_DATABASE_URL is not set")
    return settings.database_url


def create_engine(settings: Settings, schema: str, application_name: str) -> AsyncEngine:
    return create_async_engine(
        asyncpg_url(_database_url(settings)),
        pool_size=settings.db_pool_size,
        # No pre-ping: it costs round trips on every checkout. A connection a database restart
        # broke fails one statement and is replaced; health reports the database meanwhile.
        connect_args={
            "server_settings": _server_settings(settings, schema, application_name),
            "timeout": _CONNECT_TIMEOUT,
        },
    )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


class DriverPool:
    """asyncpg connections with the same settings as the engine's, opened on first use."""

    def __init__(self, settings: Settings, schema: str, application_name: str) -> None:
        self._url = _database_url(settings)
        self._size = settings.db_pool_size
        self._server_settings = _server_settings(settings, schema, application_name)
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        pool = self._pool or await self._open()
        async with pool.acquire() as connection:
            yield connection

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=self._size,
                    server_settings=self._server_settings,
                    timeout=_CONNECT_TIMEOUT,
                    reset=_end_open_transaction,
                )
            return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()


async def _end_open_transaction(connection: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool. asyncpg's default reset is a whole
    statement (RESET ALL, UNLISTEN *, CLOSE ALL, advisory unlocks) on every release, a round trip
    per call on the busiest paths; driver statements change no session state, so only a
    transaction left open (a caller interrupted inside one) needs undoing."""
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


_DIALECT = PGDialect_asyncpg(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


class DriverStatement:
    """A Core statement compiled once for asyncpg: `$n` placeholders, arguments bound by name.

    Values go to asyncpg as they are (no SQLAlchemy type processing), so the statement's
    parameters must be types asyncpg encodes itself (UUID, str, int, bytes, datetimes, …)."""

    def __init__(self, statement: ClauseElement) -> None:
        compiled = statement.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        self.sql = str(compiled)
        self._names = tuple(compiled.positiontup or ())
        # Values Core bound itself (a literal such as COALESCE's default) come with the statement.
        self._bound = compiled.params
        self._required = frozenset(name for name in self._names if compiled.binds[name].required)

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        if missing := self._required - values.keys():
            raise TypeError(f"statement arguments missing: {', '.join(sorted(missing))}")
        return [values[name] if name in values else self._bound[name] for name in self._names]

    async def fetchrow(self, connection: asyncpg.Connection, **values: Any) -> asyncpg.Record | None:
        return await connection.fetchrow(self.sql, *self.arguments(values))

    async def fetchval(self, connection: asyncpg.Connection, **values: Any) -> Any:
        return await connection.fetchval(self.sql, *self.arguments(values))

    async def fetch(self, connection: asyncpg.Connection, **values: Any) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await connection.fetch(self.sql, *self.arguments(values))
        return rows

    async def fetchmany(
        self, connection: asyncpg.Connection, rows: Sequence[Mapping[str, Any]]
    ) -> list[asyncpg.Record]:
        """Runs the statement once per `rows` entry, in one round trip and one transaction;
        answers every execution's rows together."""
        records: list[asyncpg.Record] = await connection.fetchmany(self.sql, [self.arguments(row) for row in rows])
        return records

    async def execute(self, connection: asyncpg.Connection, **values: Any) -> str:
        """Runs the statement; answers its command tag (`UPDATE 3`)."""
        tag: str = await connection.execute(self.sql, *self.arguments(values))
        return tag
