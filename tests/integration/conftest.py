from __future__ import annotations

import pytest

from mesh.migrate import upgrade_all
from mesh.services import SERVICES


@pytest.fixture(scope="session")
async def migrated_database_url(database_url: str) -> str:
    await upgrade_all(SERVICES, database_url)
    return database_url
