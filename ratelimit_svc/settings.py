"""ratelimit_svc's own settings, `MESH_RATELIMIT_*`."""

from __future__ import annotations

from pydantic import Field

from mesh.settings import MeshSettings


class RateLimitSettings(MeshSettings, env_prefix="MESH_RATELIMIT_"):
    rules_cache: float = Field(default=5.0, ge=0)
    """seconds ratelimit_svc keeps the rules it read; an edit reaches every replica within that"""
