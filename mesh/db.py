"""PostgreSQL through SQLAlchemy Core on asyncpg, one schema per service."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from mesh.settings import Settings


def asyncpg_url(url: str) -> str:
    """`postgresql://…` as SQLAlchemy's asyncpg dialect wants it."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg"))


def create_engine(settings: Settings, schema: str, application_name: str) -> AsyncEngine:
    if not settings.database_url:
        raise RuntimeError("MESH_DATABASE_URL is not set")
    return create_async_engine(
        asyncpg_url(settings.database_url),
        pool_size=settings.db_pool_size,
        # No pre-ping: it costs round trips on every checkout. A connection a database restart
        # broke fails one statement and is replaced; health reports the database meanwhile.
        connect_args={
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "search_path": schema,
                "application_name": application_name,
            },
            "timeout": 5,
        },
    )


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
