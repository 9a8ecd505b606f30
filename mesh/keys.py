"""Service identity keys: one ECDSA P-256 key pair per service, private halves encrypted at rest
with AES-256-GCM under a key-encryption key (KEK), public halves in a trust file that maps each
service to every key it may currently sign with.

Layout of the keys dir:
    trust.json              {"services": {name: {"signing_kid": kid, "keys": {kid: public PEM},
                                             "retired": {kid: public PEM}}}}
    <service>/<kid>.pem     the encrypted private key

Rotation (tested in tests/integration/mesh/test_rotation.py):
    1. `meshctl keys add SERVICE`          new key trusted everywhere, not yet used to sign
    2. wait MESH_TRUST_RELOAD_INTERVAL      every verifier has reloaded the trust file
    3. `meshctl keys activate SERVICE KID`  the service signs with the new key
    4. wait MESH_TRUST_RELOAD_INTERVAL      every signer has switched
    5. `meshctl keys retire SERVICE OLD`    the old key is trusted no more (its public half is kept
                                            to check what it signed before: audit entries)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mesh.settings import Settings

log = structlog.get_logger("mesh.keys")

_PEM_LABEL = "INVITEMESH ENCRYPTED PRIVATE KEY"
_NONCE_BYTES = 12


class KeyringError(Exception):
    """A key or the trust file is missing, malformed, or does not decrypt."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """A short, stable id of a public key (its SubjectPublicKeyInfo digest)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())[:16]


def public_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    return public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_kek(settings: Settings, create: bool = False) -> bytes:
    """`MESH_KEK` (base64url of 32 bytes) or the content of `MESH_KEK_FILE`, or else the dev KEK
    kept in the state dir (made, with a warning, only when `create`: services never invent a KEK
    they could not share)."""
    given = settings.kek.get_secret_value() if settings.kek is not None else None
    if given is None and settings.kek_file is not None:
        try:
            given = settings.kek_file.read_text().strip()
        except OSError as error:
            raise KeyringError(f"MESH_KEK_FILE {settings.kek_file}: {error.strerror}") from None
    if given is not None:
        kek = _unb64(given)
        if len(kek) != 32:
            raise KeyringError("MESH_KEK (or MESH_KEK_FILE's content) must be 32 bytes, base64url-encoded")
        return kek
    path = settings.state_dir.absolute() / "kek"
    if not path.exists() and not create:
        raise KeyringError(f"no MESH_KEK and no development KEK at {path}; run `meshctl keys init`")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(_b64(secrets.token_bytes(32)))
        log.warning("generated a development key-encryption key; set MESH_KEK in deployment", path=str(path))
    return _unb64(path.read_text().strip())


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, kek: bytes, service: str, kid: str) -> str:
    plain = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    nonce = secrets.token_bytes(_NONCE_BYTES)
    sealed = AESGCM(kek).encrypt(nonce, plain, f"{service}:{kid}".encode())
    body = base64.encodebytes(nonce + sealed).decode()
    return f"-----BEGIN {_PEM_LABEL}-----\n{body}-----END {_PEM_LABEL}-----\n"


def decrypt_private_key(text: str, kek: bytes, service: str, kid: str) -> ec.EllipticCurvePrivateKey:
    try:
        body = text.split(f"-----BEGIN {_PEM_LABEL}-----", 1)[1].split(f"-----END {_PEM_LABEL}-----", 1)[0]
        raw = base64.decodebytes(body.encode())
        plain = AESGCM(kek).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], f"{service}:{kid}".encode())
        key = serialization.load_pem_private_key(plain, password=None)
    except Exception as error:  # any failure here means the same thing to the operator
        raise KeyringError(f"the private key {service}/{kid} does not decrypt with this KEK") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyringError(f"the private key {service}/{kid} is not an EC key")
    return key


@dataclass
class TrustFile:
    """The trust file's content: per service, its public keys and which one it signs with."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> TrustFile:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls()
        except ValueError as error:
            raise KeyringError(f"{path} is not valid JSON") from error
        return cls(services=dict(data.get("services", {})))

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"services": self.services}, indent=2, sort_keys=True))
        partial.replace(path)

    def public_keys(self, service: str) -> dict[str, str]:
        return dict(self.services.get(service, {}).get("keys", {}))

    def signing_kid(self, service: str) -> str | None:
        kid = self.services.get(service, {}).get("signing_kid")
        return str(kid) if kid else None

    def signature_keys(self, service: str) -> dict[str, ec.EllipticCurvePublicKey]:
        """Every public key `service` ever signed with, retired ones too: what checks a record it
        signed long ago (an audit entry), never a call."""
        entry = self.services.get(service, {})
        return {kid: _load_public(pem) for kid, pem in {**entry.get("retired", {}), **entry.get("keys", {})}.items()}


class Keystore:
    """Reads and changes the keys dir; `meshctl keys` and `meshctl up` use it."""

    def __init__(self, keys_dir: Path, kek: bytes) -> None:
        self.keys_dir = keys_dir
        self.kek = kek
        self.trust_path = keys_dir / "trust.json"

    def add(self, service: str) -> str:
        """A new key pair for `service`, trusted from now on; answers its kid."""
        private = ec.generate_private_key(ec.SECP256R1())
        kid = key_id(private.public_key())
        directory = self.keys_dir / service
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(encrypt_private_key(private, self.kek, service, kid))
        trust = TrustFile.read(self.trust_path)
        entry = trust.services.setdefault(service, {"keys": {}})
        entry["keys"][kid] = public_pem(private.public_key())
        entry.setdefault("signing_kid", kid)
        trust.write(self.trust_path)
        return kid

    def activate(self, service: str, kid: str) -> None:
        trust = TrustFile.read(self.trust_path)
        if kid not in trust.public_keys(service):
            raise KeyringError(f"{service} has no trusted key {kid}")
        trust.services[service]["signing_kid"] = kid
        trust.write(self.trust_path)

    def retire(self, service: str, kid: str) -> None:
        trust = TrustFile.read(self.trust_path)
        if trust.signing_kid(service) == kid:
            raise KeyringError(f"{kid} is {service}'s signing key; activate another one first")
        pem = trust.services.get(service, {}).get("keys", {}).pop(kid, None)
        if pem is None:
            raise KeyringError(f"{service} has no trusted key {kid}")
        trust.services[service].setdefault("retired", {})[kid] = pem
        trust.write(self.trust_path)
        (self.keys_dir / service / f"{kid}.pem").unlink(missing_ok=True)

    def ensure(self, services: Iterable[str]) -> list[str]:
        """Gives every service without a key one; answers the services that got one."""
        trust = TrustFile.read(self.trust_path)
        missing = [service for service in services if trust.signing_kid(service) is None]
        for service in missing:
            self.add(service)
        return missing

    def signing_key(self, service: str) -> tuple[str, ec.EllipticCurvePrivateKey]:
        kid = TrustFile.read(self.trust_path).signing_kid(service)
        if kid is None:
            raise KeyringError(f"{service} has no signing key in {self.trust_path}; run `meshctl keys init`")
        try:
            text = (self.keys_dir / service / f"{kid}.pem").read_text()
        except FileNotFoundError as error:
            raise KeyringError(f"the private key {service}/{kid} is missing") from error
        return kid, decrypt_private_key(text, self.kek, service, kid)


class TrustStore:
    """The trust file as verifiers and signers see it, re-read when it changes (checked at most
    once per `reload_interval`), so rotation needs no restart."""

    def __init__(self, trust_path: Path, reload_interval: float) -> None:
        self._trust_path = trust_path
        self._reload_interval = reload_interval
        self._checked_at = float("-inf")
        self._stamp: tuple[int, int] | None = None
        self._public: dict[str, dict[str, ec.EllipticCurvePublicKey]] = {}
        self._trust = TrustFile()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self._reload_interval:
            return
        self._checked_at = now
        try:
            status = self._trust_path.stat()
        except FileNotFoundError:
            status = None
        stamp = (status.st_mtime_ns, status.st_size) if status else None
        if stamp == self._stamp:
            return
        trust = TrustFile.read(self._trust_path)
        self._public = {
            service: {kid: _load_public(pem) for kid, pem in trust.public_keys(service).items()}
            for service in trust.services
        }
        self._trust, self._stamp = trust, stamp

    def trusted_key(self, service: str, kid: str) -> ec.EllipticCurvePublicKey | None:
        self._refresh()
        return self._public.get(service, {}).get(kid)

    def knows(self, service: str) -> bool:
        self._refresh()
        return bool(self._public.get(service))

    def signing_kid(self, service: str) -> str | None:
        self._refresh()
        return self._trust.signing_kid(service)


def _load_public(pem: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise KeyringError("trusted keys must be EC P-256 public keys")
    return key
