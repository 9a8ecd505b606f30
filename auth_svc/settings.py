"""auth_svc's own settings, `MESH_AUTH_*`."""

from __future__ import annotations

from pydantic import Field, field_validator

from mesh.settings import MeshSettings, require_mailed_link


class AuthSettings(MeshSettings, env_prefix="MESH_AUTH_"):
    argon2_memory_kib: int = Field(default=19456, ge=19456)
    """argon2id memory per password hash (at least OWASP's 19 MiB); raising it rehashes at the
    next sign-in"""
    argon2_time_cost: int = Field(default=2, ge=2)
    """argon2id passes (at least 2)"""
    argon2_parallelism: int = Field(default=1, ge=1)
    """argon2id lanes"""
    access_ttl: float = Field(default=900.0, gt=0)
    """seconds an access token (ES256 JWT) lives"""
    refresh_ttl: float = Field(default=30 * 86400.0, gt=0)
    """seconds a refresh token lives (30 days)"""
    verification_ttl: float = Field(default=900.0, gt=0)
    """seconds a mailed verification code works"""
    verification_attempts: int = Field(default=5, ge=1)
    """wrong tries that use a verification code up"""
    reset_ttl: float = Field(default=1800.0, gt=0)
    """seconds a password reset link works"""
    reset_url: str = "http://localhost:8080/reset-password"
    """page the reset mail links to; the token follows in the fragment (`#token=…`), which
    browsers never send to a server"""
    sign_in_url: str = "http://localhost:8080/sign-in"
    """page the duplicate-registration notice links to"""
    registrations_per_hour: int = Field(default=60, gt=0)
    """registrations, resends and reset requests per client address per hour"""
    emails_per_hour: int = Field(default=5, gt=0)
    """mails (verification, notice, reset) per address per hour; over it, the same answer and no
    mail"""
    login_failures_per_account: int = Field(default=10, gt=0)
    """failed sign-ins per account per window before `RATE_LIMITED` (from the third, each waits
    longer)"""
    login_failures_per_client: int = Field(default=100, gt=0)
    """failed sign-ins per client address per window before `RATE_LIMITED`"""
    login_failure_window: float = Field(default=900.0, gt=0)
    """seconds failed sign-ins are remembered"""
    signing_key_max_age: float = Field(default=30 * 86400.0, gt=0)
    """seconds before the access-token key is rotated (the old one stays published while its
    tokens live)"""
    jobs_interval: float = Field(default=30.0, gt=0)
    """seconds between auth_svc's sweeps (lapsed registrations, spent tokens, delivered outbox
    rows, key rotation)"""

    _mailed_links = field_validator("reset_url", "sign_in_url")(require_mailed_link)
