"""Per-service Alembic migrations against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from mesh.db import asyncpg_url
from mesh.migrate import upgrade_all
from mesh.services import SERVICES, ServiceSpec

REVISION = """
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE TABLE probe (id int PRIMARY KEY)")


def downgrade() -> None:
    op.execute("DROP TABLE probe")
"""


@pytest.fixture
async def connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def test_each_service_gets_its_own_schema_and_version_table(
    migrated_database_url: str, connection: asyncpg.Connection
) -> None:
    for spec in SERVICES:
        version_table = await connection.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'alembic_version'",
            spec.schema,
        )
        assert version_table == 1, spec.schema


async def test_revisions_land_in_the_services_schema_once_even_when_replicas_race(
    database_url: str, connection: asyncpg.Connection, tmp_path: Path
) -> None:
    (tmp_path / "0001_probe.py").write_text(REVISION)
    await connection.execute("DROP SCHEMA IF EXISTS migrate_probe CASCADE")

    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from mesh.migrate import upgrade;"
            "from mesh.services import ServiceSpec;"
            "upgrade(ServiceSpec('probe_svc', 'migrate_probe', 'none', 99), sys.argv[1], Path(sys.argv[2]))",
            database_url,
            str(tmp_path),
        )
        for _ in range(3)
    ]
    assert [await replica.wait() for replica in replicas] == [0, 0, 0]

    assert await connection.fetchval("SELECT to_regclass('migrate_probe.probe') IS NOT NULL")
    assert await connection.fetchval("SELECT version_num FROM migrate_probe.alembic_version") == "0001"
    await connection.execute("DROP SCHEMA migrate_probe CASCADE")


async def _schemas(connection: asyncpg.Connection) -> list[tuple[object, ...]]:
    """Every service's revision, tables, columns and indexes, as the catalog has them."""
    schemas = [spec.schema for spec in SERVICES]
    columns = await connection.fetch(
        "SELECT table_schema, table_name, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = ANY($1::text[]) ORDER BY 1, 2, 3",
        schemas,
    )
    indexes = await connection.fetch(
        "SELECT schemaname, indexname, indexdef FROM pg_indexes WHERE schemaname = ANY($1::text[]) ORDER BY 1, 2",
        schemas,
    )
    versions = [
        (spec.schema, await connection.fetchval(f"SELECT version_num FROM {spec.schema}.alembic_version"))  # noqa: S608
        for spec in SERVICES
    ]
    return [tuple(row) for row in (*columns, *indexes)] + versions


async def test_migrating_again_changes_nothing(migrated_database_url: str, connection: asyncpg.Connection) -> None:
    before = await _schemas(connection)

    await upgrade_all(SERVICES, migrated_database_url)

    assert await _schemas(connection) == before


@pytest.mark.parametrize("spec", [spec for spec in SERVICES if importlib.util.find_spec(f"{spec.name}.models")])
async def test_the_migrated_schema_is_what_models_declare(migrated_database_url: str, spec: ServiceSpec) -> None:
    """A revision that drifts from models.py (or a models.py change without its revision) shows."""
    metadata = importlib.import_module(f"{spec.name}.models").metadata
    engine = create_async_engine(asyncpg_url(migrated_database_url))

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection,
            opts={
                "include_schemas": True,
                "include_name": lambda name, kind, _: kind != "schema" or name == spec.schema,
                "include_object": lambda thing, name, kind, *_: name != "alembic_version",
            },
        )
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()
