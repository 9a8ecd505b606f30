"""Mutual TLS between every process when `MESH_TLS=1`: where each party's certificate and key are
(`meshctl certs` makes dev ones, meshctl.certs), server credentials that require a client
certificate, and client credentials."""

from __future__ import annotations

from pathlib import Path

import grpc

CA_NAME = "ca"


def dns_name(name: str) -> str:
    """The DNS name in `name`'s certificate (DNS names have no underscores)."""
    return name.replace("_", "-")


def cert_path(certs_dir: Path, name: str) -> Path:
    return certs_dir / f"{name}.pem"


def key_path(certs_dir: Path, name: str) -> Path:
    return certs_dir / f"{name}-key.pem"


def server_credentials(certs_dir: Path, name: str) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials(
        [(key_path(certs_dir, name).read_bytes(), cert_path(certs_dir, name).read_bytes())],
        root_certificates=cert_path(certs_dir, CA_NAME).read_bytes(),
        require_client_auth=True,
    )


def channel_credentials(certs_dir: Path, name: str | None) -> grpc.ChannelCredentials:
    """Client credentials trusting the dev CA, presenting `name`'s certificate (none if None)."""
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=cert_path(certs_dir, CA_NAME).read_bytes())
    return grpc.ssl_channel_credentials(
        root_certificates=cert_path(certs_dir, CA_NAME).read_bytes(),
        private_key=key_path(certs_dir, name).read_bytes(),
        certificate_chain=cert_path(certs_dir, name).read_bytes(),
    )
