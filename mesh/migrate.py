"""Runs each service's Alembic revisions against its own schema."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from mesh.services import ServiceSpec

_ENVIRONMENT = Path(__file__).parent / "alembic"


def alembic_config(spec: ServiceSpec, database_url: str, versions: Path | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_ENVIRONMENT))
    config.set_main_option("version_locations", str(versions or spec.migrations_dir))
    config.set_main_option("path_separator", "os")
    config.attributes["schema"] = spec.schema
    config.attributes["database_url"] = database_url
    return config


def upgrade(spec: ServiceSpec, database_url: str, versions: Path | None = None) -> None:
    """Brings the service's schema to its newest revision; safe to run from many replicas."""
    command.upgrade(alembic_config(spec, database_url, versions), "head")


async def upgrade_all(specs: tuple[ServiceSpec, ...], database_url: str) -> None:
    # env.py runs its own event loop, so each upgrade gets a thread of its own.
    for spec in specs:
        await asyncio.to_thread(upgrade, spec, database_url)
