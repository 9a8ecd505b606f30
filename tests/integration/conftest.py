from __future__ import annotations

from collections.abc import Iterator

import asyncpg
import pytest

from mesh.migrate import upgrade_all
from mesh.services import SERVICES
from tests.integration.mail_svc.relay import ScriptedRelay


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    await upgrade_all(SERVICES, database_url)
    return database_url


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    relay = ScriptedRelay()
    relay.start()
    yield relay
    relay.stop()


async def fetchval(database_url: str, query: str, *args: object) -> object:
    """One value from a query on a connection of its own, for looking at what services wrote."""
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()
