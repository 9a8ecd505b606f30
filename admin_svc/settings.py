"""admin_svc's own settings, `MESH_ADMIN_*`."""

from __future__ import annotations

from pydantic import Field

from mesh.settings import MeshSettings


class AdminSettings(MeshSettings, env_prefix="MESH_ADMIN_"):
    argon2_memory_kib: int = Field(default=19456, ge=19456)
    """argon2id memory per admin password hash (users' parameters by default)"""
    argon2_time_cost: int = Field(default=2, ge=2)
    """argon2id passes"""
    argon2_parallelism: int = Field(default=1, ge=1)
    """argon2id lanes"""
    access_ttl: float = Field(default=900.0, gt=0)
    """seconds an admin access token (ES256 JWT with the role) lives"""
    mfa_ttl: float = Field(default=300.0, gt=0, le=300.0)
    """seconds the MFA token of a sign-in's first step works (at most 5 minutes)"""
    login_failures_per_account: int = Field(default=10, gt=0)
    """failed sign-in steps per admin per window before it is locked (a locked admin hears what a
    wrong password hears)"""
    login_failures_per_client: int = Field(default=100, gt=0)
    """failed sign-in steps per client address per window before `RATE_LIMITED`"""
    login_failure_window: float = Field(default=900.0, gt=0)
    """seconds failed sign-in steps are remembered"""
    emails_per_hour: int = Field(default=100, gt=0)
    """free-form emails each admin may send per hour"""
    signing_key_max_age: float = Field(default=30 * 86400.0, gt=0)
    """seconds before the admin access-token key is rotated (the old one stays published while
    its tokens live)"""
    settle_after: float = Field(default=30.0, gt=0)
    """seconds an audited change may stay without an outcome before the sweep repeats its
    idempotent call to settle it (a process died between the entry and the call)"""
    passkey_rp_id: str = "localhost"
    """the domain admins' passkeys belong to (WebAuthn relying party id): the console's host, such
    as `invites.example.com`"""
    passkey_origins: list[str] = Field(default_factory=lambda: ["http://localhost:8080"])
    """JSON list of origins the console is served at, e.g. `["https://invites.example.com"]`; a
    passkey answer from any other page is refused (`meshctl up`: the edge's own)"""
    jobs_interval: float = Field(default=15.0, gt=0)
    """seconds between admin_svc's sweeps (unsettled audit entries, revoked sessions told again,
    key rotation)"""
