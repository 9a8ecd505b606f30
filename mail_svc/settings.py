"""mail_svc's own settings, `MESH_MAIL_*`."""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr

from mesh.settings import MeshSettings


class MailSettings(MeshSettings, env_prefix="MESH_MAIL_"):
    sender: str = Field(
        default="invitemesh <no-reply@invitemesh.localhost>", validation_alias=AliasChoices("sender", "MESH_MAIL_FROM")
    )
    """sender of every email (its domain also names the Message-IDs)"""
    stream: str = Field(default="mail", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    """Redis stream of emails to send (`<name>.dead`: the ones given up on)"""
    senders: int = Field(default=4, ge=0, le=256)
    """concurrent senders per mail process (`0`: mail_svc only logs and queues)"""
    max_attempts: int = Field(default=3, ge=1)
    """attempts before an email the relay keeps refusing (4xx) is FAILED"""
    backoff_base: float = Field(default=2.0, gt=0)
    """seconds; the wait before attempt n+1 is random in 0…min(cap, base·2ⁿ⁻¹)"""
    backoff_cap: float = Field(default=300.0, gt=0)
    """seconds; the longest of those waits"""
    smtp_timeout: float = Field(default=30.0, gt=0)
    """seconds any SMTP step may take"""
    reclaim_idle: float = Field(default=120.0, gt=0)
    """seconds after which a stream entry a sender left alone is taken by another (XAUTOCLAIM)"""
    sweep_interval: float = Field(default=5.0, gt=0)
    """seconds between sweeps of the email log"""
    sweep_after: float = Field(default=30.0, gt=0)
    """seconds after which a pending email still not sent is enqueued again"""
    breaker_failures: int = Field(default=5, ge=1)
    """relay failures in a row that open the SMTP breaker"""
    breaker_reset: float = Field(default=30.0, gt=0)
    """seconds the SMTP breaker stays open before a trial"""
    webhook_secret: SecretStr | None = None
    """HMAC secret of the mail provider's delivery events; unset, they are refused"""
    listing_total_ttl: float = Field(default=5.0, gt=0)
    """seconds a listing's total count (`ListEmails.total_size`) is kept before it is counted again"""
