"""A dev CA and one certificate per party for mutual TLS (`meshctl certs`, and `meshctl up` with
`MESH_TLS=1`): each certificate names its party (CN, and a DNS name the services check) and is
good for a year."""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mesh.tls import CA_NAME, cert_path, dns_name, key_path

_VALIDITY = datetime.timedelta(days=365)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )


def _subject(name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "invitemesh dev"), x509.NameAttribute(NameOID.COMMON_NAME, name)]
    )


def _load_ca(certs_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert = x509.load_pem_x509_certificate(cert_path(certs_dir, CA_NAME).read_bytes())
    ca_key = serialization.load_pem_private_key(key_path(certs_dir, CA_NAME).read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    return ca_cert, ca_key


def _make_ca(certs_dir: Path, now: datetime.datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject("invitemesh dev CA"))
        .issuer_name(_subject("invitemesh dev CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write_key(key_path(certs_dir, CA_NAME), key)
    cert_path(certs_dir, CA_NAME).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_leaf(certs_dir: Path, name: str, now: datetime.datetime) -> None:
    ca_cert, ca_key = _load_ca(certs_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    names = [
        x509.DNSName(dns_name(name)),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_subject(name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key_path(certs_dir, name), key)
    cert_path(certs_dir, name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def make_dev_certs(certs_dir: Path, names: Iterable[str]) -> list[str]:
    """A CA and a certificate for each name that lacks one; answers the names that got one."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    if not cert_path(certs_dir, CA_NAME).exists():
        _make_ca(certs_dir, now)
    made = [name for name in names if not cert_path(certs_dir, name).exists()]
    for name in made:
        _make_leaf(certs_dir, name, now)
    return made
