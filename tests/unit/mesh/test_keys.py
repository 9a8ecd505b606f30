import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from mesh.keys import KeyringError, Keystore, TrustFile, decrypt_private_key, encrypt_private_key, key_id, load_kek
from mesh.settings import Settings

KEK = bytes(range(32))


def test_dev_kek_is_made_once_private_and_only_when_asked(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    with pytest.raises(KeyringError, match="meshctl keys init"):
        load_kek(settings)

    made = load_kek(settings, create=True)

    assert len(made) == 32
    assert stat.S_IMODE((tmp_path / "kek").stat().st_mode) == 0o600
    assert load_kek(settings) == made


def test_kek_from_environment_must_be_32_bytes(tmp_path: Path) -> None:
    good = base64.urlsafe_b64encode(KEK).decode().rstrip("=")
    assert load_kek(Settings(state_dir=tmp_path, kek=SecretStr(good))) == KEK
    with pytest.raises(KeyringError, match="32 bytes"):
        load_kek(Settings(state_dir=tmp_path, kek=SecretStr("c2hvcnQ")))


def test_kek_from_a_secret_file_is_read_without_its_trailing_newline(tmp_path: Path) -> None:
    secret = tmp_path / "mesh_kek"
    secret.write_text(base64.urlsafe_b64encode(KEK).decode().rstrip("=") + "\n")
    assert load_kek(Settings(state_dir=tmp_path / "state", kek_file=secret)) == KEK
    secret.write_text("c2hvcnQ")
    with pytest.raises(KeyringError, match="32 bytes"):
        load_kek(Settings(state_dir=tmp_path / "state", kek_file=secret))
    assert not (tmp_path / "state" / "kek").exists()


def test_private_keys_are_encrypted_and_bound_to_their_service_and_id() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    kid = key_id(key.public_key())

    sealed = encrypt_private_key(key, KEK, "auth_svc", kid)

    assert "PRIVATE KEY-----\n" in sealed and "BEGIN PRIVATE KEY" not in sealed
    assert decrypt_private_key(sealed, KEK, "auth_svc", kid).private_numbers() == key.private_numbers()
    with pytest.raises(KeyringError):
        decrypt_private_key(sealed, bytes(32), "auth_svc", kid)
    with pytest.raises(KeyringError):
        decrypt_private_key(sealed, KEK, "admin_svc", kid)


def test_keystore_adds_activates_and_retires(tmp_path: Path) -> None:
    keystore = Keystore(tmp_path, KEK)
    first = keystore.add("auth_svc")
    second = keystore.add("auth_svc")
    trust = TrustFile.read(keystore.trust_path)
    assert set(trust.public_keys("auth_svc")) == {first, second}
    assert trust.signing_kid("auth_svc") == first

    keystore.activate("auth_svc", second)
    with pytest.raises(KeyringError, match="signing key"):
        keystore.retire("auth_svc", second)
    keystore.retire("auth_svc", first)

    trust = TrustFile.read(keystore.trust_path)
    assert set(trust.public_keys("auth_svc")) == {second}
    assert keystore.signing_key("auth_svc")[0] == second
    assert not (tmp_path / "auth_svc" / f"{first}.pem").exists()
    assert stat.S_IMODE((tmp_path / "auth_svc" / f"{second}.pem").stat().st_mode) == 0o600
    with pytest.raises(KeyringError):
        keystore.activate("auth_svc", first)


def test_ensure_gives_keys_only_to_services_without_one(tmp_path: Path) -> None:
    keystore = Keystore(tmp_path, KEK)
    keystore.add("auth_svc")

    assert keystore.ensure(["auth_svc", "mail_svc"]) == ["mail_svc"]
    assert keystore.ensure(["auth_svc", "mail_svc"]) == []
