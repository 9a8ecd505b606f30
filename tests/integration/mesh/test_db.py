"""Every service connection carries its schema and the statement timeout."""

from sqlalchemy import text

from mesh.db import create_engine
from mesh.settings import Settings


async def test_connections_use_the_services_schema_and_statement_timeout(migrated_database_url: str) -> None:
    engine = create_engine(
        Settings(database_url=migrated_database_url, db_statement_timeout_ms=1234), "invite", "invite_svc"
    )
    try:
        async with engine.connect() as connection:
            timeout = await connection.scalar(text("SHOW statement_timeout"))
            schema = await connection.scalar(text("SELECT current_schema()"))
            name = await connection.scalar(text("SHOW application_name"))
    finally:
        await engine.dispose()

    assert (timeout, schema, name) == ("1234ms", "invite", "invite_svc")
