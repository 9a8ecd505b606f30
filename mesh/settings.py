"""Settings of every process, read from `MESH_*` environment variables.

The README's settings table is the user-facing copy of this class; keep them together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _require_scheme(url: str | None, schemes: tuple[str, ...]) -> str | None:
    if url is None or url == "":
        return None
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}, not {scheme or 'none'!r}")
    return url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MESH_", frozen=True, extra="ignore")

    state_dir: Path = Path(".mesh")
    database_url: str | None = None
    redis_url: str | None = None
    smtp_url: str | None = None
    otlp_endpoint: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    metrics_port: int = Field(default=0, ge=0, le=65535)
    edge_port: int = Field(default=8080, ge=1, le=65535)
    edge_admin_port: int = Field(default=9901, ge=1, le=65535)
    port_base: int = Field(default=50050, ge=1024, le=65000)
    edge_cors_origins: list[str] = Field(default_factory=list)
    edge_max_request_bytes: int = Field(default=64 * 1024, ge=1024)
    edge_max_request_headers_kb: int = Field(default=16, ge=1, le=8192)
    edge_backstop_per_second: int = Field(default=2000, gt=0)
    edge_headers_timeout: float = Field(default=5.0, gt=0)
    edge_request_timeout: float = Field(default=5.0, gt=0)
    edge_max_connections: int = Field(default=10_000, gt=0)
    edge_max_heap_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024 * 1024)

    kek: SecretStr | None = None
    keys_dir: Path | None = None
    clock_skew: float = Field(default=30.0, gt=0)
    signature_helper: bool = True
    signature_flush_interval: float = Field(default=0.002, ge=0, le=0.1)
    trust_reload_interval: float = Field(default=1.0, gt=0)
    jwks_refresh_interval: float = Field(default=10.0, gt=0)
    service_addresses: dict[str, str] = Field(default_factory=dict)
    tls: bool = False
    certs_dir: Path | None = None

    invite_hold_ttl: float = Field(default=1800.0, gt=0)
    invite_expiry_interval: float = Field(default=5.0, gt=0)
    invite_checks_per_minute: int = Field(default=30, gt=0)
    invite_default_quota: int = Field(default=3, ge=0, le=100)
    invite_default_uses: int = Field(default=1, ge=0)

    email_strip_tags: bool = True

    mail_from: str = "invitemesh <no-reply@invitemesh.localhost>"
    mail_stream: str = Field(default="mail", pattern=r"^[A-Za-z0-9_.:-]{1,100}$")
    mail_senders: int = Field(default=4, ge=0, le=256)
    mail_max_attempts: int = Field(default=3, ge=1)
    mail_backoff_base: float = Field(default=2.0, gt=0)
    mail_backoff_cap: float = Field(default=300.0, gt=0)
    mail_smtp_timeout: float = Field(default=30.0, gt=0)
    mail_reclaim_idle: float = Field(default=120.0, gt=0)
    mail_sweep_interval: float = Field(default=5.0, gt=0)
    mail_sweep_after: float = Field(default=30.0, gt=0)
    mail_breaker_failures: int = Field(default=5, ge=1)
    mail_breaker_reset: float = Field(default=30.0, gt=0)
    mail_webhook_secret: SecretStr | None = None

    auth_argon2_memory_kib: int = Field(default=19456, ge=19456)
    auth_argon2_time_cost: int = Field(default=2, ge=2)
    auth_argon2_parallelism: int = Field(default=1, ge=1)
    auth_access_ttl: float = Field(default=900.0, gt=0)
    auth_refresh_ttl: float = Field(default=30 * 86400.0, gt=0)
    auth_verification_ttl: float = Field(default=900.0, gt=0)
    auth_verification_attempts: int = Field(default=5, ge=1)
    auth_reset_ttl: float = Field(default=1800.0, gt=0)
    auth_reset_url: str = "http://localhost:8080/reset-password"
    auth_sign_in_url: str = "http://localhost:8080/sign-in"
    auth_registrations_per_hour: int = Field(default=60, gt=0)
    auth_emails_per_hour: int = Field(default=5, gt=0)
    auth_login_failures_per_account: int = Field(default=10, gt=0)
    auth_login_failures_per_client: int = Field(default=100, gt=0)
    auth_login_failure_window: float = Field(default=900.0, gt=0)
    auth_signing_key_max_age: float = Field(default=30 * 86400.0, gt=0)
    auth_jobs_interval: float = Field(default=30.0, gt=0)

    ratelimit_rules_cache: float = Field(default=5.0, ge=0)

    outbox_interval: float = Field(default=1.0, gt=0)
    outbox_lease: float = Field(default=30.0, gt=0)
    outbox_backoff_base: float = Field(default=1.0, gt=0)
    outbox_backoff_cap: float = Field(default=300.0, gt=0)
    outbox_linger: float = Field(default=0.05, ge=0, le=5)

    grace_period: float = Field(default=10.0, gt=0)
    health_interval: float = Field(default=2.0, gt=0)
    db_statement_timeout_ms: int = Field(default=5000, gt=0)
    db_pool_size: int = Field(default=10, gt=0)

    def environment(self) -> dict[str, str]:
        """The `MESH_*` variables that make another process read the settings given here."""
        variables = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = int(value)
            variables[f"MESH_{name.upper()}"] = str(value)
        return variables

    @property
    def resolved_keys_dir(self) -> Path:
        return (self.keys_dir or self.state_dir / "keys").absolute()

    @property
    def resolved_certs_dir(self) -> Path:
        return (self.certs_dir or self.state_dir / "certs").absolute()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        return _require_scheme(url, ("postgresql", "postgres", "postgresql+asyncpg"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return _require_scheme(url, ("redis", "rediss", "unix"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, url: str | None) -> str | None:
        return _require_scheme(url, ("smtp", "smtps"))

    @field_validator("auth_reset_url", "auth_sign_in_url")
    @classmethod
    def _page_url(cls, url: str) -> str:
        # Mailed as links: a scheme the mail templates refuse would fail every such mail later.
        if _require_scheme(url, ("http", "https")) is None or not urlsplit(url).netloc:
            raise ValueError("an http or https URL with a host")
        return url

    @field_validator("edge_cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
                raise ValueError(f"an origin is a scheme and a host, such as https://app.example.com, not {origin!r}")
        return origins

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, url: str | None) -> str | None:
        return _require_scheme(url, ("http", "https"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level
