"""Settings every process shares, read from `MESH_*` environment variables.

A service's own settings live in its package (`auth_svc/settings.py` …) under a prefix of its own
(`MESH_AUTH_*` …), and the tooling's in `meshctl/settings.py`; all of them derive from
`MeshSettings`. Each field's docstring is its line in the README's settings table, which
`scripts/settings_table.py` writes and a test keeps current.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def require_scheme(url: str | None, schemes: tuple[str, ...]) -> str | None:
    """`url` if its scheme is one of `schemes`; None for an unset or empty one."""
    if url is None or url == "":
        return None
    scheme = urlsplit(url).scheme
    if scheme not in schemes:
        raise ValueError(f"scheme must be one of {', '.join(schemes)}, not {scheme or 'none'!r}")
    return url


def require_mailed_link(url: str) -> str:
    """`url` if it is an http or https URL with a host: a page mails link to, where a scheme the
    mail templates refuse would fail every such mail later."""
    if require_scheme(url, ("http", "https")) is None or not urlsplit(url).netloc:
        raise ValueError("an http or https URL with a host")
    return url


class MeshSettings(BaseSettings):
    """Settings read from the environment under the prefix a subclass gives (`env_prefix=`)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", use_attribute_docstrings=True)

    @classmethod
    def variable(cls, name: str) -> str:
        """The environment variable of field `name`."""
        alias = cls.model_fields[name].validation_alias
        if isinstance(alias, AliasChoices):
            return next(str(choice) for choice in alias.choices if str(choice).startswith("MESH_"))
        return f"{cls.model_config.get('env_prefix', '')}{name}".upper()

    def environment(self) -> dict[str, str]:
        """The variables that make another process read the settings given here."""
        variables = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict | list):
                value = json.dumps(value)
            elif isinstance(value, bool):
                value = int(value)
            variables[self.variable(name)] = str(value)
        return variables


class Settings(MeshSettings, env_prefix="MESH_"):
    state_dir: Path = Path(".mesh")
    """where `meshctl` keeps data, logs, keys and caught mail"""
    database_url: str | None = None
    """`postgresql://…`; unset, `meshctl` starts an embedded PostgreSQL"""
    redis_url: str | None = None
    """`redis://…`; unset, `meshctl` starts an embedded Redis"""
    redis_cluster: bool = False
    """`1`: `MESH_REDIS_URL` names a node of a Redis Cluster, and every command goes to the node
    that holds its key's slot"""
    smtp_url: str | None = None
    """`smtp://host:port` mail_svc sends through; unset, `meshctl` starts a local sink"""
    chain_rpc_url: str | None = None
    """Ethereum JSON-RPC endpoint chain_svc reads (`http://…`); unset, `meshctl` starts a local
    development chain"""
    otlp_endpoint: str | None = None
    """OTLP/gRPC collector for traces; unset exports nowhere"""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """`DEBUG`, `INFO`, `WARNING`, `ERROR`"""

    host: str = "127.0.0.1"
    """address every listener binds"""
    grpc_port: int = Field(default=0, ge=0, le=65535)
    """a service's gRPC port (`0`: any free port; `meshctl` assigns them)"""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """a service's Prometheus port (`0`: any free port)"""

    kek: SecretStr | None = None
    """base64url of 32 bytes: the key-encryption key of the private signing keys; unset, `meshctl`
    keeps one in `<state>/kek` (0600) and warns"""
    kek_file: Path | None = None
    """a file holding `MESH_KEK` instead (a compose secret, a Kubernetes Secret's volume)"""
    keys_dir: Path | None = None
    """`trust.json` (identity → public keys, signing key) and the encrypted private keys; unset,
    `<state>/keys`; mount it in deployment"""
    clock_skew: float = Field(default=30.0, gt=0)
    """seconds a signed call's timestamp may differ from the callee's clock"""
    signature_flush_interval: float = Field(default=0.002, ge=0, le=0.1)
    """seconds; a busy service gathers the nonce checks of signed calls for at most this long and
    sends them to Redis together (after a quiet spell, at once); `0`: every event-loop turn"""
    trust_reload_interval: float = Field(default=1.0, gt=0)
    """seconds between checks of `trust.json` for changes (rotation needs no restart)"""
    jwks_refresh_interval: float = Field(default=10.0, gt=0)
    """least seconds between key-set fetches when a token names an unknown key id"""
    service_addresses: dict[str, str] = Field(default_factory=dict)
    """JSON `{"auth_svc": "host:port", …}`: where a service finds the others (`meshctl` sets it)"""
    tls: bool = False
    """`1`: mutual TLS on every gRPC listener, client channel and Envoy upstream"""
    certs_dir: Path | None = None
    """the CA and certificates (`meshctl certs` makes dev ones); unset, `<state>/certs`"""

    email_strip_tags: bool = True
    """`1`: `ada+tag@example.com` is the same person as `ada@example.com`, for every domain (dots
    count only for Gmail, which ignores them); `0`: only Gmail's tags are ignored. Identities
    already stored keep their form. auth_svc and invite_svc must agree on it"""

    outbox_interval: float = Field(default=1.0, gt=0)
    """seconds between outbox relay looks when nothing wakes it"""
    outbox_lease: float = Field(default=30.0, gt=0)
    """seconds a relay holds a message before another replica may deliver it"""
    outbox_backoff_base: float = Field(default=1.0, gt=0)
    """seconds; the wait before retry n+1 of a failed delivery is random in 0…min(cap, base·2ⁿ⁻¹)"""
    outbox_backoff_cap: float = Field(default=300.0, gt=0)
    """seconds; the longest of those waits"""
    outbox_linger: float = Field(default=0.05, ge=0, le=5)
    """seconds a relay woken by a commit waits before delivering, so that emails committed close
    together go to mail_svc in one call (`0`: at once)"""

    hash_wait_target: float = Field(default=0.3, gt=0, le=10)
    """seconds a call that hashes a password (registering, signing in) may wait for the hashing
    pool: with the measured time per hash, how many such calls are admitted at once; more are
    refused at once as `OVERLOADED`"""
    cheap_calls_limit: int = Field(default=1000, ge=16)
    """the most calls other than those (checks, refreshes, pages' reads) a process answers at once
    for clients outside the mesh; the adaptive limit starts here and falls while calls slow down,
    and past it calls are refused at once as `OVERLOADED`"""

    grace_period: float = Field(default=10.0, gt=0)
    """seconds a stopping service lets in-flight calls finish"""
    health_interval: float = Field(default=2.0, gt=0)
    """seconds between database/Redis probes behind gRPC health"""
    db_statement_timeout_ms: int = Field(default=5000, gt=0)
    """PostgreSQL `statement_timeout` of every connection"""
    db_pool_size: int = Field(default=10, gt=0)
    """connections in each of a service process's two pools (SQLAlchemy's, and asyncpg's for the
    hottest statements)"""

    @property
    def resolved_keys_dir(self) -> Path:
        return (self.keys_dir or self.state_dir / "keys").absolute()

    @property
    def resolved_certs_dir(self) -> Path:
        return (self.certs_dir or self.state_dir / "certs").absolute()

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str | None) -> str | None:
        return require_scheme(url, ("postgresql", "postgres", "postgresql+asyncpg"))

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        return require_scheme(url, ("redis", "rediss", "unix"))

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, url: str | None) -> str | None:
        return require_scheme(url, ("smtp", "smtps"))

    @field_validator("chain_rpc_url")
    @classmethod
    def _chain_rpc_url(cls, url: str | None) -> str | None:
        return require_scheme(url, ("http", "https"))

    @field_validator("otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, url: str | None) -> str | None:
        return require_scheme(url, ("http", "https"))

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, level: object) -> object:
        return level.upper() if isinstance(level, str) else level
