"""invite_svc's own settings, `MESH_INVITE_*`."""

from __future__ import annotations

from pydantic import Field, field_validator

from mesh.settings import MeshSettings, require_mailed_link


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
    waitlist_url: str = "http://localhost:8080/waitlist"
    """the waitlist's page: mails link to its `/me` (the private token in the fragment, which
    browsers never send to a server), share links are `?ref=<code>` on it"""
    reserve_url: str = "http://localhost:8080/"
    """the page a released invitation links to, to reserve a spot with its code"""
    waitlist_places_per_referral: int = Field(default=5, ge=0, le=1000)
    """places a counted referral moves its referrer up"""
    waitlist_referral_cap: int = Field(default=10, ge=0, le=1000)
    """most referrals that count for one person"""
    waitlist_disposable_domains: list[str] = Field(default_factory=list)
    """email domains (JSON list) whose referrals never count, besides the list of the
    `disposable-email-domains` package"""
    waitlist_same_client_window: float = Field(default=86400.0, ge=0)
    """seconds within which a second referral from one client address does not count"""
    waitlist_joins_per_hour: int = Field(default=20, gt=0)
    """waitlist joins per client address per hour"""
    waitlist_mails_per_hour: int = Field(default=3, gt=0)
    """waitlist mails per email per hour; over it, the same answer and no mail"""
    waitlist_catch_up_interval: float = Field(default=5.0, gt=0)
    """seconds between catch-ups of the places index in Redis with PostgreSQL"""
    waitlist_top_up_interval: float = Field(default=30.0, gt=0)
    """seconds between top-ups of the campaigns that keep waitlist invitations out"""

    _mailed_links = field_validator("waitlist_url", "reserve_url")(require_mailed_link)
