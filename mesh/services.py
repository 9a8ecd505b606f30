"""The catalogue of invitemesh services: names, schemas, contracts, ports."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    """Package name and the caller identity other services see, for example `auth_svc`."""
    schema: str
    """The PostgreSQL schema this service owns; also its Redis key prefix."""
    grpc_service: str
    """Full protobuf name of the service it implements, the name its health is reported under."""
    port_offset: int
    """Its gRPC port under `meshctl up` is `MESH_PORT_BASE + port_offset`."""
    more_grpc_services: tuple[str, ...] = ()
    """Other services its process serves beside `grpc_service`."""

    @property
    def grpc_services(self) -> tuple[str, ...]:
        return (self.grpc_service, *self.more_grpc_services)

    @property
    def redis_prefix(self) -> str:
        return f"{self.schema}:"

    @property
    def migrations_dir(self) -> Path:
        found = importlib.util.find_spec(self.name)
        if found is None or not found.submodule_search_locations:
            raise LookupError(f"service package {self.name} is not importable")
        return Path(next(iter(found.submodule_search_locations))) / "migrations"


AUTH = ServiceSpec("auth_svc", "auth", "invitemesh.auth.v1.AuthService", 1)
INVITE = ServiceSpec("invite_svc", "invite", "invitemesh.invite.v1.InviteService", 2)
MAIL = ServiceSpec("mail_svc", "mail", "invitemesh.mail.v1.MailService", 3)
ADMIN = ServiceSpec("admin_svc", "admin", "invitemesh.admin.v1.AdminService", 4)
CHAIN = ServiceSpec("chain_svc", "chain", "invitemesh.chain.v1.ChainService", 5)

RATELIMIT = ServiceSpec(
    "ratelimit_svc",
    "ratelimit",
    "envoy.service.ratelimit.v3.RateLimitService",
    6,
    more_grpc_services=("invitemesh.ratelimit.v1.RateLimitRuleService",),
)

CONTRACT_SERVICES: tuple[ServiceSpec, ...] = (AUTH, INVITE, MAIL, ADMIN, CHAIN)
"""The services of invitemesh's own contracts (protos/), the ones Envoy transcodes and routes to."""
SERVICES: tuple[ServiceSpec, ...] = (*CONTRACT_SERVICES, RATELIMIT)
"""Every service process of the mesh; ratelimit_svc serves Envoy's own contract (and its rules')."""


def serving(grpc_service: str) -> ServiceSpec:
    """The service whose process serves `grpc_service` (a full protobuf name)."""
    (spec,) = [spec for spec in SERVICES if grpc_service in spec.grpc_services]
    return spec


@dataclass(frozen=True)
class PagesSpec:
    """web_svc: pages over HTTP behind the edge, a client of the others' public and user methods."""

    name: str
    port_offset: int
    """Its HTTP port under `meshctl up` is `MESH_PORT_BASE + port_offset`."""
    health_path: str
    """Answers 200 while it can serve pages (the edge's health checks ask it)."""


WEB = PagesSpec("web_svc", 7, "/healthz")

OPERATOR = "meshctl"
"""The identity operator tooling signs its calls as; contracts name it among a method's callers."""
IDENTITIES: tuple[str, ...] = (*(spec.name for spec in SERVICES), OPERATOR)
"""Everyone who signs calls, each with keys of its own."""
