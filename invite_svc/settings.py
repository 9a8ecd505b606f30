"""invite_svc's own settings, `MESH_INVITE_*`."""

from __future__ import annotations

from pydantic import Field

from mesh.settings import MeshSettings


class InviteSettings(MeshSettings, env_prefix="MESH_INVITE_"):
    hold_ttl: float = Field(default=1800.0, gt=0)
    """seconds a registration holds a code use before it returns"""
    expiry_interval: float = Field(default=5.0, gt=0)
    """seconds between sweeps that expire lapsed holds and codes"""
    checks_per_minute: int = Field(default=30, gt=0)
    """`CheckCode` budget per client address (typos cost nothing)"""
    default_quota: int = Field(default=3, ge=0, le=100)
    """codes of their own a newly active user gets to share when the code they redeemed has no
    campaign, or a campaign without a quota of its own"""
    default_uses: int = Field(default=1, ge=0)
    """uses of each of those codes (`0`: unlimited)"""
