"""Every service connection, through the engine or straight from the driver, carries its schema
and the statement timeout; driver statements bind by name."""

import asyncpg
import pytest
from sqlalchemy import Integer, bindparam, func, literal_column, select, text

from mesh.db import DriverPool, DriverStatement, create_engine
from mesh.settings import Settings


def _settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, db_statement_timeout_ms=1234)


SESSION = text("SELECT current_setting('statement_timeout'), current_schema(), current_setting('application_name')")


async def test_connections_use_the_services_schema_and_statement_timeout(migrated_database_url: str) -> None:
    engine = create_engine(_settings(migrated_database_url), "invite", "invite_svc")
    try:
        async with engine.connect() as connection:
            session = tuple((await connection.execute(SESSION)).one())
    finally:
        await engine.dispose()

    assert session == ("1234ms", "invite", "invite_svc")


async def test_driver_connections_use_the_same_session_settings(migrated_database_url: str) -> None:
    driver = DriverPool(_settings(migrated_database_url), "invite", "invite_svc")
    try:
        async with driver.connection() as connection:
            session = tuple(await DriverStatement(SESSION).fetchrow(connection) or ())
    finally:
        await driver.close()

    assert session == ("1234ms", "invite", "invite_svc")


async def test_a_driver_statement_binds_by_name_and_keeps_the_values_core_bound(migrated_database_url: str) -> None:
    statement = DriverStatement(
        select(
            (bindparam("b", type_=Integer) - bindparam("a", type_=Integer)).label("difference"),
            func.coalesce(literal_column("NULL::int"), 7).label("fallback"),
        )
    )
    driver = DriverPool(_settings(migrated_database_url), "invite", "tests")
    try:
        async with driver.connection() as connection:
            row = await statement.fetchrow(connection, a=2, b=5)
            with pytest.raises(TypeError, match="missing: b"):
                await statement.fetchrow(connection, a=2)
            with pytest.raises(asyncpg.QueryCanceledError):
                await DriverStatement(text("SELECT pg_sleep(:seconds)")).fetchrow(connection, seconds=3)
    finally:
        await driver.close()

    assert row is not None and (row["difference"], row["fallback"]) == (3, 7)


async def test_a_driver_connection_comes_back_from_the_pool_without_an_open_transaction(
    migrated_database_url: str,
) -> None:
    driver = DriverPool(_settings(migrated_database_url).model_copy(update={"db_pool_size": 1}), "invite", "t")
    try:
        async with driver.connection() as connection:
            await connection.execute("BEGIN")
            await connection.execute("SET LOCAL statement_timeout = 42")
            first = connection.get_server_pid()
        async with driver.connection() as connection:
            again = (connection.get_server_pid(), connection.is_in_transaction())
            timeout = await connection.fetchval("SELECT current_setting('statement_timeout')")
    finally:
        await driver.close()

    assert again == (first, False)
    assert timeout == "1234ms"
