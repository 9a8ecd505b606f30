"""Alembic environment shared by every service: the revisions live in the service's own
`migrations/` package; the schema and version table are the service's own."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mesh.db import asyncpg_url

config = context.config
schema: str = config.attributes["schema"]
database_url: str = config.attributes["database_url"]


def _migrate(connection: Connection) -> None:
    # Replicas starting together must not migrate the same schema at once.
    connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:schema))"), {"schema": schema})
    connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        version_table_schema=schema,
        transaction_per_migration=False,
    )
    context.run_migrations()


async def _run() -> None:
    engine = create_async_engine(asyncpg_url(database_url))
    try:
        async with engine.begin() as connection:
            await connection.execute(text(f'SET LOCAL search_path TO "{schema}"'))
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


asyncio.run(_run())
