from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from mesh.clients import EDGE_TOKEN_HEADER, EXTERNAL_ADDRESS, edge_token
from mesh.keys import load_kek
from mesh.migrate import upgrade_all
from mesh.redis import create_redis
from mesh.redis_pipe import RedisPipe
from mesh.services import SERVICES
from mesh.settings import Settings
from tests.integration.mail_svc.relay import ScriptedRelay


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    await upgrade_all(SERVICES, database_url)
    return database_url


@pytest.fixture
async def pipe(redis_url: str) -> AsyncIterator[RedisPipe]:
    client = create_redis(Settings(redis_url=redis_url))
    pipe = RedisPipe(client)
    try:
        yield pipe
    finally:
        await pipe.close()
        await client.aclose()


@pytest.fixture
def relay() -> Iterator[ScriptedRelay]:
    relay = ScriptedRelay()
    relay.start()
    yield relay
    relay.stop()


def from_the_edge(settings: Settings, client: str) -> tuple[tuple[str, str], ...]:
    """The metadata of a call Envoy passes on from `client` (mesh.clients)."""
    return ((EXTERNAL_ADDRESS, client), (EDGE_TOKEN_HEADER, edge_token(load_kek(settings))))


async def fetchval(database_url: str, query: str, *args: object) -> object:
    """One value from a query on a connection of its own, for looking at what services wrote."""
    connection = await asyncpg.connect(database_url)
    try:
        return await connection.fetchval(query, *args)
    finally:
        await connection.close()
